"""Split-KV paged decode attention in Triton (one new query token per sequence).

Stage 1, grid (B, Hkv, S): a program owns one KV head together with its whole GQA
group of query heads, so each K/V tile is read from memory once per group, and one
contiguous slice ("split") of the visible context. It runs an fp32 online softmax
and writes the split's normalised output and log-sum-exp. Stage 2, grid (B, Hq),
merges the splits (and the optional sink logit) by log-sum-exp. Splitting the
context keeps the GPU busy when B * Hkv alone is too few programs.

Softmax runs in base 2 (exp2 is the hardware instruction); the LSE in the
partials is therefore log2-sum-exp2 of logits * log2(e).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import kernel_backend, lazy_jit
from .reference import check_decode_inputs

TILE_N = 64  # keys per inner-loop step, independent of the cache's block size
# NUM_SPLITS is a compile-time constant: the heuristic only returns these values, so a run
# compiles at most five variants, which the engine compiles before it starts timing.
SPLIT_BUCKETS = (1, 2, 4, 8, 16)
MAX_SPLITS = SPLIT_BUCKETS[-1]


# The block-table width (stride_bt) grows with the longest sequence of the step, and the window
# differs per layer: neither may pick a new compiled variant in the middle of a run.
@lazy_jit(do_not_specialize=["stride_bt", "window"])
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, block_tables_ptr, seq_lens_ptr, part_out_ptr, part_lse_ptr,
    stride_qb, stride_qh, stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
    stride_bt, stride_lse_b, stride_lse_h,
    num_blocks, scale, softcap, window,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, NUM_SPLITS: tl.constexpr,
    USE_SOFTCAP: tl.constexpr, DOT_DTYPE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)

    # Visible context [kv_start, seq_len), cut into NUM_SPLITS tile-aligned slices.
    seq_len = tl.load(seq_lens_ptr + b)
    kv_start = tl.where(window > 0, tl.maximum(seq_len - window, 0), 0)
    split_len = tl.cdiv(tl.cdiv(seq_len - kv_start, NUM_SPLITS), TILE) * TILE
    lo = kv_start + split * split_len
    hi = tl.minimum(lo + split_len, seq_len)

    offs_g = tl.arange(0, GROUP_PAD)
    offs_d = tl.arange(0, DIM_PAD)
    q_heads = kv_head * GROUP + offs_g
    head_ok = offs_g < GROUP
    dim_ok = offs_d < HEAD_DIM
    q = tl.load(q_ptr + b * stride_qb + q_heads[:, None] * stride_qh + offs_d[None, :],
                mask=head_ok[:, None] & dim_ok[None, :], other=0.0).to(DOT_DTYPE)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, DIM_PAD], tl.float32)
    for start in range(lo, hi, TILE):
        offs_n = start + tl.arange(0, TILE)
        in_split = offs_n < hi
        block = tl.load(block_tables_ptr + b * stride_bt + offs_n // BLOCK_SIZE, mask=in_split, other=-1).to(tl.int64)
        # Ids outside [0, num_blocks) (−1: e.g. freed behind a window) are absent positions;
        # they must never become an out-of-bounds read (segfault / illegal address).
        key_ok = in_split & (block >= 0) & (block < num_blocks)
        offset = (offs_n % BLOCK_SIZE).to(tl.int64)
        kv_mask = key_ok[:, None] & dim_ok[None, :]

        k = tl.load(k_ptr + block[:, None] * stride_kb + offset[:, None] * stride_ks + kv_head * stride_kh
                    + offs_d[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision="ieee") * scale
        if USE_SOFTCAP:
            # tanh(x) = 1 - 2 / (exp(2x) + 1): saturates cleanly to +-1 when exp overflows.
            s = softcap * (1.0 - 2.0 / (tl.exp(2.0 * s / softcap) + 1.0))
        s = tl.where(key_ok[None, :], s * 1.4426950408889634, float("-inf"))  # to base 2

        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A tile of only absent blocks leaves m_new = -inf; avoid -inf - -inf = NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + block[:, None] * stride_vb + offset[:, None] * stride_vs + kv_head * stride_vh
                    + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), input_precision="ieee")
        m_i = m_new

    # An empty split (l_i == 0) stores output 0 and LSE -inf, which stage 2 weighs as 0.
    has_keys = l_i > 0
    l_safe = tl.where(has_keys, l_i, 1.0)
    lse = tl.where(has_keys, m_i + tl.log2(l_safe), float("-inf"))
    row = b * stride_lse_b + q_heads * stride_lse_h + split
    tl.store(part_lse_ptr + row, lse, mask=head_ok)
    # part_out is part_lse's layout with a trailing HEAD_DIM axis.
    tl.store(part_out_ptr + row[:, None] * HEAD_DIM + offs_d[None, :], acc / l_safe[:, None],
             mask=head_ok[:, None] & dim_ok[None, :])


@lazy_jit
def _merge_splits_kernel(
    part_out_ptr, part_lse_ptr, sinks_ptr, out_ptr,
    stride_lse_b, stride_lse_h, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, DIM_PAD: tl.constexpr, NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr,
    HAS_SINKS: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, DIM_PAD)
    split_ok = offs_s < NUM_SPLITS
    dim_ok = offs_d < HEAD_DIM

    row = b * stride_lse_b + head * stride_lse_h + offs_s
    lse = tl.load(part_lse_ptr + row, mask=split_ok, other=float("-inf"))
    if HAS_SINKS:
        sink = tl.load(sinks_ptr + head).to(tl.float32) * 1.4426950408889634
    else:
        sink = float("-inf")
    m = tl.maximum(tl.max(lse, 0), sink)
    m = tl.where(m == float("-inf"), 0.0, m)  # seq_len 0 and no sink: output 0, not NaN
    weight = tl.exp2(lse - m)
    denom = tl.sum(weight, 0) + tl.exp2(sink - m)

    part = tl.load(part_out_ptr + row[:, None] * HEAD_DIM + offs_d[None, :],
                   mask=split_ok[:, None] & dim_ok[None, :], other=0.0)
    out = tl.sum(part * weight[:, None], 0) / tl.where(denom > 0, denom, 1.0)
    tl.store(out_ptr + b * stride_ob + head * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty), mask=dim_ok)


def choose_num_splits(batch: int, kv_heads: int, max_context: int, device: torch.device) -> int:
    """Splits per sequence so that B * Hkv * S programs fill about 2x the SMs, rounded down to
    one of SPLIT_BUCKETS.

    `max_context` must be host-known (block-table width * block size), so the
    choice needs no device sync and stays fixed under CUDA graphs.
    """
    if device.type == "cuda":
        target = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 8  # interpreter: every program is slow to simulate
    splits = min(MAX_SPLITS, triton.cdiv(target, max(1, batch * kv_heads)))
    # A split of fewer than ~4 tiles costs more in launch and merge than it saves.
    splits = max(1, min(splits, triton.cdiv(max_context, 4 * TILE_N)))
    return 1 << (splits.bit_length() - 1)


def _dot_dtype(cache_dtype: torch.dtype, interpret: bool):
    # 16-bit caches feed tensor cores directly; the interpreter computes bf16 on raw
    # bit patterns, so there bf16 is upcast to fp32 right after loading.
    if cache_dtype == torch.float16:
        return tl.float16
    if cache_dtype == torch.bfloat16 and not interpret:
        return tl.bfloat16
    return tl.float32


def paged_decode_triton(q, k_cache, v_cache, block_tables, seq_lens, scale, *, window=0, softcap=0.0,
                        sinks=None, num_splits=None):
    check_decode_inputs(q, k_cache, v_cache, block_tables, seq_lens, sinks)
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("caches must be contiguous in the head dim")
    batch, q_heads, head_dim = q.shape
    num_blocks, block_size, kv_heads, _ = k_cache.shape
    group = q_heads // kv_heads
    interpret = kernel_backend(q.device) == "triton-interpret"
    if num_splits is None:
        num_splits = choose_num_splits(batch, kv_heads, block_tables.shape[1] * block_size, q.device)

    out = torch.empty_like(q)
    if batch == 0:
        return out
    q = q.contiguous()
    block_tables = block_tables.contiguous()
    seq_lens = seq_lens.to(torch.int32).contiguous()
    part_lse = torch.empty(batch, q_heads, num_splits, device=q.device, dtype=torch.float32)
    part_out = torch.empty(batch, q_heads, num_splits, head_dim, device=q.device, dtype=torch.float32)
    min_dot = 1 if interpret else 16  # tl.dot needs every dim >= 16 when compiled
    dim_pad = max(min_dot, triton.next_power_of_2(head_dim))

    _decode_split_kernel[(batch, kv_heads, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, part_out, part_lse,
        q.stride(0), q.stride(1), *k_cache.stride()[:3], *v_cache.stride()[:3],
        block_tables.stride(0), part_lse.stride(0), part_lse.stride(1),
        num_blocks, float(scale), float(softcap), int(window),
        GROUP=group, GROUP_PAD=max(min_dot, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        DIM_PAD=dim_pad, BLOCK_SIZE=block_size, TILE=TILE_N, NUM_SPLITS=num_splits,
        USE_SOFTCAP=softcap > 0, DOT_DTYPE=_dot_dtype(k_cache.dtype, interpret), num_warps=4,
    )
    _merge_splits_kernel[(batch, q_heads)](
        part_out, part_lse, part_lse if sinks is None else sinks.contiguous(), out,
        part_lse.stride(0), part_lse.stride(1), out.stride(0), out.stride(1),
        HEAD_DIM=head_dim, DIM_PAD=dim_pad, NUM_SPLITS=num_splits,
        SPLITS_PAD=triton.next_power_of_2(num_splits), HAS_SINKS=sinks is not None, num_warps=4,
    )
    return out
