"""KVCacheManager: per-request block tables over one shared BlockPool, prefix caching, copy-on-write.

One block = block_size tokens x G layers (spec.grouping.page_layout). A request holds one block
table per page group; table[i] covers tokens [i*bs, (i+1)*bs). Sliding-window and chunked groups
replace blocks that left the attention span by -1, so positions stay aligned.

| invariant                                                              | where                   |
|------------------------------------------------------------------------|-------------------------|
| refcount of a block == references to it from all block tables          | check_integrity()       |
| a hashed (cached) block is full and never written again                | _write(), integrity     |
| blocks are registered when allocate_slots covers them (vLLM's rule)   | allocate_slots()        |
| a prefix hit covers whole blocks and at most num_tokens - 1 tokens     | get_computed_tokens()   |
| num_filled_slots == slots holding a computed token, over used blocks   | check_integrity()       |
| a shared block holds the same written positions in every table         | check_integrity()       |
| allocate_slots is all-or-nothing                                       | allocate_slots()        |
| positions in [end, horizon) write one slot per group and nothing else  | _set_fast(), integrity  |

Filled slots are physical: a block shared by several requests counts once. No per-block count is
kept: block i of a table holds min(bs, max(0, end - i*bs)) written positions (`end`: the request's
written tokens), because a table is written left to right, a cached block is full, and a shared
block is never written (it is copied first), so every table holding it sees the same count. So a
request's blocks cost nothing to account when taken or written, and one subtraction when freed.

The per-token path. A decode step usually writes one token into each group's partial last block
(its *tail*): no new block, no copy (the tail is not shared), no release (no window moves past a
block). After every general call the manager records up to which position that stays true (the
*horizon*); a one-token `allocate_slots` at the recorded end below the horizon then only moves the
end. `cache_blocks` likewise returns at once until the next block fills (`hash_at`).

The filled-slot count is read per scheduler step, written per token. So a one-token write moves
only the request's end, which lives in the manager's `_ends` list (one slot per held request), and
num_filled_slots = _filled_rest + num_groups * sum(_ends), a sum in C over the running requests:
every other change to the count goes to `_filled_rest`, and moving an end by d outside the
per-token path takes num_groups * d from it (`_move_end`).
"""

from ..model.grouping import PageLayout
from .block_pool import BlockPool
from .hashing import GIVEN_KEYS, block_check, block_checks, extend_checks
from .prefix_hits import longest_hit
from .request import UNHELD, Request

NULL_BLOCK = -1
_NEVER = 1 << 62
_SCAN_CHUNK_BLOCKS = 16  # lookups per slice when a walk starts afresh (a hit usually runs on)


class _Blocks:
    __slots__ = ("manager", "req", "tables", "first_held", "num_hashed", "hash_at", "slot", "horizon", "tails")

    def __init__(self, manager: "KVCacheManager", req: Request, tables: list[list[int]], first_held: list[int],
                 num_hashed: int):
        self.manager = manager  # the state is found through req.kv_state only by this manager
        self.req = req
        self.tables = tables
        self.first_held = first_held  # per group: entries before it are NULL_BLOCK
        self.num_hashed = num_hashed  # leading full blocks already registered in the prefix cache
        self.hash_at = _NEVER  # computed tokens from which cache_blocks has a block to register
        self.slot = -1  # its end (tokens written, i.e. allocated) is manager._ends[slot]
        self.horizon = 0  # one-token writes at positions below it change nothing but the end
        self.tails: list[int] = []  # per group: the block positions [end, horizon) fall in

    @property
    def end(self) -> int:
        return self.manager._ends[self.slot]


class _Walk:
    """The last prefix walk (_hit): for whom, over how many blocks, the cache generation it saw, its
    result, and the set of its blocks."""
    __slots__ = ("req", "max_blocks", "generation", "result", "blocks")

    def __init__(self, req: Request, max_blocks: int, generation: tuple[int, int], result: tuple):
        self.req, self.max_blocks, self.generation, self.result = req, max_blocks, generation, result
        self.blocks = {b for table in result[1] for b in table} - {NULL_BLOCK}


