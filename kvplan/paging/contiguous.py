"""ReservingKVCacheManager: the contiguous baseline, where each sequence reserves its blocks at admission.

`kvplan simulate` (its contiguous run) and `kvplan profile --compare contiguous` (the runtime,
which needs real block tables) use this one manager, so both report the same capacity:
`num_blocks // reservation_blocks(layout, max_model_len, block_size, chunk_tokens)` sequences.

What one sequence reserves, per page group: the most blocks the group's table can hold at once
over a request of max_model_len tokens computed in chunks of up to `chunk_tokens` (the scheduler's
max_num_batched_tokens), i.e. the kind's own `peak_blocks`. For full attention (and MLA) that is
max_model_len. For a sliding window W it is the span W - 1 + chunk that one step's queries read,
not the window alone: HF transformers' static/hybrid caches reserve W because their prefill
attends over the chunk's in-flight K/V, but this engine (like vLLM) stores a chunk's K/V first and
reads it back through the block table, so a contiguous buffer that holds less than the span would
be overwritten while it is read. With decode-sized chunks the span is the window (plus the block
its ends straddle). The reservation is blocks of the shared pool; a released (out-of-window) block
returns to the sequence's own spares and is reused for its next positions, like a ring buffer, so
position p keeps living in table[p // block_size] and the runtime's kernels need nothing new.

No prefix sharing. A request of n samples reserves n sequences at admission; `fork` hands one to
the child and copies the parent's computed blocks into it (the engine applies the copies before
the next forward), so no block is ever shared.

| invariant                                                                   | checked by        |
|-----------------------------------------------------------------------------|-------------------|
| a block is in exactly one table or spare list, refcount 1                   | check_integrity() |
| used blocks == sum over live requests of samples x reservation_blocks       | check_integrity() |
| a running request never waits for a block (its spares cover its peak)       | _take()           |
"""

from ..model.grouping import PageLayout
from .kv_cache_manager import NULL_BLOCK, KVCacheManager, _Blocks
from .request import Request


def reservation_blocks_per_group(layout: PageLayout, max_model_len: int, block_size: int,
                                 chunk_tokens: int) -> list[int]:
    chunk = max(1, min(chunk_tokens, max_model_len))
    return [g.attention.peak_blocks(max_model_len, block_size, chunk) for g in layout.groups]


def reservation_blocks(layout: PageLayout, max_model_len: int, block_size: int, chunk_tokens: int) -> int:
    """Blocks one sequence reserves at admission, over all page groups."""
    return sum(reservation_blocks_per_group(layout, max_model_len, block_size, chunk_tokens))


class _Reservation(_Blocks):
    __slots__ = ("spares", "promised")

    def __init__(self, manager, req, tables, first_held, num_hashed, spares, promised):
        super().__init__(manager, req, tables, first_held, num_hashed)
        self.spares = spares  # per group: reserved blocks not in the table
        self.promised = promised  # whole reservations (per group lists) for the samples still to fork


class ReservingKVCacheManager(KVCacheManager):
    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, max_model_len: int,
                 chunk_tokens: int):
        super().__init__(layout, num_blocks, block_size, enable_prefix_caching=False)
        self.max_model_len = max_model_len
        self.per_group = reservation_blocks_per_group(layout, max_model_len, block_size, chunk_tokens)
        self.reservation_blocks = sum(self.per_group)
        self.growth_blocks = 0  # a running request grows from its own reservation, never the free list

    def _reserve(self) -> list[list[int]]:
        reservation = [self.pool.get_new_blocks(n)[::-1] for n in self.per_group]  # popped from the end: pool order
        for blocks in reservation:
            for block in blocks:
                self._filled[block] = 0
        return reservation

    def _admit(self, req: Request, num_new_tokens: int) -> bool:
        if req.num_samples * self.reservation_blocks > self.pool.num_free_blocks:
            return False
        reservations = [self._reserve() for _ in range(req.num_samples)]
        st = self._track(_Reservation(self, req, [[] for _ in self.per_group], [0] * self.num_groups, 0,
                                      reservations[0], reservations[1:]))
        req.num_computed_tokens = req.num_cached_tokens = 0
        self._grow_and_write(st, 0, num_new_tokens)
        return True

    def _room(self, num_blocks: int) -> bool:
        return True

    def _take(self, st: _Reservation, group: int, n: int) -> list[int]:
        spares = st.spares[group]
        if n > len(spares):
            raise RuntimeError(f"{st.req.request_id}: group {group} outgrew its reservation of "
                               f"{self.per_group[group]} blocks (chunks above chunk_tokens?)")
        return [spares.pop() for _ in range(n)]  # spares hold no tokens (_reserve, _release)

    def _take_each(self, st: _Reservation) -> list[int]:
        return [self._take(st, g, 1)[0] for g in range(self.num_groups)]

    def _release(self, st: _Reservation, group: int, block: int) -> None:
        self.num_filled_slots -= self._filled[block]
        self._filled[block] = 0
        st.spares[group].append(block)

    def _reserved_blocks(self):
        for st in self._reqs.values():
            for reservation in (st.spares, *st.promised):
                for blocks in reservation:
                    yield from blocks

    def blocks_needed(self, req: Request, num_new_tokens: int) -> int:
        return 0  # from the request's own reservation

    def free(self, req: Request) -> None:
        st = self._reqs.get(req.request_id)
        if st is None:
            return
        super().free(req)
        for reservation in (st.spares, *st.promised):
            for blocks in reservation:
                self.pool.free_blocks(reversed(blocks))

    def fork(self, parent: Request, child: Request) -> None:
        """The child takes a reservation made for it at admission (or a fresh one) and a copy of the
        parent's computed blocks: (src, dst) pairs the engine copies before the next forward."""
        if child.request_id in self._reqs:
            raise ValueError(f"request {child.request_id} already holds blocks")
        pst = self._reqs[parent.request_id]
        n = parent.num_computed_tokens
        if child.token_ids(0, n) != parent.token_ids(0, n):
            raise ValueError(f"fork: {child.request_id} does not share the computed tokens of {parent.request_id}")
        if pst.promised:
            spares = pst.promised.pop()
        elif self.reservation_blocks <= self.pool.num_free_blocks:
            spares = self._reserve()
        else:
            raise RuntimeError("contiguous fork without a reservation")
        self._sync(pst)
        st = self._track(_Reservation(self, child, [], list(pst.first_held), 0, spares, []))
        for g, parent_table in enumerate(pst.tables):
            table = [NULL_BLOCK] * len(parent_table)
            for i, src in enumerate(parent_table):
                if src != NULL_BLOCK:
                    dst = table[i] = self._take(st, g, 1)[0]
                    self._filled[dst] = self._filled[src]
                    self.num_filled_slots += self._filled[src]
                    self._copies.append((src, dst))
            st.tables.append(table)
        child.num_computed_tokens = n
        self._set_fast(st, n)

    def check_integrity(self) -> None:
        super().check_integrity()
        reserved = sum((1 + len(st.promised)) * self.reservation_blocks for st in self._reqs.values())
        if reserved != self.pool.num_used_blocks:
            raise AssertionError(f"{self.pool.num_used_blocks} blocks used, {reserved} reserved")
        if any(ref > 1 for ref in self.pool.ref_cnt):
            raise AssertionError("a block is shared in the contiguous baseline")
