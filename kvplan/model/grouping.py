"""Page groups: how a model's KV layers share one block pool (vLLM's hybrid allocator idea).

KV layers are cut into page groups of G layers of one kind, G = gcd of the per-kind layer counts,
so every page (block_size tokens x G layers) has the same size and blocks from one pool serve
every kind. A request holds one block table per page group; sliding and chunked groups release
blocks that left their window. With no padding, memory equals per-layer accounting exactly.
"""

from dataclasses import dataclass
from fractions import Fraction
from math import gcd

from ..dtypes import KVFormat
from ..errors import UnsupportedModelError
from .kinds import LayerGroup, ceil_bytes
from .spec import ModelSpec


@dataclass(frozen=True)
class PageGroup:
    group_id: int
    attention: LayerGroup  # the kind (window, heads, dims) these layers share
    layers: tuple[int, ...]  # G model layer indices; page slot j holds layer layers[j]


@dataclass(frozen=True)
class PageLayout:
    layers_per_page: int  # G
    groups: tuple[PageGroup, ...]

    def page_bytes(self, kv: KVFormat, tp: int, block_size: int) -> int:
        """Bytes of one block: block_size tokens x G layers."""
        per_layer = self.groups[0].attention.bytes_per_token_per_layer(kv, tp)
        page = per_layer * block_size * self.layers_per_page
        return ceil_bytes(page)

    def blocks_per_request(self, context_tokens: int, block_size: int, chunk_tokens: int = 1) -> int:
        return sum(g.attention.peak_blocks(context_tokens, block_size, chunk_tokens) for g in self.groups)


def page_layout(spec: ModelSpec, kv: KVFormat | None = None, tp: int = 1) -> PageLayout:
    """Split the KV layers into equal page groups; fails closed when KV shapes differ across kinds."""
    kv_groups = spec.kv_groups()
    if not kv_groups:
        raise UnsupportedModelError(f"{spec.name}: no attention layer holds KV; there is nothing to page")
    if kv is not None:
        sizes = {g.bytes_per_token_per_layer(kv, tp) for g in kv_groups}
        if len(sizes) > 1:
            raise UnsupportedModelError(f"{spec.name}: attention kinds with different KV sizes per layer "
                                        f"({', '.join(str(Fraction(s)) for s in sorted(sizes))} B/token) cannot share one pool")
    size = 0
    for g in kv_groups:
        size = gcd(size, g.num_layers)
    groups = []
    for g in kv_groups:
        for start in range(0, g.num_layers, size):
            groups.append(PageGroup(len(groups), g, g.layers[start:start + size]))
    return PageLayout(size, tuple(groups))
