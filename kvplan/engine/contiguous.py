"""The contiguous baseline on the paged pool: every request reserves max_model_len tokens up front.

`kvplan profile --compare contiguous` runs the same workload through this manager to measure
what paging buys. The reservation is made of the same blocks (one allocate_slots call covering
max_model_len tokens at admission, so later steps never allocate), which is the memory a
contiguous per-request buffer of max_model_len tokens takes, rounded up to whole blocks. Prefix
sharing is off, as in a contiguous cache. Filled-slot statistics of the base class count the
reservation as written; the engine's own live-token figures do not use them.
"""

from ..paging.kv_cache_manager import KVCacheManager
from ..paging.request import Request
from ..spec.grouping import PageLayout


class ReservingKVCacheManager(KVCacheManager):
    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, max_model_len: int):
        super().__init__(layout, num_blocks, block_size, enable_prefix_caching=False)
        self.max_model_len = max_model_len

    def allocate_slots(self, req: Request, num_new_tokens: int) -> bool:
        if self.num_blocks_held(req) == 0 and req.num_computed_tokens == 0:
            return super().allocate_slots(req, max(num_new_tokens, self.max_model_len))
        return super().allocate_slots(req, num_new_tokens)
