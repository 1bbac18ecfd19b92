"""Stateful property test of the allocator: random allocate / append / fork / free / evict sequences.

A shadow model written here (not the manager's own bookkeeping) checks after every step:
  - no block is both free and used, and free + used == all blocks;
  - refcounts equal the references from the live requests' block tables;
  - a cached (hashed) block is never written, and a prefix hit returns blocks holding exactly the
    request's tokens; copy-on-write copies give the child the parent's contents;
  - filled slots equal the distinct slots holding computed tokens;
  - a group never holds more blocks than its attention span needs;
  - nothing leaks once every request is freed.
The same machine drives the contiguous baseline (ReservingKVCacheManager): there, every live
sequence holds exactly its reservation, tables included, and forks copy instead of sharing.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, precondition,
                                 rule)

from kvplan.paging import NULL_BLOCK, KVCacheManager, Request, ReservingKVCacheManager
from kvplan.model import ChunkedLocal, FullAttention, ModelSpec, SlidingWindow, cdiv
from kvplan.model.grouping import page_layout

BASES = [[1000 + i for i in range(64)], [2000 + i for i in range(64)]]
MAX_MODEL_LEN = 72  # the reserving manager's bound on a request's tokens
MAX_CHUNK = 80  # the largest chunk a rule computes at once


def make_layout(kind: str, window: int):
    if kind == "full":
        groups = (FullAttention((0, 1), 2, 8, 8),)
    elif kind == "two-full":  # two page groups, prefix caching still on
        groups = (FullAttention((0, 1, 2, 3), 2, 8, 8), FullAttention((4, 5), 2, 8, 8))
    elif kind == "sliding":
        groups = (SlidingWindow((0, 2), 2, 8, 8, window_tokens=window), FullAttention((1, 3), 2, 8, 8))
    else:
        groups = (ChunkedLocal((0, 2), 2, 8, 8, window_tokens=window), FullAttention((1, 3), 2, 8, 8))
    n = sum(g.num_layers for g in groups)
    return page_layout(ModelSpec("t", "t", groups, n))


def brute_force_hit(kv, layout, req: Request, bs: int) -> int:
    """vLLM's hybrid rule by brute force over every length: the longest whole-block prefix under
    num_tokens whose every position a later query reads is cached, in every page group."""
    if not kv.enable_prefix_caching:
        return 0
    # Keys a caller gave (2**128 and up: kvplan.simulation.tokens derives a traced prompt's) are their own
    # check values; past them, keys and checks chain on the token ids.
    given = [k for k in req.block_hashes[:(req.num_tokens - 1) // bs] if k >= 1 << 128]
    keys = [(k, k) for k in given]
    parent = given[-1] if given else 0
    for i in range(len(given), (req.num_tokens - 1) // bs):
        block_tokens = req.token_ids(i * bs, (i + 1) * bs)
        check = hash((tuple(block_tokens), parent))
        parent = hash((parent, *block_tokens))
        keys.append((parent, check))

    def cached(g, i):
        key, check = keys[i]
        block = kv.pool.cached_blocks.get(key if len(layout.groups) == 1 else (g, key))
        return block is not None and kv.pool.block_check[block] == check

    for n in range(len(keys), 0, -1):
        if all(cached(g, i) for g, group in enumerate(layout.groups)
               for i in range(group.attention.first_needed_position(n * bs) // bs, n)):
            return n * bs
    return 0


class AllocatorMachine(RuleBasedStateMachine):
    running = Bundle("running")

    @initialize(kind=st.sampled_from(["full", "two-full", "sliding", "chunked"]), block_size=st.sampled_from([1, 2, 4, 8]),
                num_blocks=st.integers(6, 48), window=st.integers(3, 24), caching=st.booleans(),
                reserving=st.sampled_from([False, False, True]))
    def setup(self, kind, block_size, num_blocks, window, caching, reserving):
        self.layout = make_layout(kind, window)
        self.reserving = reserving
        if reserving:  # room for one to three sequences' reservations
            kv = ReservingKVCacheManager(self.layout, 1, block_size, MAX_MODEL_LEN, MAX_CHUNK)
            num_blocks = kv.reservation_blocks * (1 + num_blocks % 3)
            self.kv = ReservingKVCacheManager(self.layout, num_blocks, block_size, MAX_MODEL_LEN, MAX_CHUNK)
        else:
            self.kv = KVCacheManager(self.layout, num_blocks, block_size, caching)
        self.bs = block_size
        self.live: dict[str, Request] = {}
        self.last_chunk: dict[str, int] = {}
        self.content: dict[int, dict[int, int]] = {}  # block -> slot -> token, written by the shadow model
        self.counter = 0

    # ---- helpers --------------------------------------------------------------------------------

    def _new_id(self) -> str:
        self.counter += 1
        return f"r{self.counter}"

    def _compute(self, req: Request, num_new: int) -> None:
        """The forward pass: write the chunk's tokens into the shadow contents, then advance."""
        kv, bs = self.kv, self.bs
        start = req.num_computed_tokens
        tokens = req.token_ids(start, start + num_new)
        for table in kv.block_tables(req):
            for offset, token in enumerate(tokens):
                block = table[(start + offset) // bs]
                assert block != NULL_BLOCK
                self.content.setdefault(block, {})[(start + offset) % bs] = token
        req.num_computed_tokens += num_new
        kv.cache_blocks(req)
        self.last_chunk[req.request_id] = num_new

    def _apply_copies(self) -> None:
        for src, dst in self.kv.take_copies():
            self.content[dst] = dict(self.content.get(src, {}))

    def _allocate(self, req: Request, num_new: int) -> bool:
        kv = self.kv
        before_keys = list(kv.pool.block_key)
        before_ref = list(kv.pool.ref_cnt)
        before_tables = [list(t) for t in kv.block_tables(req)] if req.request_id in self.live else None
        ok = kv.allocate_slots(req, num_new)
        if not ok:
            assert kv.pool.ref_cnt == before_ref and kv.pool.block_key == before_keys  # all-or-nothing
            return False
        self._apply_copies()
        start = req.num_computed_tokens
        for g, table in enumerate(kv.block_tables(req)):
            for pos in range(start, start + num_new):
                block = table[pos // self.bs]  # registered now, maybe (allocate_slots registers what it fills)
                if before_keys[block] is not None:  # it was cached: it must have been taken anew (evicted)
                    was_here = before_tables is not None and pos // self.bs < len(before_tables[g]) and \
                        before_tables[g][pos // self.bs] == block
                    assert not was_here, f"cached block {block} is about to be written"
        registered = [b for b, (k0, k1) in enumerate(zip(before_keys, kv.pool.block_key)) if k1 is not None and k0 != k1]
        assert len(registered) == len(set(registered)) and all(  # exactly the blocks this chunk fills
            any(b in table[start // self.bs:(start + num_new) // self.bs] for table in kv.block_tables(req))
            for b in registered)
        if before_tables is None:  # a new admission: hit blocks must hold this request's tokens
            for table in kv.block_tables(req):
                for i in range(req.num_cached_tokens // self.bs):
                    if table[i] == NULL_BLOCK:  # before a window: never read again
                        continue
                    expected = req.token_ids(i * self.bs, (i + 1) * self.bs)
                    assert [self.content[table[i]][s] for s in range(self.bs)] == expected
        return True

    # ---- rules ----------------------------------------------------------------------------------

    @rule(target=running, base=st.sampled_from([0, 1]), shared=st.integers(0, 40), own=st.integers(0, 30),
          chunk=st.integers(1, 80))
    def admit(self, base, shared, own, chunk):
        if shared + own == 0:
            return multiple()
        rid = self._new_id()
        prompt = BASES[base][:shared] + [5000 + self.counter * 100 + i for i in range(own)]
        if self.reserving:
            prompt = prompt[:MAX_MODEL_LEN - 1]
        req = Request(rid, prompt, max_tokens=10_000)
        hit = self.kv.get_computed_tokens(req)
        assert hit % self.bs == 0 and hit <= req.num_tokens - 1
        assert hit == brute_force_hit(self.kv, self.layout, req, self.bs)
        num_new = min(chunk, req.num_tokens - hit)
        if not self._allocate(req, num_new):
            return multiple()  # not admitted: nothing to track
        assert req.num_computed_tokens == req.num_cached_tokens == hit
        self.live[rid] = req
        self._compute(req, num_new)
        return req

    @rule(req=running, chunk=st.integers(1, 40), token=st.integers(0, 3))
    def step(self, req, chunk, token):
        """Continue a prefill, or append a sampled token and decode it."""
        if req.request_id not in self.live:
            return
        if req.num_computed_tokens == req.num_tokens:
            if self.reserving and req.num_tokens == MAX_MODEL_LEN:
                return
            req.output_token_ids.append(token)
        num_new = min(chunk, req.num_tokens - req.num_computed_tokens)
        if self._allocate(req, num_new):
            self._compute(req, num_new)

    @rule(target=running, parent=running, token=st.integers(0, 3))
    def fork(self, parent, token):
        if parent.request_id not in self.live or parent.num_computed_tokens == 0:
            return multiple()
        n = parent.num_computed_tokens
        if self.reserving and (n == MAX_MODEL_LEN or self.kv.num_free_blocks < self.kv.reservation_blocks):
            return multiple()
        child = Request(self._new_id(), parent.token_ids(0, n) + [token], max_tokens=10_000)
        self.kv.fork(parent, child)
        self._apply_copies()
        for table in self.kv.block_tables(child):  # shared, or copied: the child's blocks hold its tokens
            for i, block in enumerate(table):
                if block != NULL_BLOCK:
                    stop = min(n, (i + 1) * self.bs)
                    assert [self.content[block][p % self.bs] for p in range(i * self.bs, stop)] == \
                        child.token_ids(i * self.bs, stop)
        assert child.num_computed_tokens == n
        self.live[child.request_id] = child
        self.last_chunk[child.request_id] = self.last_chunk[parent.request_id]
        return child

    @rule(req=consumes(running))
    def free(self, req):
        if self.live.pop(req.request_id, None) is not None:
            self.kv.free(req)

    @precondition(lambda self: self.kv.pool.num_free_blocks > 0)
    @rule(size=st.integers(1, 64))
    def evict(self, size):
        """A throwaway request that pops free blocks from the front (evicting cached ones), then leaves."""
        req = Request(self._new_id(), [9_000_000 + i for i in range(min(size, MAX_MODEL_LEN - 1))], max_tokens=1)
        num_new = min(req.num_tokens, self.kv.pool.num_free_blocks * self.bs // self.kv.num_groups)
        if num_new and self._allocate(req, num_new):
            self.live[req.request_id] = req
            self._compute(req, num_new)
            self.live.pop(req.request_id)
            self.kv.free(req)

    # ---- invariants -----------------------------------------------------------------------------

    @invariant()
    def pool_matches_shadow(self):
        kv, pool, bs = self.kv, self.kv.pool, self.bs
        kv.check_integrity()
        refs = [0] * pool.num_blocks
        filled: dict[int, int] = {}
        for req in self.live.values():
            for g, table in enumerate(kv.block_tables(req)):
                group = self.layout.groups[g].attention
                held = [b for b in table if b != NULL_BLOCK]
                n, chunk = req.num_computed_tokens, self.last_chunk.get(req.request_id, 1)
                bound = group.peak_blocks(n, bs)
                if group.kind in ("sliding", "chunked"):
                    bound = max(bound, cdiv(group.window_tokens - 1 + chunk, bs) + 1)
                assert len(held) <= bound, (group.kind, n, chunk, len(held), bound)
                start = n - chunk  # the last chunk's queries attend from here on
                if group.kind == "sliding":
                    start = max(0, start - group.window_tokens + 1)
                elif group.kind == "chunked":
                    start = start // group.window_tokens * group.window_tokens
                assert all(table[i] != NULL_BLOCK for i in range(start // bs, cdiv(n, bs))), "needed block released"
                for i, block in enumerate(table):
                    if block == NULL_BLOCK:
                        continue
                    refs[block] += 1
                    filled[block] = max(filled.get(block, 0), min(bs, max(0, n - i * bs)))
        if self.reserving:  # the tables' blocks, and the spares of every live reservation
            assert all(ref <= 1 for ref in pool.ref_cnt) and all(r <= ref for r, ref in zip(refs, pool.ref_cnt))
            assert kv.num_used_blocks == len(self.live) * kv.reservation_blocks
        else:
            assert refs == pool.ref_cnt
        free = set(pool.free_block_ids())
        used = {b for b, r in enumerate(pool.ref_cnt) if r}
        assert not free & used and len(free | used) == pool.num_blocks
        assert kv.num_filled_slots == sum(filled.values())
        for block in used:
            if pool.block_key[block] is not None:
                assert len(self.content.get(block, {})) == bs

    def teardown(self):
        if not hasattr(self, "kv"):
            return
        for req in list(self.live.values()):
            self.kv.free(req)
        self.live.clear()
        pool = self.kv.pool
        assert pool.num_free_blocks == pool.num_blocks and not any(pool.ref_cnt)
        assert self.kv.num_filled_slots == 0
        self.kv.check_integrity()


AllocatorMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=40, deadline=None,
                                              suppress_health_check=[HealthCheck.too_slow])
TestAllocator = AllocatorMachine.TestCase
