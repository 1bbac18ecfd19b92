"""Triton scatter of new tokens' K/V into the paged cache through `slot_mapping`."""

from __future__ import annotations

import triton
import triton.language as tl

from .dispatch import lazy_jit
from .reference import check_cache


@lazy_jit
def _store_kv_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcb, stride_kcs, stride_kch, stride_vcb, stride_vcs, stride_vch,
    num_slots,
    KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HEADS_PAD: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    # One program per token, all heads at once: one [Hkv, D] tile per tensor.
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    offs_h = tl.arange(0, HEADS_PAD)
    offs_d = tl.arange(0, DIM_PAD)
    # slot -1 (padding) and out-of-range slots write nothing rather than out of bounds.
    mask = (slot >= 0) & (slot < num_slots) & (offs_h[:, None] < KV_HEADS) & (offs_d[None, :] < HEAD_DIM)

    key = tl.load(key_ptr + token * stride_kt + offs_h[:, None] * stride_kh + offs_d[None, :], mask=mask)
    tl.store(k_cache_ptr + block * stride_kcb + offset * stride_kcs + offs_h[:, None] * stride_kch + offs_d[None, :],
             key.to(k_cache_ptr.dtype.element_ty), mask=mask)
    value = tl.load(value_ptr + token * stride_vt + offs_h[:, None] * stride_vh + offs_d[None, :], mask=mask)
    tl.store(v_cache_ptr + block * stride_vcb + offset * stride_vcs + offs_h[:, None] * stride_vch + offs_d[None, :],
             value.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kv_triton(key, value, k_cache, v_cache, slot_mapping) -> None:
    check_cache(k_cache, v_cache)
    if key.shape != value.shape or key.shape[1:] != k_cache.shape[2:]:
        raise ValueError("key/value must be [T, Hkv, D]")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("caches must be contiguous in the head dim")
    tokens, kv_heads, head_dim = key.shape
    if tokens == 0:
        return
    key, value, slot_mapping = key.contiguous(), value.contiguous(), slot_mapping.contiguous()
    num_blocks, block_size = k_cache.shape[:2]
    _store_kv_kernel[(tokens,)](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        *k_cache.stride()[:3], *v_cache.stride()[:3],
        num_blocks * block_size,
        KV_HEADS=kv_heads, HEAD_DIM=head_dim, HEADS_PAD=triton.next_power_of_2(kv_heads),
        DIM_PAD=triton.next_power_of_2(head_dim), BLOCK_SIZE=block_size, num_warps=4,
    )

