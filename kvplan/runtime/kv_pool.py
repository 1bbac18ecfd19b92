"""The torch KV pool: one K and one V tensor per page slot of the page layout.

A page (block) is block_size tokens x G layers (see `kvplan.model.grouping`). Slot j of a page
holds layer `layers[j]` of whichever page group owns the block, so the pool is 2 x G tensors of
`[num_blocks, block_size, kv_heads, head_dim]` and block b means the same memory for every group.
A layer finds its tensors through `slot_of[layer]` and its block table through `group_of[layer]`.

Invariant: `nbytes == num_blocks * layout.page_bytes(kv, tp, block_size)`, the estimate's KV
pool bytes, exactly (asserted on construction).
"""

from dataclasses import dataclass

import torch

from ..dtypes import KVFormat, kv_format
from ..errors import InputError, UnsupportedModelError
from ..model.grouping import PageLayout
from ..model.kinds import RUNTIME

_TORCH_KV_DTYPES = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
    "fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
}


def torch_kv_dtype(kv: KVFormat, device: torch.device) -> torch.dtype:
    """The element type a pool of this format uses; fails for formats with scales (int8/int4/fp4)."""
    dtype = _TORCH_KV_DTYPES.get(kv.name)
    if dtype is None:
        raise InputError(f"the engine stores KV as fp32, bf16, fp16 or fp8; --kv-dtype {kv.name} "
                         "(scaled integer / fp4 formats) has no torch pool")
    if dtype.itemsize == 1 and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        raise InputError(f"--kv-dtype {kv.name} needs a GPU with fp8 support (compute capability 8.9+), "
                         f"{torch.cuda.get_device_name(device)} has "
                         f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))}")
    return dtype


@dataclass(frozen=True)
class LayerCache:
    """Where one model layer's KV lives: its page slot's tensors and its page group's block tables."""

    group_id: int
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    window: int  # tokens a query sees (0: all)


class KVPool:
    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, kv: KVFormat | str,
                 device: torch.device | str = "cpu", tp: int = 1):
        kv = kv_format(kv) if isinstance(kv, str) else kv
        self.device = torch.device(device)
        self.layout, self.num_blocks, self.block_size, self.kv = layout, num_blocks, block_size, kv
        attention = layout.groups[0].attention
        for group in layout.groups:
            if RUNTIME not in group.attention.engines:
                raise UnsupportedModelError(f"the engine does not page {group.attention.label}; "
                                            f"{group.attention.describe()} layers are not supported")
            if group.attention.k_head_dim != group.attention.v_head_dim:
                raise UnsupportedModelError("the engine needs equal K and V head dims")
        self.kv_heads = attention.kv_heads_per_rank(tp)
        self.head_dim = attention.k_head_dim
        self.dtype = torch_kv_dtype(kv, self.device)
        shape = (num_blocks, block_size, self.kv_heads, self.head_dim)
        # Zero-filled, not empty: a stray read of a never-written slot must not be NaN garbage.
        self.k_caches = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(layout.layers_per_page)]
        self.v_caches = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(layout.layers_per_page)]
        self.layers: dict[int, LayerCache] = {}
        for group in layout.groups:
            window = group.attention.runtime_window_tokens()
            for slot, layer in enumerate(group.layers):
                self.layers[layer] = LayerCache(group.group_id, self.k_caches[slot], self.v_caches[slot], window)
        self.page_bytes = layout.page_bytes(kv, tp, block_size)
        if self.nbytes != num_blocks * self.page_bytes:
            raise AssertionError(f"KV pool holds {self.nbytes} bytes, the layout predicts "
                                 f"{num_blocks} x {self.page_bytes}")

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k_caches + self.v_caches)

    @property
    def num_groups(self) -> int:
        return len(self.layout.groups)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block dst becomes a copy of block src in every page slot (one op per tensor)."""
        if not pairs:
            return
        src = torch.tensor([s for s, _ in pairs], dtype=torch.long).to(self.device, non_blocking=True)
        dst = torch.tensor([d for _, d in pairs], dtype=torch.long).to(self.device, non_blocking=True)
        for cache in self.k_caches + self.v_caches:
            raw = cache.view(torch.uint8) if cache.element_size() == 1 else cache  # fp8 has no index_copy_
            raw.index_copy_(0, dst, raw.index_select(0, src))
