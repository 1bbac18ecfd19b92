"""BlockPool and KVCacheManager: LRU order, lazy eviction, prefix hits, copy-on-write, windows."""

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.paging import NULL_BLOCK, BlockPool, KVCacheManager, Request
from kvplan.model import ChunkedLocal, FullAttention, ModelSpec, SlidingWindow, cdiv
from kvplan.model.grouping import page_layout


def layout(*groups):
    return page_layout(ModelSpec("t", "t", tuple(groups), sum(g.num_layers for g in groups)))


FULL = layout(FullAttention((0, 1), 2, 8, 8))


def req(rid, tokens, max_tokens=100):
    return Request(rid, list(tokens), max_tokens)


def compute(kv, r, n):
    """Allocate and 'run' n tokens."""
    assert kv.allocate_slots(r, n)
    r.num_computed_tokens += n
    kv.cache_blocks(r)


# ---- BlockPool --------------------------------------------------------------------------------

def test_pool_lru_revive_and_lazy_eviction():
    pool = BlockPool(4)
    a, b, c = pool.get_new_blocks(3)
    pool.cache_blocks([a, b], ["ka", "kb"], ["ca", "cb"])
    for blk in (a, b, c):
        pool.free_block(blk)
    assert pool.free_block_ids() == [3, a, b, c]  # freed blocks join the back, in free order
    assert pool.lookup("ka", "ca") == a  # still cached while free (lazy eviction)
    assert pool.touch(b) is True and pool.free_block_ids() == [3, a, c]  # revived from the middle
    got = pool.get_new_blocks(2)
    assert got == [3, a] and pool.lookup("ka", "ca") is None and pool.num_evictions == 1
    pool.check_integrity()
    with pytest.raises(ValueError):
        pool.get_new_blocks(2)


def test_pool_integrity_detects_corruption():
    pool = BlockPool(3)
    pool.get_new_blocks(1)
    pool.ref_cnt[0] = 0  # used block with refcount 0 but not in the free list
    with pytest.raises(AssertionError):
        pool.check_integrity()
    with pytest.raises(RuntimeError):
        BlockPool(2).free_block(0)


class ReferencePool:
    """The free list as an OrderedDict LRU queue, one block per operation: what BlockPool's queue
    with stale entries and its bulk pops, frees and registrations must be indistinguishable from."""

    def __init__(self, n):
        self.ref, self.key, self.check = [0] * n, [None] * n, [None] * n
        self.cached, self.free, self.evictions = {}, OrderedDict.fromkeys(range(n)), 0

    def get_new_blocks(self, n):
        blocks = [self.free.popitem(last=False)[0] for _ in range(n)]
        for b in blocks:
            if self.key[b] is not None:
                if self.cached.get(self.key[b]) == b:
                    del self.cached[self.key[b]]
                self.key[b] = None
                self.evictions += 1
            self.ref[b] = 1
        return blocks

    def touch(self, b):
        revived = self.ref[b] == 0
        if revived:
            del self.free[b]
        self.ref[b] += 1
        return revived

    def free_blocks(self, blocks):
        freed = []
        for b in blocks:
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free[b] = None
                freed.append(b)
        return freed

    def cache_blocks(self, blocks, keys, checks):
        for b, k, c in zip(blocks, keys, checks):
            self.key[b], self.check[b] = k, c
            self.cached.setdefault(k, b)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 12), ops=st.lists(st.tuples(st.sampled_from("take touch free cache".split()),
                                                      st.lists(st.integers(0, 11), max_size=8)), max_size=60))
