"""Page groups: how a model's KV layers share one block pool (vLLM's hybrid allocator idea).

KV layers are cut into page groups of G layers of one kind, G = gcd of the per-kind layer counts,
so every page (block_size tokens x G layers) has the same size and blocks from one pool serve
every kind. A request holds one block table per page group; sliding and chunked groups release
blocks that left their window. With no padding, memory equals per-layer accounting exactly.

Kinds whose layers differ in KV bytes per token (Gemma 4: sliding layers of head_dim 256, full
layers of 512) share a pool only when asked (`unify_page_sizes`), as vLLM does: a kind of 1/r of the
largest size per token takes r x block_size tokens per block, so every page has the largest page's
bytes; sizes that do not divide the largest are refused.
"""

from dataclasses import dataclass
from fractions import Fraction
from math import gcd, lcm

from ..dtypes import KVFormat
from ..errors import UnsupportedModelError
from .kinds import LayerGroup, ceil_bytes
from .spec import ModelSpec


@dataclass(frozen=True)
class PageGroup:
    group_id: int
    attention: LayerGroup  # the kind (window, heads, dims) these layers share
    layers: tuple[int, ...]  # G model layer indices; page slot j holds layer layers[j]
    block_factor: int = 1  # this group's blocks hold block_factor x block_size tokens (unified page sizes)


@dataclass(frozen=True)
class PageLayout:
    layers_per_page: int  # G
    groups: tuple[PageGroup, ...]

    def page_bytes(self, kv: KVFormat, tp: int, block_size: int) -> int:
        """Bytes of one block: block_size tokens x G layers."""
        group = self.groups[0]
        per_layer = group.attention.bytes_per_token_per_layer(kv, tp)
        page = per_layer * block_size * group.block_factor * self.layers_per_page
        return ceil_bytes(page)

    def blocks_per_request(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return sum(g.attention.peak_blocks(context_tokens, block_size * g.block_factor, chunk_tokens)
                   for g in self.groups)

    def tokens_in(self, num_blocks, block_size: int):
        """Tokens `num_blocks` hold if every group kept every token (an int, or a numpy array of them)."""
        common = lcm(*(block_size * g.block_factor for g in self.groups))
        return num_blocks * common // sum(common // (block_size * g.block_factor) for g in self.groups)


def page_layout(spec: ModelSpec, kv: KVFormat | None = None, tp: int = 1, unify_page_sizes: bool = False) -> PageLayout:
    """Split the KV layers into equal page groups; fails closed when KV sizes differ across kinds,
    unless `unify_page_sizes` (then each smaller kind's blocks hold proportionally more tokens)."""
    kv_groups = spec.kv_groups()
    if not kv_groups:
        raise UnsupportedModelError(f"{spec.name}: no attention layer holds KV; there is nothing to page")
    factor = dict.fromkeys(kv_groups, 1)
    if kv is not None:
        sizes = {g.bytes_per_token_per_layer(kv, tp) for g in kv_groups}
        unified = spec.block_factors(kv, tp) if unify_page_sizes else None
        if len(sizes) > 1 and unified is None:
            raise UnsupportedModelError(f"{spec.name}: attention kinds with different KV sizes per layer "
                                        f"({', '.join(str(Fraction(s)) for s in sorted(sizes))} B/token) cannot share "
                                        "one pool")
        factor = unified or factor
    size = 0
    for g in kv_groups:
        size = gcd(size, g.num_layers)
    groups = []
    for g in kv_groups:
        for start in range(0, g.num_layers, size):
            groups.append(PageGroup(len(groups), g, g.layers[start:start + size], factor[g]))
    return PageLayout(size, tuple(groups))
