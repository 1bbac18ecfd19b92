"""Attention kinds: one class per kind of layer, each owning what differs per kind.

Each kind answers three questions, and everything else in kvplan is arithmetic over groups:
  - `bytes_per_token_per_layer(kv, tp)`: KV bytes one token adds to one layer on one rank;
  - `tokens_held(context_tokens)`: tokens a layer keeps for a request of that length;
  - `peak_blocks(context_tokens, block_size, chunk_tokens)`: the most blocks a paged allocator that
    frees out-of-window blocks holds for the request at any point of its life up to that length,
    when prompts are computed in chunks of up to `chunk_tokens` (every query of a chunk reads its
    own window, so a chunk keeps up to W - 1 + chunk tokens of a sliding layer).
Adding an attention kind is adding one class here.
"""

from dataclasses import dataclass
from fractions import Fraction

from ..dtypes import KVFormat


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def ceil_bytes(x: Fraction) -> int:
    """Exact byte counts are kept as fractions (4-bit formats, scales) and rounded up once, here."""
    return -(-x.numerator // x.denominator)


@dataclass(frozen=True)
class LayerGroup:
    """Layers (by index) that share one attention kind and one KV shape."""

    layers: tuple[int, ...]

    kind = "abstract"

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        return Fraction(0)

    def tokens_held(self, context_tokens: int) -> int:
        return context_tokens

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return cdiv(context_tokens, block_size)

    def state_bytes_per_layer(self, kv: KVFormat, tp: int = 1) -> int:
        """Constant per-request bytes per layer (recurrent state); 0 for attention kinds."""
        return 0

    def describe(self) -> str:
        return self.kind

    @property
    def holds_kv(self) -> bool:
        return True

    def restricted_to(self, layer_subset: set[int]) -> "LayerGroup | None":
        kept = tuple(i for i in self.layers if i in layer_subset)
        if not kept:
            return None
        return _replace_layers(self, kept)


def _replace_layers(group: LayerGroup, layers: tuple[int, ...]) -> LayerGroup:
    from dataclasses import replace

    return replace(group, layers=layers)


@dataclass(frozen=True)
class FullAttention(LayerGroup):
    """MHA / GQA / MQA: K and V vectors per KV head, every token kept."""

    num_kv_heads: int = 1
    k_head_dim: int = 128
    v_head_dim: int = 128

    kind = "full"

    def kv_heads_per_rank(self, tp: int) -> int:
        # Heads split over tp; when tp exceeds the head count each rank still holds one (replicated).
        return max(1, self.num_kv_heads // tp)

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        return self.kv_heads_per_rank(tp) * (kv.vector_bytes(self.k_head_dim) + kv.vector_bytes(self.v_head_dim))

    def describe(self) -> str:
        dims = f"{self.k_head_dim}" if self.k_head_dim == self.v_head_dim else f"{self.k_head_dim}/{self.v_head_dim}"
        return f"{self.kind}, {self.num_kv_heads} KV heads x {dims}"


@dataclass(frozen=True)
class SlidingWindow(FullAttention):
    """Attention over the last `window_tokens` tokens; older blocks are freed."""

    window_tokens: int = 4096

    kind = "sliding"

    def tokens_held(self, context_tokens: int) -> int:
        return min(context_tokens, self.window_tokens)

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return _span_peak_blocks(context_tokens, block_size, self.window_tokens + max(chunk_tokens, 1) - 1)

    def describe(self) -> str:
        return f"{super().describe()}, window {self.window_tokens}"


@dataclass(frozen=True)
class ChunkedLocal(FullAttention):
    """Llama-4 style local attention inside fixed chunks of `window_tokens` (the chunk size)."""

    window_tokens: int = 8192

    kind = "chunked"

    def tokens_held(self, context_tokens: int) -> int:
        return min(context_tokens, self.window_tokens)

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        chunk = self.window_tokens
        if context_tokens <= chunk:
            return cdiv(context_tokens, block_size)
        if chunk_tokens > 1:  # a prefill chunk reaches back to its local chunk's start: a bound, not exact
            return min(cdiv(context_tokens, block_size), _span_peak_blocks(context_tokens, block_size, chunk + chunk_tokens - 1))
        # A full chunk [s, s+C) spans floor((s+C-1)/bs) - floor(s/bs) + 1 blocks; s mod bs repeats
        # with period bs, so looking at the first bs chunks (and the last partial one) suffices.
        num_full_chunks = context_tokens // chunk
        best = 0
        for k in range(min(num_full_chunks, block_size)):
            start = k * chunk
            best = max(best, (start + chunk - 1) // block_size - start // block_size + 1)
        start = num_full_chunks * chunk
        if start < context_tokens:
            best = max(best, (context_tokens - 1) // block_size - start // block_size + 1)
        return best

    def describe(self) -> str:
        return f"{super().describe()}, chunk {self.window_tokens}"


@dataclass(frozen=True)
class MLALatent(LayerGroup):
    """Multi-head latent attention: one compressed latent per token, no separate V, not split by tp."""

    kv_lora_rank: int = 512
    qk_rope_head_dim: int = 64

    kind = "mla"

    @property
    def latent_dim(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        return kv.vector_bytes(self.latent_dim)

    def describe(self) -> str:
        return f"mla, latent {self.kv_lora_rank}+{self.qk_rope_head_dim}={self.latent_dim}"


@dataclass(frozen=True)
class IndexedMLA(MLALatent):
    """MLA plus a sparse-attention indexer key per token (DeepSeek V3.2 DSA, GLM MoE DSA).

    Engines keep the indexer key in fp8 with one fp32 scale per 128 values whatever the KV dtype
    (vLLM, LightLLM), so its bytes do not follow `kv`."""

    index_head_dim: int = 128

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        return super().bytes_per_token_per_layer(kv, tp) + self.index_head_dim + 4 * cdiv(self.index_head_dim, 128)

    def describe(self) -> str:
        return f"{super().describe()} + indexer key {self.index_head_dim} (fp8)"


@dataclass(frozen=True)
class RecurrentState(LayerGroup):
    """Mamba / linear attention / DeltaNet: no per-token KV, a constant state per request.

    `conv_elems` and `ssm_elems` are the per-layer state sizes of the whole model; the conv part
    keeps kernel-1 columns as serving engines do. `heads_split` says whether tp splits the state.
    """

    conv_elems: int = 0
    ssm_elems: int = 0

    kind = "state"

    @property
    def holds_kv(self) -> bool:
        return False

    def tokens_held(self, context_tokens: int) -> int:
        return 0

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return 0

    def state_bytes_per_layer(self, kv: KVFormat, tp: int = 1) -> int:
        return kv.state_bytes((self.conv_elems + self.ssm_elems) // max(1, tp))

    def describe(self) -> str:
        return f"state, {self.conv_elems + self.ssm_elems:,} elems/layer"


def _span_peak_blocks(context_tokens: int, block_size: int, span_tokens: int) -> int:
    """Most blocks held over a request's life when only the last `span_tokens` positions are kept.

    At length l >= S the span covers [l-S, l): floor((l-1)/bs) - floor((l-S)/bs) + 1 blocks. With
    a = l - S that is floor((a mod bs + S - 1)/bs) + 1, largest when a mod bs is as large as the
    request's length allows."""
    if context_tokens <= span_tokens:
        return cdiv(context_tokens, block_size)
    offset = min(context_tokens - span_tokens, block_size - 1)
    return (offset + span_tokens - 1) // block_size + 1
