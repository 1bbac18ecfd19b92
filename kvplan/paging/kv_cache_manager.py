"""KVCacheManager: per-request block tables over one shared BlockPool, prefix caching, copy-on-write.

One block = block_size tokens x G layers (spec.grouping.page_layout). A request holds one block
table per page group; table[i] covers tokens [i*bs, (i+1)*bs). Sliding-window and chunked groups
replace blocks that left the attention span by -1, so positions stay aligned.

| invariant                                                              | where                   |
|------------------------------------------------------------------------|-------------------------|
| refcount of a block == references to it from all block tables          | check_integrity()       |
| a hashed (cached) block is full and never written again                | _write(), integrity     |
| hashes are registered after the forward pass only (no in-flight hits)  | cache_blocks()          |
| a prefix hit covers whole blocks and at most num_tokens - 1 tokens     | get_computed_tokens()   |
| num_filled_slots == slots holding a computed token, over used blocks   | check_integrity()       |
| allocate_slots is all-or-nothing                                       | allocate_slots()        |

Filled slots are physical: a block shared by several requests counts once.
"""

from ..model.grouping import PageLayout
from .block_pool import BlockPool
from .hashing import block_hashes
from .lazy_decode import CHUNKED, FULL, SLIDING, LazyDecodeSupport
from .request import Request

NULL_BLOCK = -1
_KINDS = {"full": FULL, "mla": FULL, "indexed_mla": FULL, "sliding": SLIDING, "chunked": CHUNKED}


class _Blocks:
    __slots__ = ("req", "tables", "first_held", "num_hashed")

    def __init__(self, req: Request, tables: list[list[int]], first_held: list[int], num_hashed: int):
        self.req = req
        self.tables = tables
        self.first_held = first_held  # per group: entries before it are NULL_BLOCK
        self.num_hashed = num_hashed  # leading full blocks already registered in the prefix cache