def test_pool_matches_an_ordered_dict_lru_queue(n, ops):
    """Random takes, revivals, frees (shared blocks, one block listed twice) and registrations (a key
    registered twice, by several blocks at once); after each, the pool equals the reference."""
    pool, ref = BlockPool(n), ReferencePool(n)
    for op, args in ops:
        if op == "take":
            k = min(len(args), pool.num_free_blocks)
            assert pool.get_new_blocks(k) == ref.get_new_blocks(k)
        elif op == "touch":
            for b in (a % n for a in args):
                if ref.ref[b] or b in ref.cached.values():  # only held or cached blocks are revived
                    assert pool.touch(b) == ref.touch(b)
        elif op == "free":
            held = [a % n for a in args]
            held = [b for i, b in enumerate(held) if held[:i + 1].count(b) <= ref.ref[b]]
            assert pool.free_blocks(held) == ref.free_blocks(held)
        else:
            held = [b for b in dict.fromkeys(a % n for a in args) if ref.ref[b] and ref.key[b] is None]
            keys = [f"k{a % 3}" for a in args[:len(held)]]  # few keys: collisions with cached and among themselves
            pool.cache_blocks(held, keys, [f"c{b}" for b in held])
            ref.cache_blocks(held, keys, [f"c{b}" for b in held])
        pool.check_integrity()
        assert pool.free_block_ids() == list(ref.free) and pool.num_free_blocks == len(ref.free)
        assert pool.cached_blocks == ref.cached and pool.block_key == ref.key and pool.ref_cnt == ref.ref
        assert pool.num_evictions == ref.evictions


def test_pool_queue_stays_bounded_under_revivals():
    pool = BlockPool(4)
    blocks = pool.get_new_blocks(4)
    pool.cache_blocks(blocks, ["a", "b", "c", "d"], ["a", "b", "c", "d"])
    for _ in range(100):  # free and revive without ever popping: stale entries pile up, then compact
        pool.free_blocks(blocks)
        for b in blocks:
            pool.touch(b)
    pool.free_blocks(blocks[::-1])
    pool.check_integrity()
    assert pool.free_block_ids() == blocks[::-1] and len(pool._queue) <= 3 * pool.num_blocks


# ---- prefix caching -----------------------------------------------------------------------------

def test_block_keys_chain_the_tokens_by_hashes_stable_across_processes():
    import os
    import subprocess
    import sys

    kv = KVCacheManager(FULL, 16, 4)
    r = req("a", range(10))
    compute(kv, r, 10)
    first = hash((0, 0, 1, 2, 3))
    second = hash((first, 4, 5, 6, 7))
    assert r.block_hashes == [first, second]
    table = kv.block_tables(r)[0]
    checks = [hash(((0, 1, 2, 3), 0)), hash(((4, 5, 6, 7), first))]
    assert kv.pool.lookup(first, checks[0]) == table[0] and kv.pool.lookup(second, checks[1]) == table[1]
    assert kv.pool.lookup(second, hash(((4, 5, 6, 8), first))) is None  # the key alone does not make a hit
    code = ("from kvplan.paging import Request; from kvplan.paging.hashing import block_checks; "
            "r = Request('a', list(range(10)), 1); print(block_checks(r, 4, 0, 2), r.block_hashes)")
    for seed in ("0", "12345"):  # str/bytes hashes change with the seed; ints and their tuples must not
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == f"{checks} {r.block_hashes}"


def test_prefix_hit_whole_blocks_and_l_minus_1_cap():
    kv = KVCacheManager(FULL, 32, 4)
    a = req("a", range(12))
    compute(kv, a, 12)
    same = req("b", range(12))
    assert kv.get_computed_tokens(same) == 8  # 12 cached, but the last token must be recomputed: 2 blocks
    longer = req("c", list(range(12)) + [99])
    assert kv.get_computed_tokens(longer) == 12
    differs = req("d", [0, 1, 2, 3, 4, 5, 6, 77, 8, 9, 10, 11, 12])
    assert kv.get_computed_tokens(differs) == 4  # chain breaks at the second block
    assert kv.allocate_slots(longer, 1)
    assert longer.num_computed_tokens == longer.num_cached_tokens == 12
    assert kv.block_tables(longer)[0][:3] == kv.block_tables(a)[0][:3]
    assert kv.pool.ref_cnt[kv.block_tables(a)[0][0]] == 2


