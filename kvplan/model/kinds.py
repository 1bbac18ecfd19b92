"""Attention kinds: one class per kind of layer, each the single owner of what differs per kind.

The rest of kvplan asks a kind; it never tests which kind it has. `LayerGroup` itself answers
nothing (every question raises `UnsupportedModelError` naming the kind), so a kind added without its
answers fails closed instead of passing for full attention. What each kind answers (W: window,
C: chunk, T: tokens per prefill chunk, L: context or max_model_len, bs: block size, d: index_head_dim):

| question                            | full               | sliding (W)                 | chunked (C)                   | mla                            | indexed_mla (d)                       | state              |
|-------------------------------------|--------------------|-----------------------------|-------------------------------|--------------------------------|---------------------------------------|--------------------|
| `from_config(layers, fields)`       | kv heads, dim      | + sliding_window            | + attention_chunk_size        | kv_lora_rank, qk_rope_head_dim | + index_head_dim                      | family state shape |
| `bytes_per_token_per_layer(kv, tp)` | (K+V) x heads/rank | as full                     | as full                       | one latent, whole              | latent + d + 4 cdiv(d, 128) (fp8 key) | 0                  |
| `state_bytes_per_layer(kv, tp)`     | 0                  | 0                           | 0                             | 0                              | 0                                     | (conv + ssm) / tp  |
| `tp_split_kv_heads`                 | kv heads           | kv heads                    | kv heads                      | None (replicated)              | None (replicated)                     | None               |
| `tokens_held(L)`                    | L                  | min(L, W)                   | min(L, C)                     | L                              | L                                     | 0                  |
| `peak_blocks(L, bs, T)`             | cdiv(L, bs)        | span W - 1 + T              | own chunk (T: bound)          | cdiv(L, bs)                    | cdiv(L, bs)                           | 0                  |
| `unwindowed()`                      | itself             | full, same heads            | full, same heads              | itself                         | itself                                | -                  |
| `count_attention_params(counts)`    | q/k/v/o            | q/k/v/o                     | q/k/v/o                       | MLA projections                | - (introspection)                     | recurrent block    |
| `engines` (who models it)           | every one          | every one                   | generic, vllm, sglang, trtllm | generic, vllm, sglang, trtllm  | generic                               | generic            |
| `vllm_max_blocks(L, bs, T)`         | cdiv(L, bs)        | cdiv(min(W-1+T, L), bs) + 1 | cdiv(min(C+T, L), bs)         | cdiv(L, bs)                    | -                                     | -                  |
| `vllm_block_size(arch, bs)`         | bs                 | bs                          | bs                            | 64 Hopper, 128 Blackwell       | -                                     | -                  |
| `sglang_swa_pool()`                 | no                 | yes                         | no                            | no                             | -                                     | -                  |
| `sglang_logged_bytes(kv, tp)`       | k, v               | k, v                        | k, v                          | kv                             | -                                     | -                  |
| `transformers_layer_type()`         | full_attention     | sliding_attention           | -                             | -                              | -                                     | -                  |
| `runtime_window_tokens()`           | 0 (all)            | W                           | -                             | -                              | -                                     | -                  |
| `first_needed_position(p)`          | 0                  | max(0, p - W + 1)           | p // C x C                    | 0                              | 0                                     | -                  |
| `release_position(n)`               | None (never)       | n + W - 1                   | the next chunk start          | None (never)                   | None (never)                          | -                  |

"every one": generic, vllm, sglang, trtllm, transformers and kvplan's torch runtime. `-`: no
answer (the raising default); the engine is then left out of `engines`, so it refuses the model.
TensorRT-LLM sizes every KV layer by its bytes per token with no window (it asks nothing else).
Adding a kind: one class here answering every row (`-` stays the raising default and the engine
stays out of `engines`), listed in `KINDS`; normalize.py decides which layers of a config have it.
"""

from dataclasses import dataclass, replace
from fractions import Fraction
from typing import ClassVar

from ..dtypes import KVFormat
from ..errors import UnsupportedModelError

