"""The contiguous baseline on the paged pool: every request reserves max_model_len tokens up front.

`kvplan profile --compare contiguous` runs the same workload through this manager to measure
what paging buys. The reservation is made of the same blocks (one allocate_slots call covering
max_model_len tokens at admission, so later steps never allocate), which is the memory a
contiguous per-request buffer of max_model_len tokens takes, rounded up to whole blocks. Prefix
sharing is off, as in a contiguous cache. Filled-slot statistics of the base class count the
reservation as written; the engine's own live-token figures do not use them.
"""

from ..paging.kv_cache_manager import NULL_BLOCK, KVCacheManager
from ..paging.request import Request
from ..model.grouping import PageLayout


def reservation_blocks(layout: PageLayout, max_model_len: int, block_size: int) -> int:
    """Blocks one max_model_len reservation takes: allocated at admission in every page group, before any
    window could release one (sliding groups included)."""
    return len(layout.groups) * -(-max_model_len // block_size)


class ReservingKVCacheManager(KVCacheManager):
    """Every sequence, forked samples included, owns a whole max_model_len reservation.

    A request of n samples is admitted only when n reservations are free; the n - 1 still to fork
    are held back (`_promised_blocks`) so no later admission can take them."""

    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, max_model_len: int):
        super().__init__(layout, num_blocks, block_size, enable_prefix_caching=False)
        self.max_model_len = max_model_len
        self._promised_blocks = 0

    def _reservation_blocks(self) -> int:
        return reservation_blocks(self.layout, self.max_model_len, self.block_size) if self.max_model_len else 0

    def allocate_slots(self, req: Request, num_new_tokens: int) -> bool:
        if self.num_blocks_held(req) == 0 and req.num_computed_tokens == 0:
            promise = (req.num_samples - 1) * self._reservation_blocks()
            free = self.pool.num_free_blocks - self._promised_blocks
            if free - promise < self._reservation_blocks():
                return False
            if not super().allocate_slots(req, max(num_new_tokens, self.max_model_len)):
                return False
            self._promised_blocks += promise
            return True
        return super().allocate_slots(req, num_new_tokens)

    def fork(self, parent: Request, child: Request) -> None:
        """The child shares the blocks that hold computed tokens and gets its own blocks for the rest."""
        super().fork(parent, child)
        self._promised_blocks = max(0, self._promised_blocks - self._reservation_blocks())
        computed_blocks = -(-parent.num_computed_tokens // self.block_size)
        for table in self.block_tables(child):
            for i in range(computed_blocks, len(table)):
                if table[i] != NULL_BLOCK:
                    self._free_one(table[i])
                    table[i] = self._new_blocks(1)[0]