def test_blocks_are_registered_when_allocated_and_hits_survive_free():
    """vLLM's rule: allocate_slots registers the blocks its tokens fill (the forward pass of the same
    step computes them before any later request of the step reads them); a partial block is not."""
    kv = KVCacheManager(FULL, 32, 4)
    a = req("a", range(9))
    assert kv.allocate_slots(a, 6)
    assert kv.get_computed_tokens(req("b", range(9))) == 4  # the first block is full after this step
    assert kv.allocate_slots(a, 0) and kv.get_computed_tokens(req("b2", range(9))) == 4  # nothing new
    a.num_computed_tokens = 6
    assert kv.allocate_slots(a, 3)
    assert kv.get_computed_tokens(req("b3", range(9))) == 8  # two full blocks, the ninth token is not
    a.num_computed_tokens = 9
    for _ in range(3):  # decode tokens (each sampled before it is fed): the third one fills block 2
        assert kv.get_computed_tokens(req("d", list(range(9)) + [7, 7, 7, 5])) == 8
        a.append_token(7)
        assert kv.allocate_slots(a, 1)
        a.num_computed_tokens += 1
    assert kv.get_computed_tokens(req("e", list(range(9)) + [7, 7, 7, 5])) == 12
    kv.free(a)
    assert kv.get_computed_tokens(req("c", range(9))) == 8  # freed blocks stay cached


def test_free_order_evicts_tail_first():
    kv = KVCacheManager(FULL, 4, 4)
    a = req("a", range(16))
    compute(kv, a, 16)
    table = list(kv.block_tables(a)[0])
    kv.free(a)
    assert kv.pool.free_block_ids() == table[::-1]
    assert kv.get_computed_tokens(req("b", list(range(16)) + [1])) == 16
    compute(kv, req("c", [500]), 1)  # pops the tail block of a: its chain ends at 3 blocks
    assert kv.get_computed_tokens(req("d", list(range(16)) + [1])) == 12


def test_hybrid_hit_covers_the_window_in_sliding_groups_and_everything_in_full_ones():
    """vLLM's hybrid rule: a sliding group needs only the blocks the window of the hit position reads."""
    kv = KVCacheManager(layout(SlidingWindow((0,), 1, 8, 8, window_tokens=8), FullAttention((1,), 1, 8, 8)), 64, 4)
    assert kv.enable_prefix_caching
    a = req("a", range(40), max_tokens=100)
    compute(kv, a, 24)
    sliding_a, full_a = (list(t) for t in kv.block_tables(a))
    compute(kv, a, 16)  # the queries at 24..39 read from 17 on: sliding blocks 0..3 are released
    assert kv.block_tables(a)[0][:4] == [NULL_BLOCK] * 4 and all(kv.pool.ref_cnt[b] == 0 for b in sliding_a[:4])
    b = req("b", list(range(24)) + [777])
    assert kv.get_computed_tokens(b) == 24  # position 24 reads 17..23: sliding blocks 4 and 5
    assert kv.allocate_slots(b, 1)
    sliding_b, full_b = kv.block_tables(b)
    assert full_b[:6] == full_a and sliding_b[:6] == [NULL_BLOCK] * 4 + sliding_a[4:6]
    c = req("c", list(range(12)) + [5])  # position 12 reads 5..11: blocks 1 and 2, released by a, still cached
    assert kv.get_computed_tokens(c) == 12
    assert kv.allocate_slots(c, 1) and kv.block_tables(c)[0][:3] == [NULL_BLOCK, *sliding_a[1:3]]
    assert kv.block_tables(c)[1][:3] == full_a[:3]
    kv.check_integrity()