RUNTIME = "runtime"  # kvplan's own torch engine, named in `engines` beside the serving engines' policies
_ALL_ENGINES = frozenset({"generic", "vllm", "sglang", "trtllm", "transformers", RUNTIME})


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def ceil_bytes(x: Fraction) -> int:
    """Exact byte counts are kept as fractions (4-bit formats, scales) and rounded up once, here."""
    return -(-x.numerator // x.denominator)


@dataclass(frozen=True)
class LayerGroup:
    """Layers (by index) that share one attention kind and one KV shape. Abstract: answers nothing."""

    layers: tuple[int, ...]

    kind: ClassVar[str] = "abstract"  # short name: layouts, JSON, normalize's per-layer kinds
    label: ClassVar[str] = "an attention kind kvplan has no rules for"  # for people, in errors
    engines: ClassVar[frozenset[str]] = frozenset()  # policies (and the runtime) that model it

    @classmethod
    def from_config(cls, layers: tuple[int, ...], fields) -> "LayerGroup":
        """The group of `layers` from a normalized HF config (`fields`: normalize.py's `_KindFields`)."""
        raise UnsupportedModelError(f"attention kind {cls.kind!r} ({cls.__name__}) cannot be built from a config")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def restricted_to(self, layer_subset: set[int]) -> "LayerGroup | None":
        kept = tuple(i for i in self.layers if i in layer_subset)
        return replace(self, layers=kept) if kept else None

    def shape(self) -> "LayerGroup":
        """The kind and its sizes without layer indices: layers of equal shape share one engine spec."""
        return replace(self, layers=())

    def describe(self) -> str:
        return self.kind

    def _unanswered(self, question: str):
        return UnsupportedModelError(f"attention kind {self.kind!r} ({type(self).__name__}) has no rule for "
                                     f"{question}; kvplan cannot size it")

    # --- what every consumer asks ---

    @property
    def holds_kv(self) -> bool:
        raise self._unanswered("whether it holds per-token KV")

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        raise self._unanswered("KV bytes per token")

    def state_bytes_per_layer(self, kv: KVFormat, tp: int = 1) -> int:
        raise self._unanswered("per-request state bytes")
    # ---- paging: which positions a query reads (kvplan.paging frees and prefix-matches by these) ----

    def first_needed_position(self, position: int) -> int:
        """First position that a query at `position`, or at any later position, attends to."""
        raise self._unanswered("the first position a query reads")

    def release_position(self, tokens: int) -> int | None:
        """First query position from which positions [0, tokens) are never attended again; None: never."""
        raise self._unanswered("when its oldest positions are released")


    @property
    def tp_split_kv_heads(self) -> int | None:
        """KV heads tensor parallelism splits across ranks (None: nothing is split by head)."""
        raise self._unanswered("how tensor parallelism splits it")

    def tokens_held(self, context_tokens: int) -> int:
        raise self._unanswered("tokens held")

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        """The most blocks a paged allocator that frees out-of-window blocks holds for one request at any
        point of its life up to `context_tokens`, prompts computed in chunks of up to `chunk_tokens`."""
        raise self._unanswered("peak blocks")

    def unwindowed(self) -> "LayerGroup":
        """The same layers with every token kept (engines that size windowed layers as full attention)."""
        raise self._unanswered("its full-attention equivalent")

    def count_attention_params(self, counts) -> None:
        """Adds this layer's attention block to a parameter count (`model/params.py`'s `_AttentionBlocks`)."""
        counts.unknown(self)

    # --- what serving engines reserve for it (asked by kvplan/plan/policies, only for kinds in `engines`) ---

    def vllm_max_blocks(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        """Blocks vLLM reserves per request in the worst case (its spec's `max_memory_usage_bytes` / page)."""
        raise self._unanswered("vLLM's worst case per request")

    def vllm_block_size(self, gpu_arch: str | None, block_size: int) -> int:
        """The block size vLLM's attention backend for this kind uses on `gpu_arch` ("hopper", "blackwell")."""
        raise self._unanswered("vLLM's block size")

    @property
    def vllm_chunked_local(self) -> bool:
        """vLLM's ChunkedLocalAttention: FULL CUDA graphs unsupported, and releases 0.10.1-0.11 turn the hybrid
        KV cache manager off for a model with such layers."""
        return False

    def vllm_rotary_dim(self, head_dim: int) -> int:
        """Dims vLLM's rotary cos/sin cache covers for this kind (attention heads of `head_dim`)."""
        return head_dim

    def sglang_swa_pool(self) -> bool:
        """Whether SGLang keeps these layers in its sliding-window (SWA) token pool."""
        raise self._unanswered("SGLang's pool")

    def sglang_logged_bytes(self, kv: KVFormat, tp: int) -> dict[str, Fraction]:
        """Bytes per token per layer under the names SGLang logs them ("k", "v" or one "kv")."""
        raise self._unanswered("SGLang's logged pool sizes")

    def transformers_layer_type(self) -> str:
        """transformers' `layer_types` entry: its continuous-batching cache has one allocator per type."""
        raise self._unanswered("transformers' layer type")

    def runtime_window_tokens(self) -> int:
        """Tokens a query of kvplan's torch runtime attends to (0: all)."""
        raise self._unanswered("the torch runtime's attention window")


@dataclass(frozen=True)
class _KVHeads(LayerGroup):
    """Shared by kinds that cache a K and a V vector per KV head (not a kind itself)."""

    num_kv_heads: int = 1
    k_head_dim: int = 128
    v_head_dim: int = 128

    @property
    def holds_kv(self) -> bool:
        return True

    @property
    def tp_split_kv_heads(self) -> int:
        return self.num_kv_heads

    def kv_heads_per_rank(self, tp: int) -> int:
        # Heads split over tp; when tp exceeds the head count each rank still holds one (replicated).
        return max(1, self.num_kv_heads // tp)

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        k, v = self._k_v_bytes(kv, tp)
        return k + v

    def _k_v_bytes(self, kv: KVFormat, tp: int) -> tuple[Fraction, Fraction]:
        heads = self.kv_heads_per_rank(tp)
        return heads * kv.vector_bytes(self.k_head_dim), heads * kv.vector_bytes(self.v_head_dim)

    def state_bytes_per_layer(self, kv: KVFormat, tp: int = 1) -> int:
        return 0

    def unwindowed(self) -> "FullAttention":
        return FullAttention(self.layers, self.num_kv_heads, self.k_head_dim, self.v_head_dim)

    def count_attention_params(self, counts) -> None:
        counts.qkvo()

    def vllm_block_size(self, gpu_arch: str | None, block_size: int) -> int:
        return block_size

    def sglang_logged_bytes(self, kv: KVFormat, tp: int) -> dict[str, Fraction]:
        k, v = self._k_v_bytes(kv, tp)
        return {"k": k, "v": v}

    def describe(self) -> str:
        dims = f"{self.k_head_dim}" if self.k_head_dim == self.v_head_dim else f"{self.k_head_dim}/{self.v_head_dim}"
        return f"{self.kind}, {self.num_kv_heads} KV heads x {dims}"


@dataclass(frozen=True)
class FullAttention(_KVHeads):
    """MHA / GQA / MQA: K and V vectors per KV head, every token kept."""

    kind = "full"
    label = "full attention"
    engines = _ALL_ENGINES

    @classmethod
    def from_config(cls, layers: tuple[int, ...], fields) -> "FullAttention":
        return cls(layers, fields.kv_heads, fields.head_dim, fields.head_dim)

    def tokens_held(self, context_tokens: int) -> int:
        return context_tokens

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return cdiv(context_tokens, block_size)

    def unwindowed(self) -> "FullAttention":
        return self

    def vllm_max_blocks(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        return cdiv(max_model_len, block_size)  # FullAttentionSpec

    def sglang_swa_pool(self) -> bool:
        return False

    def transformers_layer_type(self) -> str:
        return "full_attention"

    def runtime_window_tokens(self) -> int:
        return 0

    # ---- paging ----

    def first_needed_position(self, position: int) -> int:
        return 0

    def release_position(self, tokens: int) -> int | None:
        return 0 if tokens <= 0 else None  # every later query reads every token


@dataclass(frozen=True)
class SlidingWindow(_KVHeads):
    """Attention over the last `window_tokens` tokens; older blocks are freed."""

    window_tokens: int = 4096

    kind = "sliding"
    label = "sliding-window attention"
    engines = _ALL_ENGINES

    @classmethod
    def from_config(cls, layers: tuple[int, ...], fields) -> "SlidingWindow":
        return cls(layers, fields.kv_heads, fields.head_dim, fields.head_dim, fields.positive_int("sliding_window"))

    def tokens_held(self, context_tokens: int) -> int:
        return min(context_tokens, self.window_tokens)

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        # Every query of a prefill chunk reads its own window: a chunk keeps up to W - 1 + T positions.
        return _span_peak_blocks(context_tokens, block_size, self.window_tokens + max(chunk_tokens, 1) - 1)

    def vllm_max_blocks(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        # SlidingWindowSpec: W - 1 computed tokens plus a step's new ones, and one block more because
        # the window need not start at a block boundary.
        return cdiv(min(self.window_tokens - 1 + max_num_batched_tokens, max_model_len), block_size) + 1

    def sglang_swa_pool(self) -> bool:
        return True

    def transformers_layer_type(self) -> str:
        return "sliding_attention"

    def runtime_window_tokens(self) -> int:
        return self.window_tokens

    def describe(self) -> str:
        return f"{super().describe()}, window {self.window_tokens}"

    # ---- paging ----

    def first_needed_position(self, position: int) -> int:
        return max(0, position - self.window_tokens + 1)

    def release_position(self, tokens: int) -> int | None:
        return tokens + self.window_tokens - 1 if tokens > 0 else 0


@dataclass(frozen=True)
class ChunkedLocal(_KVHeads):
    """Llama-4 style local attention inside fixed chunks of `window_tokens` (the chunk size)."""

    window_tokens: int = 8192

    kind = "chunked"
    label = "chunked local attention"
    engines = _ALL_ENGINES - {"transformers", RUNTIME}

    @classmethod
    def from_config(cls, layers: tuple[int, ...], fields) -> "ChunkedLocal":
        return cls(layers, fields.kv_heads, fields.head_dim, fields.head_dim, fields.positive_int("attention_chunk_size"))

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

    @property
    def vllm_chunked_local(self) -> bool:
        return True

    def vllm_max_blocks(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        # vLLM's ChunkedLocalAttentionSpec.max_memory_usage_bytes (vllm-project/vllm,
        # vllm/v1/kv_cache_interface.py): cdiv(min(attention_chunk_size + max_num_batched_tokens,
        # max_model_len), block_size) pages -- C + T, with neither the "- 1" nor the "+ 1" of sliding windows.
        return cdiv(min(self.window_tokens + max_num_batched_tokens, max_model_len), block_size)

    def sglang_swa_pool(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{super().describe()}, chunk {self.window_tokens}"

    # ---- paging ----

    def first_needed_position(self, position: int) -> int:
        return position // self.window_tokens * self.window_tokens

    def release_position(self, tokens: int) -> int | None:
        return cdiv(tokens, self.window_tokens) * self.window_tokens


@dataclass(frozen=True)
class MLALatent(LayerGroup):
    """Multi-head latent attention: one compressed latent per token, no separate V, not split by tp."""

    kv_lora_rank: int = 512
    qk_rope_head_dim: int = 64

    kind = "mla"
    label = "multi-head latent attention (MLA)"
    engines = _ALL_ENGINES - {"transformers", RUNTIME}

    # vLLM's MLA backends force their own block size: FlashMLA on Hopper, CUTLASS MLA on Blackwell.
    VLLM_BLOCK_SIZES: ClassVar[dict[str, int]] = {"hopper": 64, "blackwell": 128}

    @classmethod
    def from_config(cls, layers: tuple[int, ...], fields) -> "MLALatent":
        return cls(layers, fields.positive_int("kv_lora_rank"), fields.positive_int("qk_rope_head_dim"))

    @property
    def latent_dim(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def holds_kv(self) -> bool:
        return True

    @property
    def tp_split_kv_heads(self) -> None:
        return None  # every rank holds the whole latent

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        return kv.vector_bytes(self.latent_dim)

    def state_bytes_per_layer(self, kv: KVFormat, tp: int = 1) -> int:
        return 0

    def tokens_held(self, context_tokens: int) -> int:
        return context_tokens

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return cdiv(context_tokens, block_size)

    def unwindowed(self) -> "MLALatent":
        return self

    def count_attention_params(self, counts) -> None:
        counts.mla()

    def vllm_max_blocks(self, max_model_len: int, block_size: int, max_num_batched_tokens: int) -> int:
        return cdiv(max_model_len, block_size)  # MLAAttentionSpec is a FullAttentionSpec

    def vllm_rotary_dim(self, head_dim: int) -> int:
        return self.qk_rope_head_dim  # only the decoupled rope part of the latent is rotated

    def vllm_block_size(self, gpu_arch: str | None, block_size: int) -> int:
        return self.VLLM_BLOCK_SIZES.get(gpu_arch, block_size)

    def sglang_swa_pool(self) -> bool:
        return False

    def sglang_logged_bytes(self, kv: KVFormat, tp: int) -> dict[str, Fraction]:
        return {"kv": self.bytes_per_token_per_layer(kv, tp)}

    def describe(self) -> str:
        return f"mla, latent {self.kv_lora_rank}+{self.qk_rope_head_dim}={self.latent_dim}"

    # ---- paging ----

    def first_needed_position(self, position: int) -> int:
        return 0

    def release_position(self, tokens: int) -> int | None:
        return 0 if tokens <= 0 else None  # every later query reads every token


@dataclass(frozen=True)
class IndexedMLA(MLALatent):
    """MLA plus a sparse-attention indexer key per token (DeepSeek V3.2 DSA, GLM MoE DSA).

    Engines keep the indexer key in fp8 with one fp32 scale per 128 values whatever the KV dtype
    (vLLM, LightLLM), so its bytes do not follow `kv`. Only the generic policy sizes it: vLLM stores
    an fp8 latent of this kind in its own 656-byte layout (fp8_ds_mla) on sparse-MLA block sizes,
    and no serving engine's rules for it are modelled, so MLA's engine answers must not pass for it."""

    index_head_dim: int = 128

    kind = "indexed_mla"
    label = "MLA with a sparse-attention indexer (DSA)"
    engines = frozenset({"generic"})

    @classmethod
    def from_config(cls, layers: tuple[int, ...], fields) -> "IndexedMLA":
        return cls(layers, fields.positive_int("kv_lora_rank"), fields.positive_int("qk_rope_head_dim"),
                   fields.positive_int("index_head_dim"))

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        return super().bytes_per_token_per_layer(kv, tp) + self.index_head_dim + 4 * cdiv(self.index_head_dim, 128)

    def count_attention_params(self, counts) -> None:
        counts.unknown(self)  # the indexer's projections have no light-path count; introspection counts them

    # No serving engine's rules: the raising defaults, not MLA's answers.
    vllm_max_blocks = LayerGroup.vllm_max_blocks
    vllm_block_size = LayerGroup.vllm_block_size
    sglang_swa_pool = LayerGroup.sglang_swa_pool
    sglang_logged_bytes = LayerGroup.sglang_logged_bytes

    def describe(self) -> str:
        return f"{super().describe()} + indexer key {self.index_head_dim} (fp8)"


@dataclass(frozen=True)
class RecurrentState(LayerGroup):
    """Mamba / linear attention / DeltaNet: no per-token KV, a constant state per request.

    `conv_elems` and `ssm_elems` are the per-layer state sizes of the whole model, both split over
    tp ranks; the conv part keeps kernel-1 columns as serving engines do.
    """

    conv_elems: int = 0
    ssm_elems: int = 0

    kind = "state"
    label = "linear-attention / recurrent state"
    engines = frozenset({"generic"})

    @classmethod
    def from_config(cls, layers: tuple[int, ...], fields) -> "RecurrentState":
        conv_elems, ssm_elems = fields.recurrent_state_elems()  # the family's shapes (normalize.py)
        return cls(layers, conv_elems, ssm_elems)

    @property
    def holds_kv(self) -> bool:
        return False

    @property
    def tp_split_kv_heads(self) -> None:
        return None  # the state splits by element, with no head count to divide

    def bytes_per_token_per_layer(self, kv: KVFormat, tp: int = 1) -> Fraction:
        return Fraction(0)

    def state_bytes_per_layer(self, kv: KVFormat, tp: int = 1) -> int:
        return kv.state_bytes((self.conv_elems + self.ssm_elems) // max(1, tp))

    def tokens_held(self, context_tokens: int) -> int:
        return 0

    def peak_blocks(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return 0

    def count_attention_params(self, counts) -> None:
        counts.recurrent()

    def describe(self) -> str:
        return f"state, {self.conv_elems + self.ssm_elems:,} elems/layer"


# Every kind, in the order a model's groups are listed (normalize builds them in this order).
KINDS: dict[str, type[LayerGroup]] = {k.kind: k for k in (FullAttention, SlidingWindow, ChunkedLocal, MLALatent,
                                                          IndexedMLA, RecurrentState)}


def _span_peak_blocks(context_tokens: int, block_size: int, span_tokens: int) -> int:
    """Most blocks held over a request's life when only the last `span_tokens` positions are kept.

    At length l >= S the span covers [l-S, l): floor((l-1)/bs) - floor((l-S)/bs) + 1 blocks. With
    a = l - S that is floor((a mod bs + S - 1)/bs) + 1, largest when a mod bs is as large as the
    request's length allows."""
    if context_tokens <= span_tokens:
        return cdiv(context_tokens, block_size)
    offset = min(context_tokens - span_tokens, block_size - 1)
    return (offset + span_tokens - 1) // block_size + 1