class KVCacheManager(LazyDecodeSupport):
    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.layout = layout
        self.block_size = block_size
        self.pool = BlockPool(num_blocks)
        self._kinds = []
        for group in layout.groups:
            kind = group.attention.kind
            if kind not in _KINDS:
                raise ValueError(f"page group {group.group_id}: attention kind {kind!r} cannot be paged")
            self._kinds.append((_KINDS[kind], getattr(group.attention, "window_tokens", 0)))
        self.num_groups = len(self._kinds)
        self.all_full = all(k == FULL for k, _ in self._kinds)
        # Sharing a prefix is only sound when every group keeps every token.
        self.enable_prefix_caching = enable_prefix_caching and self.all_full
        self._reqs: dict[str, _Blocks] = {}
        self._filled = [0] * num_blocks
        self.num_filled_slots = 0
        self._copies: list[tuple[int, int]] = []

    # ---- prefix cache -------------------------------------------------------------------------

    def _key(self, group: int, block_hash: bytes):
        return block_hash if self.num_groups == 1 else (group, block_hash)

    def _hit_blocks(self, req: Request) -> list[list[int]]:
        if not self.enable_prefix_caching:
            return [[] for _ in range(self.num_groups)]
        max_blocks = (req.num_tokens - 1) // self.block_size
        hashes = block_hashes(req, self.block_size, max_blocks)
        lookup = self.pool.lookup
        hits: list[list[int]] = [[] for _ in range(self.num_groups)]
        for i in range(max_blocks):
            found = [lookup(self._key(g, hashes[i])) for g in range(self.num_groups)]
            if None in found:
                break
            for g, block in enumerate(found):
                hits[g].append(block)
        return hits

    def get_computed_tokens(self, req: Request) -> int:
        """Tokens a new admission would take from the prefix cache (whole blocks, < num_tokens)."""
        return len(self._hit_blocks(req)[0]) * self.block_size

    def cache_blocks(self, req: Request) -> None:
        """Register the request's newly full computed blocks; call after the forward pass."""
        if not self.enable_prefix_caching:
            return
        st = self._reqs[req.request_id]
        num_full = req.num_computed_tokens // self.block_size
        if num_full <= st.num_hashed:
            return
        hashes = block_hashes(req, self.block_size, num_full)[st.num_hashed:num_full]
        for g, table in enumerate(st.tables):
            keys = hashes if self.num_groups == 1 else [(g, h) for h in hashes]
            self.pool.cache_blocks(table[st.num_hashed:num_full], keys)
        st.num_hashed = num_full

    # ---- allocation ---------------------------------------------------------------------------

    def _first_needed(self, group: int, position: int) -> int:
        """First position a query at `position` (or any later one) attends to in this group."""
        kind, window = self._kinds[group]
        if kind == SLIDING:
            return max(0, position - window + 1)
        if kind == CHUNKED:
            return position // window * window
        return 0

    def allocate_slots(self, req: Request, num_new_tokens: int) -> bool:
        """Cover num_computed + num_new_tokens tokens in every group, or change nothing and say False."""
        bs, pool = self.block_size, self.pool
        st = self._reqs.get(req.request_id)
        hits = None
        if st is None:
            hits = self._hit_blocks(req)
            start = len(hits[0]) * bs
            tables = [[] for _ in range(self.num_groups)]
            first_held = [0] * self.num_groups
        else:
            start = req.num_computed_tokens
            tables, first_held = st.tables, st.first_held
        end = start + num_new_tokens
        last = -(-end // bs)
        available = pool.num_free_blocks
        needed = 0
        plan = []
        for g, table in enumerate(tables):
            held = len(hits[g]) if hits is not None else len(table)
            release_to = min(self._first_needed(g, start) // bs, held)
            for i in range(first_held[g], release_to):
                if table[i] != NULL_BLOCK and pool.ref_cnt[table[i]] == 1:
                    available += 1
            cow = start % bs != 0 and start // bs < held and pool.ref_cnt[table[start // bs]] > 1
            needed += max(0, last - held) + cow
            plan.append((release_to, cow))
        if hits is not None:
            available -= sum(1 for group_hits in hits for b in group_hits if pool.ref_cnt[b] == 0)
        if needed > available:
            return False

        if st is None:
            for g, group_hits in enumerate(hits):
                for block in group_hits:
                    if pool.touch(block):
                        self.num_filled_slots += self._filled[block]
                tables[g].extend(group_hits)
            st = self._reqs[req.request_id] = _Blocks(req, tables, first_held, len(hits[0]))
            req.num_computed_tokens = req.num_cached_tokens = start
        # Every group's releases first: the plan counted them as available to every group.
        for g, table in enumerate(tables):
            release_to = plan[g][0]
            for i in range(first_held[g], release_to):
                if table[i] != NULL_BLOCK:
                    self._free_one(table[i])
                    table[i] = NULL_BLOCK
            first_held[g] = max(first_held[g], release_to)
        for g, table in enumerate(tables):
            cow = plan[g][1]
            if cow:
                i = start // bs
                src = table[i]
                dst = self._new_blocks(1)[0]
                self._filled[dst] = self._filled[src]
                self.num_filled_slots += self._filled[src]
                pool.free_block(src)
                table[i] = dst
                self._copies.append((src, dst))
            if last > len(table):
                table.extend(self._new_blocks(last - len(table)))
            self._write(table, start, end)
        return True

    def _new_blocks(self, n: int) -> list[int]:
        blocks = self.pool.get_new_blocks(n)
        for block in blocks:
            self._filled[block] = 0
        return blocks

    def _write(self, table: list[int], start: int, end: int) -> None:
        bs, filled, block_key = self.block_size, self._filled, self.pool.block_key
        first, last = start // bs, (end - 1) // bs
        for i in range(first, last + 1):
            block = table[i]
            if block_key[block] is not None:
                raise RuntimeError(f"block {block} is cached (immutable) and was about to be written")
            filled[block] += bs if first < i < last else min(end, (i + 1) * bs) - max(start, i * bs)
        self.num_filled_slots += end - start

    def _free_one(self, block: int) -> None:
        if self.pool.free_block(block):
            self.num_filled_slots -= self._filled[block]

    def free(self, req: Request) -> None:
        """Release every block of the request, tail first (so tails are evicted first)."""
        st = self._reqs.pop(req.request_id, None)
        if st is None:
            return
        filled = self._filled
        for table in st.tables:
            freed = self.pool.free_blocks(b for b in reversed(table) if b != NULL_BLOCK)
            self.num_filled_slots -= sum(filled[b] for b in freed)

    def fork(self, parent: Request, child: Request) -> None:
        """Let `child` share every block of `parent` (same computed tokens); writes copy on demand."""
        if child.request_id in self._reqs:
            raise ValueError(f"request {child.request_id} already holds blocks")
        st = self._reqs[parent.request_id]
        n = parent.num_computed_tokens
        if child.token_ids(0, n) != parent.token_ids(0, n):
            raise ValueError(f"fork: {child.request_id} does not share the computed tokens of {parent.request_id}")
        tables = [list(t) for t in st.tables]
        for table in tables:
            for block in table:
                if block != NULL_BLOCK:
                    self.pool.touch(block)
        child.num_computed_tokens = n
        child.block_hashes = parent.block_hashes[:n // self.block_size]
        self._reqs[child.request_id] = _Blocks(child, tables, list(st.first_held), st.num_hashed)

    def take_copies(self) -> list[tuple[int, int]]:
        """(src, dst) block copies the engine applies to every layer of the group before the forward."""
        copies, self._copies = self._copies, []
        return copies

    # ---- queries ------------------------------------------------------------------------------

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
        return self.pool.usage

    @property
    def num_allocated_slots(self) -> int:
        return self.pool.num_used_blocks * self.block_size

    def check_integrity(self) -> None:
        self.pool.check_integrity()
        bs, pool = self.block_size, self.pool
        refs = [0] * pool.num_blocks
        for rid, st in self._reqs.items():
            for g, table in enumerate(st.tables):
                for i, block in enumerate(table):
                    if (block == NULL_BLOCK) != (i < st.first_held[g]):
                        raise AssertionError(f"{rid} group {g}: released slots must form the table's head")
                    if block == NULL_BLOCK:
                        continue
                    refs[block] += 1
                    if pool.block_key[block] is not None and (i + 1) * bs > st.req.num_computed_tokens:
                        raise AssertionError(f"{rid}: cached block {block} lies past the computed tokens")
        filled = 0
        for block, ref in enumerate(pool.ref_cnt):
            if ref != refs[block]:
                raise AssertionError(f"block {block}: refcount {ref}, referenced {refs[block]} times")
            if ref:
                if not 0 <= self._filled[block] <= bs:
                    raise AssertionError(f"block {block} holds {self._filled[block]} tokens")
                if pool.block_key[block] is not None and self._filled[block] != bs:
                    raise AssertionError(f"cached block {block} is not full")
                filled += self._filled[block]
        if filled != self.num_filled_slots:
            raise AssertionError(f"filled slots {self.num_filled_slots} != {filled} counted")