def test_a_window_hit_is_shorter_when_a_block_in_the_window_was_evicted():
    kv = KVCacheManager(layout(SlidingWindow((0,), 1, 8, 8, window_tokens=6), FullAttention((1,), 1, 8, 8)), 24, 2)
    a = req("a", range(12))
    compute(kv, a, 12)
    sliding, full = (list(t) for t in kv.block_tables(a))
    kv.free(a)  # every block free and cached; the free list holds the tails first
    victim = sliding[4]  # block 4 of the sliding group: in the window of positions 10 and 11
    throwaway = []
    while kv.pool.lookup(kv.pool.block_key[victim], kv.pool.block_check[victim]) == victim:
        r = req(f"x{len(throwaway)}", [10_000 + len(throwaway)])
        compute(kv, r, 1)
        throwaway.append(r)
    assert all(kv.pool.block_key[b] is not None for b in full)
    # L = 10 reads positions 5..9 (sliding blocks 2, 3, 4): block 4 is gone. L = 8 reads 3..7: blocks 1..3.
    assert kv.get_computed_tokens(req("b", list(range(12)) + [1])) == 8
    kv.check_integrity()


def test_cached_block_is_never_written():
    kv = KVCacheManager(FULL, 8, 4)
    a = req("a", range(8))
    compute(kv, a, 8)
    block = kv.block_tables(a)[0][1]
    a.num_computed_tokens = 6  # a corrupt caller rewinding into a cached block
    with pytest.raises(RuntimeError, match="cached"):
        kv.allocate_slots(a, 1)
    assert kv.pool.is_cached(block)


# ---- allocation -----------------------------------------------------------------------------------

def test_allocate_is_all_or_nothing():
    kv = KVCacheManager(FULL, 3, 4)
    a = req("a", range(8))
    compute(kv, a, 8)
    b = req("b", range(100, 109))
    assert kv.allocate_slots(b, 9) is False
    assert kv.pool.num_free_blocks == 1 and kv.num_blocks_held(b) == 0 and b.num_computed_tokens == 0
    kv.check_integrity()


def test_fork_copy_on_write_returns_copies():
    kv = KVCacheManager(FULL, 16, 4)
    parent = req("p", range(6))
    compute(kv, parent, 6)
    child = req("c", list(range(6)) + [42])
    parent.output_token_ids.append(41)
    kv.fork(parent, child)
    shared = list(kv.block_tables(parent)[0])
    assert kv.block_tables(child)[0] == shared and all(kv.pool.ref_cnt[b] == 2 for b in shared)
    assert kv.allocate_slots(parent, 1)  # writes position 6 into the shared partial block: copy it
    copies = kv.take_copies()
    assert copies == [(shared[1], kv.block_tables(parent)[0][1])] and kv.take_copies() == []
    assert kv.block_tables(parent)[0][0] == kv.block_tables(child)[0][0]  # the full block stays shared
    assert kv.allocate_slots(child, 1) and kv.take_copies() == []  # sole owner of the old block now
    kv.check_integrity()
    with pytest.raises(ValueError):
        kv.fork(parent, req("x", [9, 9, 9, 9, 9, 9, 9]))  # different computed tokens


