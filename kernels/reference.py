"""Plain-torch paged attention and KV store: the CPU path and the test oracle.

Semantics shared with the Triton kernels:
- caches are `[num_blocks, block_size, Hkv, D]`; token p of a sequence lives in
  block `block_table[p // block_size]` at offset `p % block_size`;
- query head h reads KV head `h // (Hq // Hkv)` (HF `repeat_kv` order);
- a query at position i sees key j iff j <= i and, with `window > 0`, i - j < window;
- a block-table entry outside [0, num_blocks) (−1) inside a sequence's range marks its
  positions absent: never read, never attended (e.g. blocks freed behind a window);
- logits = q.k * scale, then `softcap * tanh(logits / softcap)` when softcap > 0;
- `sinks[h]` is an extra logit in head h's softmax denominator with no value;
- all softmax arithmetic is fp32; a query that sees no key (seq_len 0) outputs 0.
"""

from __future__ import annotations

import torch


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def check_cache(k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    _require(k_cache.dim() == 4, "caches must be [num_blocks, block_size, Hkv, D]")
    _require(v_cache.shape == k_cache.shape, "v_cache must have k_cache's shape (same head dim)")


def check_decode_inputs(q, k_cache, v_cache, block_tables, seq_lens, sinks) -> None:
    check_cache(k_cache, v_cache)
    _require(q.dim() == 3, "q must be [B, Hq, D]")
    batch, q_heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    _require(head_dim == k_cache.shape[3], "q and cache head dims differ")
    _require(q_heads % kv_heads == 0, "Hq must be a multiple of Hkv")
    _require(block_tables.dim() == 2 and block_tables.shape[0] == batch, "block_tables must be [B, max_blocks]")
    _require(block_tables.dtype == torch.int32, "block_tables must be int32")
    _require(seq_lens.shape == (batch,), "seq_lens must be [B]")
    _require(sinks is None or sinks.shape == (q_heads,), "sinks must be [Hq]")


def gather_kv(k_cache, v_cache, block_tables, positions):
    """K/V of `positions` for every row of `block_tables`: `[B, L, Hkv, D]` each, plus a
    `[B, L]` mask of positions whose block id is in range (−1 padding is not).

    Out-of-range ids are read as block 0; callers must mask those positions out.
    """
    num_blocks, block_size = k_cache.shape[:2]
    blocks = block_tables[:, positions // block_size].long()
    present = (blocks >= 0) & (blocks < num_blocks)
    blocks = blocks.masked_fill(~present, 0)
    offsets = positions % block_size
    return k_cache[blocks, offsets], v_cache[blocks, offsets], present


def masked_attention(q, k, v, visible, scale, softcap=0.0, sinks=None):
    """fp32 attention. q `[B, T, Hq, D]`, k/v `[B, L, Hkv, D]`, visible `[B, T, L]` bool."""
    batch, steps, q_heads, head_dim = q.shape
    kv_heads = k.shape[2]
    group = q_heads // kv_heads
    qg = q.float().reshape(batch, steps, kv_heads, group, head_dim)
    logits = torch.einsum("btkgd,blkd->bkgtl", qg, k.float()) * scale
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    logits = logits.masked_fill(~visible[:, None, None], float("-inf"))

    row_max = logits.amax(-1, keepdim=True)
    if sinks is not None:
        sink = sinks.float().reshape(1, kv_heads, group, 1, 1)
        row_max = torch.maximum(row_max, sink)
    row_max = row_max.masked_fill(row_max == float("-inf"), 0.0)  # rows that see nothing
    probs = torch.exp(logits - row_max)
    denom = probs.sum(-1, keepdim=True)
    if sinks is not None:
        denom = denom + torch.exp(sink - row_max)
    # Slots no query sees (padding, a partial last block) may hold garbage, even NaN,
    # and 0 * NaN = NaN: zero them, as the kernels' masked loads do.
    seen = visible.any(1)[:, :, None, None]
    out = torch.einsum("bkgtl,blkd->bkgtd", probs, v.float().masked_fill(~seen, 0.0))
    out = out / torch.where(denom > 0, denom, torch.ones_like(denom))
    return out.permute(0, 3, 1, 2, 4).reshape(batch, steps, q_heads, head_dim)


def paged_decode_reference(q, k_cache, v_cache, block_tables, seq_lens, scale, *, window=0, softcap=0.0, sinks=None):
    """One query token per sequence, at position seq_len - 1. Returns `[B, Hq, D]` in q's dtype."""
    check_decode_inputs(q, k_cache, v_cache, block_tables, seq_lens, sinks)
    max_len = int(seq_lens.max()) if q.shape[0] else 0
    positions = torch.arange(max_len, device=q.device)
    k, v, present = gather_kv(k_cache, v_cache, block_tables, positions)
    lens = seq_lens.to(device=q.device, dtype=torch.long)[:, None]
    visible = present & (positions[None, :] < lens)
    if window > 0:
        visible &= (lens - 1 - positions[None, :]) < window
    out = masked_attention(q[:, None], k, v, visible[:, None, :], scale, softcap, sinks)
    return out[:, 0].to(q.dtype)


def paged_prefill_reference(q, k_cache, v_cache, block_table_row, start_pos, scale, *, window=0, softcap=0.0,
                            sinks=None):
    """Causal attention for ONE sequence's queries at positions start_pos .. start_pos+T-1.

    q `[T, Hq, D]`; K/V of positions 0 .. start_pos+T-1 must already be in the cache.
    Memory is O(T * (start_pos+T) * Hq): fine for the CPU engine and tests.
    """
    check_cache(k_cache, v_cache)
    _require(q.dim() == 3 and q.shape[2] == k_cache.shape[3], "q must be [T, Hq, D]")
    steps = q.shape[0]
    positions = torch.arange(start_pos + steps, device=q.device)
    k, v, present = gather_kv(k_cache, v_cache, block_table_row.reshape(1, -1), positions)
    q_pos = positions[start_pos:, None]
    visible = present & (positions[None, :] <= q_pos)
    if window > 0:
        visible &= (q_pos - positions[None, :]) < window
    out = masked_attention(q[None], k, v, visible[None], scale, softcap, sinks)
    return out[0].to(q.dtype)


def store_kv_reference(key, value, k_cache, v_cache, slot_mapping) -> None:
    """Write token t's K/V to slot `slot_mapping[t]` (= block * block_size + offset).

    Slot −1 (padding) is skipped, and so is any slot past the cache, as in the kernel.
    """
    check_cache(k_cache, v_cache)
    _require(key.shape == value.shape and key.shape[1:] == k_cache.shape[2:], "key/value must be [T, Hkv, D]")
    num_blocks, block_size = k_cache.shape[:2]
    slots = slot_mapping.to(device=key.device, dtype=torch.long)
    keep = (slots >= 0) & (slots < num_blocks * block_size)
    slots = slots[keep]
    k_cache[slots // block_size, slots % block_size] = key[keep].to(k_cache.dtype)
    v_cache[slots // block_size, slots % block_size] = value[keep].to(v_cache.dtype)
