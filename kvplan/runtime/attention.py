"""The attention function transformers calls for every layer when a model uses "kvplan_paged".

The runner packs a step into one row `[1, T]`: decode tokens first (one per sequence, attended
with `kvplan.kernels.paged_decode`), then each prefill chunk (attended per sequence over K/V
gathered through its block table). Per-step metadata arrives as the `kvplan_meta` keyword, which
transformers forwards from `model(...)` to the attention function untouched. New K/V are written
to the pool through the layer's page-group slot mapping before anyone reads them.

Model features reach us as keywords: `sliding_window` (must agree with the spec's layer kind,
since the allocator frees out-of-window blocks from the spec), `softcap` (Gemma 2), `s_aux`
(gpt-oss sinks). Anything else that changes attention is unsupported and fails loudly.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import KvplanError, UnsupportedModelError
from .kv_pool import KVPool

ATTN_IMPLEMENTATION = "kvplan_paged"
# Rows of fp32 logits the reference prefill may materialise at once (softcap / sinks path).
_REFERENCE_LOGIT_ELEMS = 1 << 26
# Keywords transformers passes that do not change the attention math.
_IGNORED = {"position_ids", "use_cache", "output_router_logits", "output_attentions", "cache_position",
            "is_causal", "dropout", "kvplan_meta", "sliding_window", "softcap", "s_aux"}


@dataclass(frozen=True)
class PrefillChunk:
    offset: int  # first row of this chunk in the packed batch
    num_tokens: int
    start_pos: int  # position of the chunk's first token (tokens before it are in the cache)


@dataclass
class StepMetadata:
    """Everything attention needs for one packed step; tensors are on the pool's device."""

    pool: KVPool | None  # None: warm-up forward before the pool exists (nothing is stored)
    slot_mapping: list[torch.Tensor]  # per page group: [T] int64, -1 = do not store
    num_decode: int  # rows [0, num_decode) are single-token decodes
    decode_block_tables: list[torch.Tensor]  # per page group: [num_decode, M] int32, -1 padded
    decode_seq_lens: torch.Tensor  # [num_decode] int32, including the new token
    prefills: list[PrefillChunk]
    prefill_block_tables: list[torch.Tensor]  # per page group: [num_prefills, M] int32
    layers_seen: set[int] = field(default_factory=set)
    num_splits: int | None = None  # decode kernel split count (None: its heuristic); set by the kernel warm-up