@pytest.mark.parametrize("window,bs", [(5, 4), (8, 4), (17, 16), (100, 16), (3, 1)])
def test_sliding_decode_matches_peak_blocks(window, bs):
    """Token by token, a sliding group's most blocks held equals the estimate's peak_blocks exactly."""
    group = SlidingWindow((0,), 1, 8, 8, window_tokens=window)
    kv = KVCacheManager(layout(group), 10_000, bs)
    r = req("a", [1], max_tokens=10_000)
    most = 0
    for n in range(1, 4 * window + 3 * bs):
        if n > 1:
            r.output_token_ids.append(n)
        compute(kv, r, 1)
        most = max(most, kv.num_blocks_held(r))
        assert most == group.peak_blocks(n, bs), n
        table = kv.block_tables(r)[0]
        needed_from = max(0, n - 1 - window + 1)  # the last query, at n - 1, attends (n - 1 - W, n - 1]
        assert all(b != NULL_BLOCK for b in table[needed_from // bs:])


def test_sliding_chunk_keeps_window_before_the_chunk():
    group = SlidingWindow((0,), 1, 8, 8, window_tokens=8)
    kv = KVCacheManager(layout(group), 100, 4)
    r = req("a", range(40))
    compute(kv, r, 20)
    assert kv.allocate_slots(r, 12)  # queries 20..31 need keys from 13 on
    table = kv.block_tables(r)[0]
    assert table[:3] == [NULL_BLOCK] * 3 and all(b != NULL_BLOCK for b in table[3:8])
    assert kv.num_blocks_held(r) <= cdiv(8 - 1 + 12, 4) + 1


def test_chunked_local_releases_finished_chunks():
    group = ChunkedLocal((0,), 1, 8, 8, window_tokens=8)
    kv = KVCacheManager(layout(group), 100, 4)
    r = req("a", [1], max_tokens=100)
    compute(kv, r, 1)
    for n in range(2, 30):
        r.output_token_ids.append(n)
        compute(kv, r, 1)
        assert kv.num_blocks_held(r) <= group.peak_blocks(n, 4)
    assert kv.block_tables(r)[0][:6] == [NULL_BLOCK] * 6  # chunks [0,8), [8,16), [16,24) are gone


def test_two_page_groups_share_one_pool():
    two = layout(SlidingWindow((0,), 1, 8, 8, window_tokens=4), FullAttention((1,), 1, 8, 8))
    kv = KVCacheManager(two, 20, 2)
    r = req("a", range(10))
    compute(kv, r, 10)
    sliding, full = kv.block_tables(r)
    assert len(sliding) == len(full) == 5 and NULL_BLOCK not in full
    assert kv.pool.num_used_blocks == kv.num_blocks_held(r) == 5 + sum(b != NULL_BLOCK for b in sliding)
    assert kv.num_filled_slots == 10 + 2 * sum(b != NULL_BLOCK for b in sliding)
    kv.free(r)
    assert kv.pool.num_free_blocks == 20 and kv.num_filled_slots == 0


def test_a_full_group_before_a_sliding_one_can_use_the_blocks_the_sliding_one_releases():
    """allocate_slots plans with every group's releases, so it must apply them before any allocation."""
    from kvplan.paging import KVCacheManager, Request
    from kvplan.model import FullAttention, ModelSpec, SlidingWindow
    from kvplan.model.grouping import page_layout

    layout = page_layout(ModelSpec("t", "t", (FullAttention((0,), 1, 8, 8),
                                              SlidingWindow((1,), 1, 8, 8, window_tokens=4)), 2))
    assert [g.attention.kind for g in layout.groups] == ["full", "sliding"]
    kv = KVCacheManager(layout, 8, 2)
    req = Request("a", list(range(8)), 4)
    assert kv.allocate_slots(req, 8) and kv.pool.num_free_blocks == 0  # 4 full + 4 sliding blocks
    req.num_computed_tokens = 8
    req.append_token(100)
    assert kv.allocate_slots(req, 1)  # the full group's new block comes from the sliding group's release
    kv.check_integrity()


# ---- attention kinds own what the allocator asks ---------------------------------------------------

KINDS = [FullAttention((0,), 1, 8, 8), SlidingWindow((0,), 1, 8, 8, window_tokens=5),
         SlidingWindow((0,), 1, 8, 8, window_tokens=1), ChunkedLocal((0,), 1, 8, 8, window_tokens=6)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.describe())
def test_release_position_is_the_first_query_past_the_tokens(kind):
    """release_position(t) is the least p whose query (and every later one) reads nothing before t."""
    for tokens in range(0, 40):
        later = [p for p in range(0, 80) if all(kind.first_needed_position(q) >= tokens for q in range(p, 80))]
        want = later[0] if later and later[0] < 60 else None
        assert kind.release_position(tokens) == want, tokens
    for p in range(60):
        assert kind.first_needed_position(p) <= kind.first_needed_position(p + 1) <= p + 1


def test_a_new_kind_is_paged_by_what_it_says():
    """A kind the manager has never heard of (here: attends to the last two whole blocks of 4) is paged."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class LastTwoBlocks(FullAttention):
        kind = "last-two-blocks"

        def first_needed_position(self, position):
            return max(0, position // 4 * 4 - 4)

        def release_position(self, tokens):
            return cdiv(tokens, 4) * 4 + 4 if tokens else 0

    kv = KVCacheManager(layout(LastTwoBlocks((0,), 1, 8, 8)), 64, 4)
    r = req("a", [1], max_tokens=100)
    compute(kv, r, 1)
    for n in range(2, 40):
        r.output_token_ids.append(n)
        compute(kv, r, 1)
        table = kv.block_tables(r)[0]
        first = max(0, (n - 1) // 4 - 1)  # the query at n - 1 reads blocks first..(n - 1) // 4
        assert table[:first] == [NULL_BLOCK] * first and NULL_BLOCK not in table[first:], n
        kv.check_integrity()


# ---- LazyDecode: the allocator's side of skipping decode steps ----------------------------------------

def _first_real_change(kv, r) -> int:
    """Brute force on copies: decode steps from the next one until allocate_slots does more than write."""
    import copy

    kv, r = copy.deepcopy((kv, r))
    for steps in range(10_000):
        tables = [list(t) for t in kv.block_tables(r)]
        refs = list(kv.pool.ref_cnt)
        r.output_token_ids.append(7)
        assert kv.allocate_slots(r, 1)
        if kv.block_tables(r) != tables or kv.pool.ref_cnt != refs or kv.take_copies():
            return steps
        r.num_computed_tokens += 1
        kv.cache_blocks(r)
    raise AssertionError("no change in 10,000 steps")


@pytest.mark.parametrize("group", [FullAttention((0,), 1, 8, 8), SlidingWindow((0,), 1, 8, 8, window_tokens=7),
                                   ChunkedLocal((0,), 1, 8, 8, window_tokens=12)], ids=lambda g: g.kind)
def test_lazy_decode_steps_until_change_are_exact(group):
    from kvplan.paging import LazyDecode

    kv = KVCacheManager(layout(group, FullAttention((1,), 1, 8, 8)), 200, 4)
    lazy = LazyDecode(kv)
    assert lazy.in_place == (group.kind == "full")
    r = req("a", range(9), max_tokens=1000)
    compute(kv, r, 9)
    for n in range(40):
        steps, truth = lazy.steps_until_change(r), _first_real_change(kv, r)
        assert steps == truth, (n, steps, truth)
        assert lazy.slots_per_decode(r) == 2
        r.output_token_ids.append(n)
        compute(kv, r, 1)
    child = req("b", r.token_ids(0, r.num_computed_tokens) + [5], max_tokens=1000)
    kv.fork(r, child)
    assert lazy.steps_until_change(r) == lazy.steps_until_change(child) == 0  # the shared partial block: a copy


def test_a_key_keeps_its_first_cached_block():
    """Registering a second block under a cached key must not take the key from the first one."""
    pool = BlockPool(4)
    a, b = pool.get_new_blocks(2)
    pool.cache_blocks([a], ["k"], ["c"])
    pool.cache_blocks([b], ["k"], ["c"])
    assert pool.lookup("k", "c") == a and pool.block_key[b] == "k"
    pool.free_blocks([b, a])  # b at the front of the free list: evicted first
    assert pool.get_new_blocks(3)[2] == b and pool.lookup("k", "c") == a  # evicting b leaves a's key
    pool.check_integrity()


def test_two_requests_computing_the_same_prompt_leave_the_first_one_cached():
    kv = KVCacheManager(FULL, 32, 4)
    a, b = req("a", range(9)), req("b", range(9))
    assert kv.allocate_slots(a, 3) and kv.allocate_slots(b, 9)  # a fills no block yet: b finds nothing
    a.num_computed_tokens = 3
    assert kv.allocate_slots(a, 6)  # a fills the blocks b registered first: b's stay the cached ones
    c = req("c", range(9))
    assert kv.allocate_slots(c, 1) and c.num_cached_tokens == 8
    assert kv.block_tables(c)[0][:2] == kv.block_tables(b)[0][:2] != kv.block_tables(a)[0][:2]
