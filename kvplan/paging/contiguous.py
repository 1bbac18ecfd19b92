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
its ends straddle). A reservation is a promise on the shared free list: blocks are taken from it
as the tables grow and no other request may take the promised ones, so capacity is the
reservation's while block operations stay those of the tokens written. A released
(out-of-window) block returns to the sequence's own spares and holds its next positions, like a
ring buffer, so position p keeps living in table[p // block_size] and the kernels need nothing new.

No prefix sharing. A request of n samples reserves n sequences at admission; `fork` hands one to
the child and copies the parent's computed blocks into it (the engine applies the copies before
the next forward), so no block is ever shared.

| invariant                                                                   | checked by        |
|-----------------------------------------------------------------------------|-------------------|
| per sequence: blocks in its tables and spares + promised ones == reservation | check_integrity() |
| promised blocks <= free blocks (num_free_blocks leaves them out)            | check_integrity() |
| no block is shared; a running request never waits for a block               | check_integrity(), _take() |
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
    __slots__ = ("spares", "untaken", "promised")

    def __init__(self, manager, req, first_held, per_group, promised):
        super().__init__(manager, req, [[] for _ in per_group], first_held, 0)
        self.spares = [[] for _ in per_group]  # per group: blocks taken, released by a window, reused next
        self.untaken = list(per_group)  # per group: reserved blocks still in the free list
        self.promised = promised  # whole reservations for the samples still to fork


class ReservingKVCacheManager(KVCacheManager):
    """A reservation is a promise on the free list: its blocks are taken from it as the tables grow,
    and nobody else may take them (`num_free_blocks` leaves them out), so the capacity is the
    reservation's while block operations stay those of the tokens actually written."""

    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, max_model_len: int,
                 chunk_tokens: int):
        super().__init__(layout, num_blocks, block_size, enable_prefix_caching=False)
        self.per_group = reservation_blocks_per_group(layout, max_model_len, block_size, chunk_tokens)
        self.reservation_blocks = sum(self.per_group)
        self.growth_blocks = 0  # a running request grows into its own reservation: always there
        self._promised = 0  # reserved blocks still in the free list, over all requests

    def _admit(self, req: Request, num_new_tokens: int) -> bool:
        units = req.num_samples
        if units * self.reservation_blocks > self.num_free_blocks:
            return False
        self._promised += units * self.reservation_blocks
        st = self._track(_Reservation(self, req, [0] * self.num_groups, self.per_group, units - 1))
        req.num_computed_tokens = req.num_cached_tokens = 0
        self._grow_and_write(st, 0, num_new_tokens)
        return True

    def _room(self, num_blocks: int) -> bool:
        return True

    def _take(self, st: _Reservation, group: int, n: int) -> list[int]:
        spares = st.spares[group]
        reused = [spares.pop() for _ in range(min(n, len(spares)))]  # they hold no tokens (_release)
        n -= len(reused)
        if n > st.untaken[group]:
            raise RuntimeError(f"{st.req.request_id}: group {group} outgrew its reservation of "
                               f"{self.per_group[group]} blocks (chunks above chunk_tokens?)")
        st.untaken[group] -= n
        self._promised -= n
        return reused + super()._take(st, group, n) if n else reused

    def _take_each(self, st: _Reservation) -> list[int]:
        return [self._take(st, g, 1)[0] for g in range(self.num_groups)]

    def append_blocks(self, reqs: list[Request]) -> list[int]:
        return [block for req in reqs for block in self.append_block(req)]  # each from its own reservation

    def _release(self, st: _Reservation, group: int, block: int) -> None:
        self._filled_rest -= self.block_size  # it lies before the written end: full
        st.spares[group].append(block)

    def _reserved_blocks(self):
        for st in self._reqs.values():
            for blocks in st.spares:
                yield from blocks

    def blocks_needed(self, req: Request, num_new_tokens: int) -> int:
        return 0  # from the request's own reservation

    def decode_steps(self, req: Request) -> int:
        """Without windows a decode changes nothing anyone sees until the request ends: crossing into
        a new block takes a promised one (catch_up does it), and used + promised blocks stay the same."""
        if self._windowed:
            return super().decode_steps(req)
        st = self._reqs[req.request_id]
        n = req.num_computed_tokens
        if n != st.end or any(self.pool.ref_cnt[b] > 1 for b in st.tails):
            return 0
        return min(self.per_group) * self.block_size - n

    def catch_up(self, req: Request, num_tokens: int) -> None:
        st = self._reqs[req.request_id]
        last = -(-(req.num_computed_tokens + num_tokens) // self.block_size)
        for g, table in enumerate(st.tables):
            if last > len(table):
                table.extend(self._take(st, g, last - len(table)))
        super().catch_up(req, num_tokens)

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks - self._promised

    @property
    def num_used_blocks(self) -> int:
        return self.pool.num_used_blocks + self._promised

    def free(self, req: Request) -> None:
        st = self._reqs.get(req.request_id)
        if st is None:
            return
        super().free(req)
        for blocks in st.spares:
            self.pool.free_blocks(reversed(blocks))
        self._promised -= sum(st.untaken) + st.promised * self.reservation_blocks

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
            pst.promised -= 1
        elif self.reservation_blocks <= self.num_free_blocks:
            self._promised += self.reservation_blocks
        else:
            raise RuntimeError("contiguous fork without a reservation")
        if pst.end != n:
            raise ValueError(f"fork: {parent.request_id} has allocated tokens it has not computed")
        st = self._track(_Reservation(self, child, list(pst.first_held), self.per_group, 0))
        for g, parent_table in enumerate(pst.tables):
            table = st.tables[g]
            for i, src in enumerate(parent_table):
                if src == NULL_BLOCK:
                    table.append(NULL_BLOCK)
                    continue
                dst = self._take(st, g, 1)[0]
                table.append(dst)
                self._filled_rest += min(self.block_size, max(0, n - i * self.block_size))  # as src
                self._copies.append((src, dst))
        child.num_computed_tokens = n
        self._set_fast(st, n)

    def check_integrity(self) -> None:
        super().check_integrity()
        promised = 0
        for st in self._reqs.values():
            taken = sum(sum(b != NULL_BLOCK for b in t) + len(spares) for t, spares in zip(st.tables, st.spares))
            if taken + sum(st.untaken) != self.reservation_blocks:
                raise AssertionError(f"{st.req.request_id}: {taken} blocks taken + {sum(st.untaken)} promised "
                                     f"!= its reservation of {self.reservation_blocks}")
            promised += sum(st.untaken) + st.promised * self.reservation_blocks
        if promised != self._promised or self._promised > self.pool.num_free_blocks:
            raise AssertionError(f"{self._promised} blocks promised, {promised} counted, "
                                 f"{self.pool.num_free_blocks} free")
        if any(ref > 1 for ref in self.pool.ref_cnt):
            raise AssertionError("a block is shared in the contiguous baseline")