class KVCacheManager:
    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.layout = layout
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        # What differs per attention kind, asked of the kind once: which positions a query reads.
        kinds = [group.attention for group in layout.groups]
        self._first_needed = [kind.first_needed_position for kind in kinds]
        self._release_position = [kind.release_position for kind in kinds]
        self._windowed = [g for g, kind in enumerate(kinds) if kind.release_position(1) is not None]
        self.num_groups = len(kinds)
        self.keeps_every_token = not self._windowed
        self._one_table = self.num_groups == 1 and self.keeps_every_token  # no group keys, no released entries
        self._hit_rules = [self._first_needed[g] if g in self._windowed else None for g in range(self.num_groups)]
        self.growth_blocks = self.num_groups  # pool blocks taken when a request's tables grow by one block
        self.enable_prefix_caching = enable_prefix_caching
        self._reqs: dict[str, _Blocks] = {}
        self._ends: list[int] = []  # per slot: the end of the request in it (0 when free)
        self._free_slots: list[int] = []
        self._filled_rest = 0  # num_filled_slots - num_groups * sum(_ends)
        self._copies: list[tuple[int, int]] = []
        # The last prefix walk (request, blocks walked, cache generation, result): the head of the
        # waiting queue is walked once to price its admission, again to admit it, and again each
        # step while the pool is full; _hit takes the last walk up again while it is still valid.
        self._walked: _Walk | None = None

    # ---- prefix cache -------------------------------------------------------------------------

    def _hit(self, req: Request) -> tuple[int, list[list[int]], list[int]]:
        """The longest prefix hit valid in every group (prefix_hits): its blocks, the groups' table
        heads (NULL_BLOCK before a window) and first held indexes (read-only: kept for the next call)."""
        if not self.enable_prefix_caching:
            return 0, [[] for _ in range(self.num_groups)], [0] * self.num_groups
        pool, max_blocks = self.pool, (req.num_tokens - 1) // self.block_size
        # The lookups' answers change only when a key is evicted or a new key is mapped.
        generation = (pool.num_evictions, len(pool.cached_blocks))
        walk = self._walked
        if walk is not None and walk.req is req and walk.max_blocks == max_blocks:
            if walk.generation == generation:
                return walk.result
            if self.keeps_every_token and self._still_found(walk):
                # Every block found is still found, and a new key only adds: the run from the first
                # block can only have grown, from where it ended.
                tables = walk.result[1]
                held = len(tables[0])
                self._scan(req, max_blocks, tables, 1)
                for table in tables:
                    walk.blocks.update(table[held:])
                walk.generation, walk.result = generation, (len(tables[0]), tables, walk.result[2])
                return walk.result
        if self.keeps_every_token:
            tables = [[] for _ in range(self.num_groups)]
            self._scan(req, max_blocks, tables, _SCAN_CHUNK_BLOCKS)
            result = (len(tables[0]), tables, [0] * self.num_groups)
        else:  # with windows a hit is not a run from the first block
            bs, lookup, hashes, checks = self.block_size, pool.lookup, req.block_hashes, req.block_checks
            one = self.num_groups == 1

            def find(group: int, i: int) -> int | None:
                if len(checks) <= i:  # a few blocks at a time: most lookups stop at the first
                    extend_checks(req, bs, min(max_blocks, 2 * i + 1))
                return lookup(hashes[i] if one else (group, hashes[i]), checks[i])

            result = longest_hit(max_blocks, bs, self._hit_rules, find)
        self._walked = _Walk(req, max_blocks, generation, result)
        return result

    def _still_found(self, walk: "_Walk") -> bool:
        """Whether the walk's blocks are all still cached: none is in the pool's log of evicted blocks
        since the walk (a block keeps its key and stays the one its key finds until it is evicted), or,
        when the log was cut since, each group's lookups still find them (in C)."""
        pool = self.pool
        since = walk.generation[0] - pool.evicted_base
        if since >= 0:
            return walk.blocks.isdisjoint(pool.evicted[since:])
        req, tables = walk.req, walk.result[1]
        get, block_check = pool.cached_blocks.get, pool.block_check
        n = len(tables[0])
        keys, checks = req.block_hashes[:n], req.block_checks[:n]
        for g, table in enumerate(tables):
            if (list(map(get, keys if self._one_table else [(g, k) for k in keys])) != table
                    or [block_check[b] for b in table] != checks):
                return False
        return True

    def hit_kept(self, req: Request, taken: list[int]) -> bool:
        """Whether the prefix hit that req's last walk found survives blocks `taken` from the free list
        (False when the last walk was another request's: unknown)."""
        walk = self._walked
        if walk is None or walk.req is not req:
            return not self.enable_prefix_caching
        return walk.blocks.isdisjoint(taken)

    def _scan(self, req: Request, max_blocks: int, tables: list[list[int]], chunk: int) -> None:
        """Extend `tables` (per group, blocks of a cached run from the first block, equally long) to
        the longest such run below max_blocks: lookups in C over `chunk` blocks at a time, doubling
        while all are found; keys and checks are computed as far as looked (hashing, for a request
        whose keys were not given, only up to twice its hit)."""
        bs, pool = self.block_size, self.pool
        get, block_check = pool.cached_blocks.get, pool.block_check
        hashes, checks = req.block_hashes, req.block_checks
        hit = len(tables[0])
        while hit < max_blocks:
            stop = n = min(max_blocks, hit + max(chunk, hit if len(hashes) <= hit else 0))
            chunk *= 2
            if len(checks) < n:
                extend_checks(req, bs, n)
            found = []
            for g in range(self.num_groups):
                keys = hashes[hit:stop] if self._one_table else [(g, k) for k in hashes[hit:stop]]
                blocks = list(map(get, keys))
                if None in blocks:
                    blocks = blocks[:blocks.index(None)]
                # A given key is its own check (paging.hashing), compared whole by the map: only
                # hashed keys, which follow the given ones, need their checks compared.
                if (blocks and hashes[hit + len(blocks) - 1] < GIVEN_KEYS
                        and [block_check[b] for b in blocks] != checks[hit:hit + len(blocks)]):
                    blocks = blocks[:next(i for i, (b, c) in enumerate(zip(blocks, checks[hit:]))
                                          if block_check[b] != c)]
                stop = hit + len(blocks)
                found.append(blocks)
            for table, blocks in zip(tables, found):
                table += blocks[:stop - hit]
            if stop < n:
                return
            hit = stop

    def get_computed_tokens(self, req: Request) -> int:
        """Tokens a new admission would take from the prefix cache (whole blocks, < num_tokens)."""
        return self._hit(req)[0] * self.block_size

    def cache_blocks(self, req: Request, num_tokens: int | None = None) -> None:
        """Register the request's blocks full within its first num_tokens tokens (default: its
        computed ones) that are not registered yet."""
        st = req.kv_state
        if st.manager is not self:
            st = self._reqs[req.request_id]
        if num_tokens is None:
            num_tokens = req.num_computed_tokens
        if num_tokens >= st.hash_at:
            self._register(st, req, min(num_tokens, req.num_tokens))  # slots past the known tokens: no key

    def _register(self, st: "_Blocks", req: Request, num_tokens: int) -> None:
        """cache_blocks for num_tokens (at least st.hash_at, at most req.num_tokens)."""
        bs, first = self.block_size, st.num_hashed
        num_full = num_tokens // bs
        st.num_hashed = num_full
        st.hash_at = (num_full + 1) * bs
        if self._one_table:
            if num_full == first + 1:  # a decode step filled one block
                check = block_check(req, bs, first)
                self.pool.cache_block(st.tables[0][first], req.block_hashes[first], check)
            else:
                checks = block_checks(req, bs, first, num_full)
                self.pool.cache_blocks(st.tables[0][first:num_full], req.block_hashes[first:num_full], checks)
            return
        checks = block_checks(req, bs, first, num_full)
        keys = req.block_hashes[first:num_full]
        for g, table in enumerate(st.tables):
            blocks, group_keys, group_checks = table[first:num_full], keys, checks
            if self.num_groups > 1:
                group_keys = [(g, k) for k in keys]
            if NULL_BLOCK in blocks:  # released by a window before it was registered: nothing to cache
                held = [i for i, b in enumerate(blocks) if b != NULL_BLOCK]
                blocks, group_keys, group_checks = ([x[i] for i in held] for x in (blocks, group_keys, checks))
            self.pool.cache_blocks(blocks, group_keys, group_checks)

    # ---- allocation ---------------------------------------------------------------------------

    def allocate_slots(self, req: Request, num_new_tokens: int) -> bool:
        """Cover num_computed + num_new_tokens tokens in every group, or change nothing and say False.

        Blocks full once these tokens are computed are registered in the prefix cache now, before
        the forward pass that computes them, as vLLM does: a request admitted later in the same step
        hits them (the engine stores the whole batch's K/V before any attention of a layer reads it).
        A request preempted in a step was not scheduled earlier in it (victims come from the back of
        the running queue, scheduled front first), so no registered block goes unwritten."""
        st = req.kv_state
        if st.manager is not self:
            st = self._reqs.get(req.request_id)
            if st is None:
                if not self._admit(req, num_new_tokens):
                    return False
                self.cache_blocks(req, req.num_computed_tokens + num_new_tokens)
                return True
        # The one-token paths register without the cap at req.num_tokens: a decode slot is the
        # position of a token the request holds.
        start, ends = req.num_computed_tokens, self._ends
        end = start + num_new_tokens
        if num_new_tokens == 1 and start == ends[st.slot]:
            if start < st.horizon:  # one token into the tails (counted by its end)
                ends[st.slot] = end
                if end >= st.hash_at:  # it fills the tail
                    self._register(st, req, end)
                return True
            if self.keeps_every_token and start == len(st.tables[0]) * self.block_size:
                # Into a new block, without windows: one more block per group, nothing to release or copy.
                if self.growth_blocks > self.pool.num_free_blocks:
                    return False
                tails = st.tails = self._take_each(st)
                for table, block in zip(st.tables, tails):
                    table.append(block)
                ends[st.slot] = end  # its slot in every group: counted by the end
                st.horizon = start + self.block_size
                if end >= st.hash_at:  # blocks of one token
                    self._register(st, req, end)
                return True
        if not self._extend(st, start, num_new_tokens):
            return False
        if end >= st.hash_at:
            self._register(st, req, min(end, req.num_tokens))
        return True

    def _admit(self, req: Request, num_new_tokens: int) -> bool:
        """A new request: take its prefix hit, then blocks for the rest of the chunk."""
        bs, pool = self.block_size, self.pool
        hit, tables, first_held = self._hit(req)
        start = hit * bs
        needed = (-(-(start + num_new_tokens) // bs) - hit) * self.num_groups
        if needed > pool.num_free_blocks:  # the head of a full pool's queue, every step: no count needed
            return False
        if self._one_table:
            hit_blocks = tables[0]
        else:
            hit_blocks = [b for table in tables for b in table if b != NULL_BLOCK]
        ref_cnt = pool.ref_cnt
        revived = [ref_cnt[b] for b in hit_blocks].count(0)  # they leave the free list
        if needed + revived > pool.num_free_blocks:
            return False
        self._filled_rest += bs * pool.touch_blocks(hit_blocks)  # a cached block is full
        tables, first_held = [list(t) for t in tables], list(first_held)  # _hit's are read-only
        st = self._track(_Blocks(self, req, tables, first_held, hit))
        if self.enable_prefix_caching:
            st.hash_at = (hit + 1) * bs
        req.num_computed_tokens = req.num_cached_tokens = start
        self._grow_and_write(st, start, start + num_new_tokens)
        return True

    def _track(self, st: "_Blocks") -> "_Blocks":
        self._reqs[st.req.request_id] = st.req.kv_state = st
        if self._free_slots:
            st.slot = self._free_slots.pop()
        else:
            st.slot = len(self._ends)
            self._ends.append(0)
        return st

    def _extend(self, st: "_Blocks", start: int, num_new_tokens: int) -> bool:
        """A running request: release what left a window, copy a shared block it writes, grow."""
        bs, ref_cnt = self.block_size, self.pool.ref_cnt
        tables, first_held = st.tables, st.first_held
        held = len(tables[0])  # every table covers the same positions
        needed = max(0, -(-(start + num_new_tokens) // bs) - held) * self.num_groups
        cows = []  # groups whose shared partial block is about to be written: copy it first
        if start % bs and start // bs < held:
            cows = [g for g, table in enumerate(tables) if ref_cnt[table[start // bs]] > 1]
            needed += len(cows)
        releases = []  # (group, entries before this index are released)
        for g in self._windowed:
            release_to = min(self._first_needed[g](start) // bs, held)
            if release_to > first_held[g]:
                releases.append((g, release_to))
                needed -= sum(1 for b in tables[g][first_held[g]:release_to] if b != NULL_BLOCK and ref_cnt[b] == 1)
        if needed > 0 and not self._room(needed):
            return False
        # Every group's releases first: the plan counted them as available to every group.
        for g, release_to in releases:
            table = tables[g]
            for i in range(first_held[g], release_to):
                if table[i] != NULL_BLOCK:
                    self._release(st, g, table[i])
                    table[i] = NULL_BLOCK
            first_held[g] = release_to
        for g in cows:
            table, i = tables[g], start // bs
            src = table[i]
            dst = self._take(st, g, 1)[0]
            self._filled_rest += start - i * bs  # the copy's positions; src keeps its own
            self.pool.free_block(src)
            table[i] = dst
            self._copies.append((src, dst))
        self._grow_and_write(st, start, start + num_new_tokens)
        return True

    def _grow_and_write(self, st: "_Blocks", start: int, end: int) -> None:
        last = -(-end // self.block_size)
        for g, table in enumerate(st.tables):
            if last > len(table):
                table.extend(self._take(st, g, last - len(table)))
            self._write(table, start, end)
        self._set_fast(st, end)

    def _set_fast(self, st: "_Blocks", end: int) -> None:
        """Record that `end` tokens are written and accounted, and the horizon of plain one-token writes:
        the next block boundary, the first position whose query frees a block, or `end` itself when a
        tail is shared (its next write copies it)."""
        bs = self.block_size
        self._move_end(st, end)
        tables = st.tables
        horizon = len(tables[0]) * bs
        if end < horizon:
            tails = st.tails = [table[end // bs] for table in tables]
            ref_cnt = self.pool.ref_cnt
            for block in tails:
                if ref_cnt[block] > 1:
                    horizon = end
            for g in self._windowed:
                horizon = min(horizon, self._release_position[g]((st.first_held[g] + 1) * bs))
        st.horizon = horizon

    def _move_end(self, st: "_Blocks", end: int) -> None:
        """Set the request's end, its written positions counted where the caller counted them."""
        ends = self._ends
        self._filled_rest -= self.num_groups * (end - ends[st.slot])
        ends[st.slot] = end

    @property
    def num_filled_slots(self) -> int:
        """Slots holding a written token, over used blocks (a shared block counts once)."""
        return self._filled_rest + self.num_groups * sum(self._ends)

    # Where blocks come from and go: the free list here; a reservation in the contiguous baseline.

    def _room(self, num_blocks: int) -> bool:
        """Whether a running request may take num_blocks more blocks (after its own releases)."""
        return num_blocks <= self.pool.num_free_blocks

    def _take(self, st: "_Blocks", group: int, n: int) -> list[int]:
        return self.pool.get_new_blocks(n)

    def _take_each(self, st: "_Blocks") -> list[int]:
        """One new block per group (_take's hot case, in one call)."""
        if self.num_groups > 1:
            return self.pool.get_new_blocks(self.num_groups)
        return [self.pool.get_new_block()]

    def _release(self, st: "_Blocks", group: int, block: int) -> None:
        """A block that left the group's attention span (it lies before the written end: full)."""
        if self.pool.free_block(block):
            self._filled_rest -= self.block_size

    def _reserved_blocks(self):
        """Blocks held by requests outside their tables (none here)."""
        return ()

    def _write(self, table: list[int], start: int, end: int) -> None:
        """Count positions [start, end) as written. Blocks after the first one hold nothing yet (just
        taken, or appended ahead of lazy writes), and cached blocks form a table's head, so only the
        first block can be a cached one."""
        if end <= start:
            return
        block = table[start // self.block_size]
        if self.pool.block_key[block] is not None:
            raise RuntimeError(f"block {block} is cached (immutable) and was about to be written")
        self._filled_rest += end - start

    def free(self, req: Request) -> None:
        """Release every block of the request, tail first (so tails are evicted first)."""
        st = self._reqs.pop(req.request_id, None)
        if st is None:
            return
        st.req.kv_state = UNHELD
        bs, end = self.block_size, st.end
        for g, table in enumerate(st.tables):
            first = st.first_held[g]
            held = table[:first - 1:-1] if first else table[::-1]
            freed = self.pool.free_blocks(held)
            if len(freed) == len(held):  # none shared: every written position from the first held block
                self._filled_rest -= max(0, end - first * bs)
            elif freed:  # full blocks, but those from end // bs on hold fewer (a table holds a block once)
                filled = bs * len(freed)
                for i in range(max(first, end // bs), len(table)):
                    if table[i] in freed:
                        filled -= bs - min(bs, max(0, end - i * bs))
                self._filled_rest -= filled
        self._move_end(st, 0)  # its positions left the count above
        self._free_slots.append(st.slot)

    def fork(self, parent: Request, child: Request) -> None:
        """Let `child` share every block of `parent` (same computed tokens); writes copy on demand."""
        if child.request_id in self._reqs:
            raise ValueError(f"request {child.request_id} already holds blocks")
        st = self._reqs[parent.request_id]
        n = parent.num_computed_tokens
        if child.token_ids(0, n) != parent.token_ids(0, n):
            raise ValueError(f"fork: {child.request_id} does not share the computed tokens of {parent.request_id}")
        if st.end != n:
            raise ValueError(f"fork: {parent.request_id} has allocated tokens it has not computed")
        tables = [list(t) for t in st.tables]
        self.pool.touch_blocks([b for table in tables for b in table if b != NULL_BLOCK])  # all held: none revived
        child.num_computed_tokens = n
        child.block_hashes = parent.block_hashes[:n // self.block_size]
        child.block_checks = parent.block_checks[:n // self.block_size]
        cst = self._track(_Blocks(self, child, tables, list(st.first_held), st.num_hashed))
        cst.hash_at = st.hash_at
        for shared in (st, cst):  # their tails are shared now: the next write copies
            self._set_fast(shared, n)

    def take_copies(self) -> list[tuple[int, int]]:
        """(src, dst) block copies the engine applies to every layer of the group before the forward."""
        copies, self._copies = self._copies, []
        return copies

    # ---- advancing decodes without stepping them (kvplan.paging.lazy_decode) --------------------

    def slots_per_decode(self, req: Request) -> int:
        """Filled slots one decoded token adds: one per group."""
        return self.num_groups

    def decode_steps(self, req: Request) -> int:
        """Single-token steps, from the next one, that only write a slot: no new block, copy or release."""
        st = self._reqs[req.request_id]
        n = req.num_computed_tokens
        return max(0, st.horizon - n) if n == st.end else 0

    def blocks_needed(self, req: Request, num_new_tokens: int) -> int:
        """Blocks allocate_slots would pop from the free list for a running request (no releases counted)."""
        st = self._reqs[req.request_id]
        bs, start = self.block_size, req.num_computed_tokens
        needed = max(0, -(-(start + num_new_tokens) // bs) - len(st.tables[0])) * self.num_groups
        if start % bs:
            needed += sum(self.pool.ref_cnt[t[start // bs]] > 1 for t in st.tables)
        return needed

    def append_block(self, req: Request) -> list[int]:
        """Give every table of a lazily advanced request its next block, ahead of its writes; returns them."""
        st = self._reqs[req.request_id]
        blocks = self._take_each(st)
        for table, block in zip(st.tables, blocks):
            table.append(block)
        st.horizon = 0  # the lazy writes are accounted by catch_up, which sets the horizon again
        return blocks

    def append_blocks(self, reqs: list[Request]) -> list[int]:
        """append_block for each request in turn, the blocks popped in one go (the same blocks); returns them."""
        groups, get = self.num_groups, self._reqs.__getitem__
        blocks = self.pool.get_new_blocks(len(reqs) * groups)
        if groups == 1:
            for req, block in zip(reqs, blocks):
                st = get(req.request_id)
                st.tables[0].append(block)
                st.horizon = 0
            return blocks
        for i, req in enumerate(reqs):
            st = get(req.request_id)
            for table, block in zip(st.tables, blocks[i * groups:(i + 1) * groups]):
                table.append(block)
            st.horizon = 0
        return blocks

    def catch_up(self, req: Request, num_tokens: int) -> None:
        """Account num_tokens decode writes past num_computed_tokens into blocks already held."""
        st = self._reqs[req.request_id]
        start = req.num_computed_tokens
        for table in st.tables:
            if len(table) * self.block_size < start + num_tokens:
                raise RuntimeError(f"{req.request_id}: lazy tokens past the allocated blocks")
            self._write(table, start, start + num_tokens)
        self._set_fast(st, start + num_tokens)

    # ---- queries ------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks a new request may take (the contiguous baseline leaves out its reservations)."""
        return self.pool.num_free_blocks

    @property
    def num_used_blocks(self) -> int:
        """Blocks held or reserved."""
        return self.pool.num_used_blocks

    def block_tables(self, req: Request) -> list[list[int]]:
        """One table per page group (live lists: read, do not modify)."""
        return self._reqs[req.request_id].tables

    def num_blocks_held(self, req: Request) -> int:
        st = self._reqs.get(req.request_id)
        if st is None:
            return 0
        return sum(len(t) - f for t, f in zip(st.tables, st.first_held))

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.pool.num_blocks

    @property
    def num_allocated_slots(self) -> int:
        return self.num_used_blocks * self.block_size

    def check_integrity(self) -> None:
        self.pool.check_integrity()
        bs, pool = self.block_size, self.pool
        slots = [st.slot for st in self._reqs.values()] + self._free_slots
        if sorted(slots) != list(range(len(self._ends))) or any(self._ends[s] for s in self._free_slots):
            raise AssertionError("end slots: each held request one, free ones 0")
        for st in self._reqs.values():
            if st.horizon > st.end and any(pool.ref_cnt[b] > 1 or pool.block_key[b] is not None for b in st.tails):
                raise AssertionError(f"{st.req.request_id}: a tail written in place is shared or cached")
        refs = [0] * pool.num_blocks
        written = [None] * pool.num_blocks  # positions written into each block, from the requests' ends
        for block in self._reserved_blocks():
            refs[block] += 1
        for rid, st in self._reqs.items():
            for g, table in enumerate(st.tables):
                for i, block in enumerate(table):
                    if (block == NULL_BLOCK) != (i < st.first_held[g]):
                        raise AssertionError(f"{rid} group {g}: released slots must form the table's head")
                    if block == NULL_BLOCK:
                        continue
                    refs[block] += 1
                    here = min(bs, max(0, st.end - i * bs))
                    if written[block] is not None and written[block] != here:
                        raise AssertionError(f"block {block} holds {written[block]} written positions in one table, "
                                             f"{here} in {rid}'s")
                    written[block] = here
                    if pool.block_key[block] is not None and (i + 1) * bs > st.req.num_computed_tokens:
                        raise AssertionError(f"{rid}: cached block {block} lies past the computed tokens")
        filled = 0
        for block, ref in enumerate(pool.ref_cnt):
            if ref != refs[block]:
                raise AssertionError(f"block {block}: refcount {ref}, referenced {refs[block]} times")
            if ref and written[block] is not None:
                if pool.block_key[block] is not None and written[block] != bs:
                    raise AssertionError(f"cached block {block} is not full")
                filled += written[block]
        if filled != self.num_filled_slots:
            raise AssertionError(f"filled slots {self.num_filled_slots} != {filled} counted")