def paged_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention signature: q `[1, Hq, T, D]`, k/v `[1, Hkv, T, D]` -> (`[1, T, Hq, D]`, None)."""
    meta: StepMetadata | None = kwargs.get("kvplan_meta")
    if meta is None:
        raise KvplanError(f"attention '{ATTN_IMPLEMENTATION}' runs only inside the kvplan engine "
                          "(the model was called without kvplan_meta)")
    if query.shape[0] != 1:
        raise KvplanError("the engine packs every step into batch 1")
    layer_idx = module.layer_idx
    meta.layers_seen.add(layer_idx)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    softcap = float(kwargs.get("softcap") or 0.0)
    sinks = kwargs.get("s_aux")
    q = query[0].transpose(0, 1)  # [T, Hq, D]
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    out = q.new_empty(q.shape)  # contiguous [T, Hq, D], whatever q's strides
    if meta.pool is None:  # warm-up before the pool exists: each chunk attends over its own fresh K/V
        window = kwargs.get("sliding_window") or 0
        _check_features(layer_idx, window, kwargs)
        table = torch.zeros(1, dtype=torch.int32, device=q.device)
        for chunk in meta.prefills:
            rows = slice(chunk.offset, chunk.offset + chunk.num_tokens)
            out[rows] = prefill_attention(q[rows], k[rows][None], v[rows][None], table, 0, scale, window=window,
                                          softcap=softcap, sinks=sinks)
        return out[None], None

    from .. import kernels

    layer = meta.pool.layers.get(layer_idx)
    if layer is None:
        raise UnsupportedModelError(f"layer {layer_idx} has no KV in the page layout (the spec and the model disagree)")
    _check_features(layer_idx, layer.window, kwargs)
    group = layer.group_id
    kernels.store_kv(k, v, layer.k_cache, layer.v_cache, meta.slot_mapping[group])
    if meta.num_decode:
        nd = meta.num_decode
        out[:nd] = kernels.paged_decode(q[:nd], layer.k_cache, layer.v_cache, meta.decode_block_tables[group],
                                        meta.decode_seq_lens, scale, window=layer.window, softcap=softcap, sinks=sinks,
                                        num_splits=meta.num_splits)
    for i, chunk in enumerate(meta.prefills):
        rows = slice(chunk.offset, chunk.offset + chunk.num_tokens)
        out[rows] = prefill_attention(q[rows], layer.k_cache, layer.v_cache, meta.prefill_block_tables[group][i],
                                      chunk.start_pos, scale, window=layer.window, softcap=softcap, sinks=sinks)
    return out[None], None


def _check_features(layer_idx: int, window: int, kwargs: dict) -> None:
    model_window = kwargs.get("sliding_window") or 0
    if model_window != window:
        raise UnsupportedModelError(
            f"layer {layer_idx}: the model attends over a window of {model_window or 'all'} tokens, the spec's page "
            f"layout over {window or 'all'}; refusing to compute attention the allocator does not page for")
    unknown = sorted(k for k, val in kwargs.items() if k not in _IGNORED and val is not None)
    if unknown:
        raise UnsupportedModelError(f"layer {layer_idx}: attention features {', '.join(unknown)} are not supported "
                                    "by the paged engine")


def prefill_attention(q, k_cache, v_cache, block_table_row, start_pos: int, scale: float, *, window: int = 0,
                      softcap: float = 0.0, sinks=None):
    """Causal attention of one sequence's queries at positions start_pos.. over its paged K/V.

    SDPA on K/V gathered through the block table (flash / memory-efficient kernels on CUDA);
    softcap and sinks, which SDPA lacks, go through the kernels' reference in query chunks so the
    fp32 logits stay bounded.
    """
    steps, q_heads, _ = q.shape
    end = start_pos + steps
    if softcap > 0 or sinks is not None:
        from ..kernels import paged_prefill_reference

        rows = max(1, _REFERENCE_LOGIT_ELEMS // (q_heads * end))
        parts = [paged_prefill_reference(q[s:s + rows], k_cache, v_cache, block_table_row, start_pos + s, scale,
                                         window=window, softcap=softcap, sinks=sinks)
                 for s in range(0, steps, rows)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    first = max(0, start_pos - window + 1) if window else 0  # older keys are invisible to every query
    if end - 1 - first < window:  # no query reaches past its window: plain causal attention
        window = 0
    k, v = gather_tokens(k_cache, v_cache, block_table_row, first, end)
    group = q_heads // k.shape[1]
    qt = q.transpose(0, 1)[None]  # [1, Hq, T, D]
    kt = k.to(q.dtype).repeat_interleave(group, dim=1).transpose(0, 1)[None]
    vt = v.to(q.dtype).repeat_interleave(group, dim=1).transpose(0, 1)[None]
    if first == 0 and start_pos == 0 and not window:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale)
    else:
        q_pos = torch.arange(start_pos, end, device=q.device)[:, None]
        k_pos = torch.arange(first, end, device=q.device)[None, :]
        visible = k_pos <= q_pos
        if window:
            visible &= (q_pos - k_pos) < window
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=visible, scale=scale)
    return out[0].transpose(0, 1)


def gather_tokens(k_cache, v_cache, block_table_row, first: int, end: int):
    """K/V of positions [first, end) of one sequence: two `[end - first, Hkv, D]` tensors."""
    block_size = k_cache.shape[1]
    positions = torch.arange(first, end, device=k_cache.device)
    blocks = block_table_row[positions // block_size].long()
    offsets = positions % block_size
    return k_cache[blocks, offsets], v_cache[blocks, offsets]


def register() -> None:
    """Make "kvplan_paged" a valid `attn_implementation` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention)
