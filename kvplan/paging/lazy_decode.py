"""What the event-driven simulator asks of a KV manager to advance decode requests lazily.

A decode step that only writes one slot per group changes nothing but counters, so the
EventScheduler skips it and later accounts the writes in one go (catch_up). These methods say
when a request's next real change comes (steps_until_change) and apply a block boundary
without waking the request (append_block). Mixed into KVCacheManager.
"""

from .request import Request


class LazyDecodeSupport:
    def slots_per_decode(self, req: Request) -> int:
        return self.num_groups

    def steps_until_change(self, req: Request) -> int:
        """Decode steps (from the next one) that only write a slot: no new block, copy or release.

        May err early, never late: the event-driven simulator touches the request at that step.
        """
        st = self._reqs[req.request_id]
        bs, n = self.block_size, req.num_computed_tokens
        steps = len(st.tables[0]) * bs - n  # the next block boundary
        if n % bs and any(self.pool.ref_cnt[t[n // bs]] > 1 for t in st.tables):
            return 0
        for g in self._windowed:  # the first position whose query no longer reads the oldest held block
            steps = min(steps, self._release_position[g]((st.first_held[g] + 1) * bs) - n)
        return max(0, steps)

    def blocks_needed(self, req: Request, num_new_tokens: int) -> int:
        """Blocks allocate_slots would pop from the free list for a running request (no releases counted)."""
        st = self._reqs[req.request_id]
        bs, start = self.block_size, req.num_computed_tokens
        needed = max(0, -(-(start + num_new_tokens) // bs) - len(st.tables[0])) * self.num_groups
        if start % bs:
            needed += sum(self.pool.ref_cnt[t[start // bs]] > 1 for t in st.tables)
        return needed

    def append_block(self, req: Request) -> None:
        """Give every table of a lazily advanced request its next block (full-attention layouts)."""
        for table in self._reqs[req.request_id].tables:
            block = self.pool.get_new_block()
            self._filled[block] = 0
            table.append(block)

    def catch_up(self, req: Request, num_tokens: int) -> None:
        """Account num_tokens decode writes past num_computed_tokens into blocks already held."""
        start = req.num_computed_tokens
        for table in self._reqs[req.request_id].tables:
            if len(table) * self.block_size < start + num_tokens:
                raise RuntimeError(f"{req.request_id}: lazy tokens past the allocated blocks")
            self._write(table, start, start + num_tokens)
