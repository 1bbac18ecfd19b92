"""ModelSpec: a model, normalized, as layer groups of the attention kinds in `kinds.py`."""

from dataclasses import dataclass, field
from fractions import Fraction

from ..dtypes import KVFormat
from .kinds import LayerGroup, ceil_bytes


@dataclass(frozen=True)
class ParamCount:
    """Parameters by the storage class they land in when a checkpoint is quantized."""

    linear: int  # dense matmul weights: attention and MLP projections (quantized by AWQ/GPTQ/fp8/...)
    experts: int  # routed-expert matmul weights (MoE); gpt-oss ships only these in MXFP4
    embedding: int  # input embedding
    lm_head: int  # 0 when tied to the embedding
    other: int  # norms, biases, router biases, sinks, conv kernels: stay 16-bit
    active: int | None = None  # per token, for MoE (all experts' weights count in `total`)
    multimodal: int = 0  # vision / audio towers and projectors: reported apart, not in `total`

    @property
    def total(self) -> int:
        return self.linear + self.experts + self.embedding + self.lm_head + self.other


@dataclass(frozen=True)
class ModelSpec:
    """A model, normalized. Frozen, built once, no I/O after construction."""

    name: str
    model_type: str
    groups: tuple[LayerGroup, ...]
    num_layers: int
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    head_dim: int | None = None  # query head dim (for activation sizing)
    mlp_width_per_token: int | None = None  # intermediate width one token passes (MoE: top_k experts + shared)
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    params: ParamCount | None = None
    weight_dtype: str = "bf16"  # checkpoint storage (bf16/fp16/fp32, a quantized format, or "unknown:<method>")
    compute_dtype: str = "bf16"  # the config's torch_dtype: activations and unquantized layers
    quantized_scope: str = "linear"  # which matmuls a quantized checkpoint stores low-bit: linear | experts
    tie_word_embeddings: bool = False
    num_experts: int = 0
    source: str = ""  # where it came from: bundled:<file>, config:<path>, cache:<id>, raw
    derivation: str = "light normalizer"  # which path read the config (docs/models.md)
    hf_id: str | None = None
    params_official: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    # --- per-token / per-request arithmetic (whole model, tp=1 unless given) ---

    def kv_groups(self) -> tuple[LayerGroup, ...]:
        return tuple(g for g in self.groups if g.holds_kv)

    def bytes_per_token(self, kv: KVFormat, tp: int = 1) -> Fraction:
        """KV bytes per token over every layer, before any window cap."""
        return sum((g.bytes_per_token_per_layer(kv, tp) * g.num_layers for g in self.groups), Fraction(0))

    def state_bytes(self, kv: KVFormat, tp: int = 1) -> int:
        return sum(g.state_bytes_per_layer(kv, tp) * g.num_layers for g in self.groups)

    def bytes_per_request(self, context_tokens: int, kv: KVFormat, tp: int = 1, block_size: int | None = None,
                          chunk_tokens: int = 1) -> int:
        """KV (and state) bytes one request of `context_tokens` holds at its peak.

        Without `block_size` tokens are counted exactly (`tokens_held`); with it each group holds
        whole blocks, freeing those that fell out of its window, with prompts computed in chunks
        of up to `chunk_tokens`.
        """
        total = Fraction(0)
        factors = (self.block_factors(kv, tp) if block_size else None) or {}
        for g in self.groups:
            if block_size:
                size = block_size * factors.get(g, 1)
                tokens = g.peak_blocks(context_tokens, size, chunk_tokens) * size
            else:
                tokens = g.tokens_held(context_tokens)
            total += g.bytes_per_token_per_layer(kv, tp) * g.num_layers * tokens
        return ceil_bytes(total) + self.state_bytes(kv, tp)

    def block_factors(self, kv: KVFormat, tp: int = 1) -> dict[LayerGroup, int]:
        """Per KV group, how many block_size-token spans one of its blocks holds when kinds of different
        KV sizes share one pool (vLLM's page-size unification: a kind of 1/r the largest per-token size
        takes r x block_size tokens per block). None when a size does not divide the largest."""
        sizes = {g: g.bytes_per_token_per_layer(kv, tp) for g in self.kv_groups()}
        largest = max(sizes.values(), default=0)
        if any(largest % s for s in sizes.values()):
            return None
        return {g: int(largest / s) for g, s in sizes.items()}

    def restricted_to(self, layer_subset: set[int]) -> "ModelSpec":
        """The same model holding only some layers (a pipeline stage)."""
        from dataclasses import replace

        groups = tuple(g2 for g in self.groups if (g2 := g.restricted_to(layer_subset)) is not None)
        # a layer may hold two kinds at once (Falcon-H1: attention and Mamba in parallel): count indices
        return replace(self, groups=groups, num_layers=len(layer_subset & set(range(self.num_layers))))

    def layout(self) -> str:
        return "; ".join(f"{g.num_layers}x {g.describe()}" for g in self.groups)
