"""Paged-KV attention kernels (installed as `kvplan.kernels`).

`paged_decode` and `store_kv` run Triton on CUDA tensors, the Triton interpreter
when TRITON_INTERPRET=1, and the torch reference otherwise (see `kernel_backend`).
The choice is made per call, so importing this package before setting
TRITON_INTERPRET is harmless.
"""

from __future__ import annotations

from .dispatch import kernel_backend
from .reference import paged_decode_reference, paged_prefill_reference, store_kv_reference

__all__ = [
    "kernel_backend",
    "paged_decode",
    "paged_decode_reference",
    "paged_prefill_reference",
    "store_kv",
    "store_kv_reference",
]


def paged_decode(q, k_cache, v_cache, block_tables, seq_lens, scale, *, window=0, softcap=0.0, sinks=None,
                 num_splits=None):
    """Decode attention for one new token per sequence over a paged KV cache.

    q `[B, Hq, D]`; k_cache/v_cache `[num_blocks, block_size, Hkv, D]`; block_tables
    `[B, max_blocks]` int32, −1 padded; seq_lens `[B]` int32, counting the current
    token (already stored). `window > 0` keeps the last `window` positions;
    `softcap > 0` applies `softcap * tanh(logits / softcap)` after scaling; `sinks`
    `[Hq]` adds a per-head logit to the softmax denominator. `num_splits` (Triton
    only) overrides the split-KV count. Returns `[B, Hq, D]` in q's dtype.
    """
    if kernel_backend(q.device) == "torch":
        return paged_decode_reference(q, k_cache, v_cache, block_tables, seq_lens, scale,
                                      window=window, softcap=softcap, sinks=sinks)
    from .triton_decode import paged_decode_triton

    return paged_decode_triton(q, k_cache, v_cache, block_tables, seq_lens, scale,
                               window=window, softcap=softcap, sinks=sinks, num_splits=num_splits)


def store_kv(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Write key/value `[T, Hkv, D]` to slots `block * block_size + offset`; slot −1 is skipped."""
    if kernel_backend(key.device) == "torch":
        store_kv_reference(key, value, k_cache, v_cache, slot_mapping)
        return
    from .triton_store import store_kv_triton

    store_kv_triton(key, value, k_cache, v_cache, slot_mapping)
