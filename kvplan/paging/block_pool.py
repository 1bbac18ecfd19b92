"""BlockPool: a fixed number of KV blocks, their refcounts, the free list and the prefix-cache map.

| invariant                                                                   | checked by        |
|-----------------------------------------------------------------------------|-------------------|
| a block is in the free list  <=>  its refcount is 0                         | check_integrity() |
| free + used == num_blocks                                                   | check_integrity() |
| cached_blocks[key] == b  =>  block_key[b] == key                            | check_integrity() |
| a freed hashed block keeps its key until popped for reuse (lazy eviction)   | get_new_blocks()  |
| a key's first cached block stays the one found while it is cached           | cache_blocks()    |
| lookup finds a block only if its check value equals the asked one           | lookup()          |
| a block's stale queue entries all come before its live one                  | check_integrity() |

Keys are 64-bit digests (paging.hashing); a second, independent digest of the same block (its
check value) is kept beside each cached block and compared on a hit, so a key collision alone is
a miss, not wrong KV.

The free list is an LRU queue: the front is evicted first, a freed block goes to the back, and a
cached free block is revived from anywhere. It is a list read from `_head` on, so a request's
blocks leave it as one slice and join it as one extend (per-block work in C, not in a Python
loop). A revived block is not removed from the middle: its entry goes stale (`_stale[b]` counts
a block's stale entries, which precede its live one, if any) and is skipped when the front
reaches it; the queue is compacted when stale or consumed entries outnumber the blocks.
"""

from collections import Counter


class BlockPool:
    __slots__ = ("num_blocks", "ref_cnt", "block_key", "block_check", "cached_blocks", "num_free_blocks",
                 "num_evictions", "evicted", "evicted_base", "_queue", "_head", "_stale", "_num_stale")

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"a block pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref_cnt = [0] * num_blocks
        self.block_key: list[object | None] = [None] * num_blocks  # prefix-cache key of a full, immutable block
        self.block_check: list[object | None] = [None] * num_blocks  # second digest of the keyed block (stale once evicted)
        self.cached_blocks: dict[object, int] = {}
        self.num_free_blocks = num_blocks
        self.num_evictions = 0  # cached blocks whose key was dropped because the block was reused
        self.evicted: list[int] = []  # those blocks, from eviction number evicted_base on
        self.evicted_base = 0
        self._queue = list(range(num_blocks))  # free list entries from _head on, front first; some stale
        self._head = 0
        self._stale = [0] * num_blocks
        self._num_stale = 0

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def free_block_ids(self) -> list[int]:
        """The free list in eviction order (front first)."""
        stale = list(self._stale)
        live = []
        for block in self._queue[self._head:]:
            if stale[block]:
                stale[block] -= 1
            else:
                live.append(block)
        return live

    def get_new_blocks(self, n: int) -> list[int]:
        """Pop n blocks from the front of the free list (evicting their cache keys), refcount 1."""
        if n > self.num_free_blocks:
            raise ValueError(f"asked for {n} blocks, {self.num_free_blocks} free")
        head, queue = self._head, self._queue
        if self._num_stale:
            blocks, self._head = self._pop_live(n)
        else:
            blocks = queue[head:head + n]
            self._head = head + n
        self.num_free_blocks -= n
        block_key, ref_cnt = self.block_key, self.ref_cnt
        keys = [block_key[b] for b in blocks]
        evicted = n - keys.count(None)
        if evicted:
            # Drop each key from the map in C; a key that mapped to another block (cached first) goes back.
            cached = self.cached_blocks
            found = list(map(cached.pop, keys, blocks))
            for b in blocks:
                block_key[b] = None
                ref_cnt[b] = 1
            if found != blocks:
                for key, b, first in zip(keys, blocks, found):
                    if first != b and block_key[first] == key:
                        cached[key] = first
            self._log_evicted(blocks if evicted == n else [b for b, key in zip(blocks, keys) if key is not None],
                              evicted)
        else:
            for b in blocks:
                ref_cnt[b] = 1
        if self._head > self.num_blocks:
            self._compact()
        return blocks

    def get_new_block(self) -> int:
        """get_new_blocks(1)[0], without the lists (a decode step's new block)."""
        head = self._head
        if self._num_stale or not self.num_free_blocks or head >= self.num_blocks:  # skips, errors, compaction
            return self.get_new_blocks(1)[0]
        block = self._queue[head]
        self._head = head + 1
        self.num_free_blocks -= 1
        key = self.block_key[block]
        if key is not None:
            first = self.cached_blocks.pop(key, block)
            if first != block:  # the key's first cached block is another one: it stays
                self.cached_blocks[key] = first
            self.block_key[block] = None
            self.evicted.append(block)  # _log_evicted, inline: the decode step's path
            self.num_evictions += 1
            if len(self.evicted) > self.num_blocks:
                self._log_evicted((), 0)
        self.ref_cnt[block] = 1
        return block

    def _log_evicted(self, blocks, n: int) -> None:
        """Count n evictions and log the blocks; the log is cut when it outgrows the pool."""
        if len(self.evicted) > self.num_blocks:
            self.evicted_base = self.num_evictions
            self.evicted = []
        self.evicted += blocks
        self.num_evictions += n

    def _pop_live(self, n: int) -> tuple[list[int], int]:
        """The first n live entries from the front, skipping (and dropping) stale ones: a slice of as
        many entries as are still wanted is taken whole when none of it is stale (checked in C), and
        walked entry by entry otherwise (a block's stale entries precede its live one, so in order,
        an entry is stale exactly when its block still counts stale entries)."""
        queue, stale, i = self._queue, self._stale, self._head
        blocks: list[int] = []
        while len(blocks) < n:
            want = n - len(blocks)
            chunk = queue[i:i + want]
            i += want
            if not any(map(stale.__getitem__, chunk)):
                blocks += chunk
                continue
            for b in chunk:
                if stale[b]:
                    stale[b] -= 1
                    self._num_stale -= 1
                else:
                    blocks.append(b)
        return blocks, i

    def _compact(self) -> None:
        """Drop consumed and stale entries (amortized: only once they outnumber the blocks)."""
        if self._num_stale:
            self._queue = self.free_block_ids()
            self._stale = [0] * self.num_blocks
            self._num_stale = 0
        else:
            del self._queue[:self._head]
        self._head = 0

    def touch(self, block: int) -> bool:
        """Take one more reference; True when the block was free (a cached block revived)."""
        revived = self.ref_cnt[block] == 0
        if revived:
            self._stale[block] += 1  # its queue entry is skipped from now on
            self._num_stale += 1
            self.num_free_blocks -= 1
            if self._num_stale > self.num_blocks:
                self._compact()
        self.ref_cnt[block] += 1
        return revived

    def touch_blocks(self, blocks: list[int]) -> int:
        """touch over `blocks` (distinct); returns how many were revived."""
        ref_cnt, stale = self.ref_cnt, self._stale
        revived = 0
        for block in blocks:
            ref = ref_cnt[block]
            if not ref:
                stale[block] += 1  # its queue entry is skipped from now on
                revived += 1
            ref_cnt[block] = ref + 1
        if revived:
            self._num_stale += revived
            self.num_free_blocks -= revived
            if self._num_stale > self.num_blocks:
                self._compact()
        return revived

    def free_block(self, block: int) -> bool:
        """Drop one reference; True when the block went back to the free list (at the back)."""
        ref = self.ref_cnt[block] - 1
        if ref < 0:
            raise RuntimeError(f"block {block} freed more often than referenced")
        self.ref_cnt[block] = ref
        if ref == 0:
            self._queue.append(block)
            self.num_free_blocks += 1
            return True
        return False

    def free_blocks(self, blocks) -> list[int]:
        """free_block over `blocks` in order; returns the blocks that went back to the free list."""
        ref_cnt = self.ref_cnt
        freed = []
        for block in blocks:
            ref = ref_cnt[block]
            if ref > 1:  # shared: one reference less
                ref_cnt[block] = ref - 1
            elif ref:
                ref_cnt[block] = 0
                freed.append(block)
            else:
                raise RuntimeError(f"block {block} freed more often than referenced")
        self._queue += freed
        self.num_free_blocks += len(freed)
        return freed

    def cache_blocks(self, blocks: list[int], keys: list, checks: list) -> None:
        """Mark full blocks immutable under their keys; a key's first cached block stays the one found."""
        ref_cnt, block_key, block_check = self.ref_cnt, self.block_key, self.block_check
        setdefault = self.cached_blocks.setdefault
        for block, key, check in zip(blocks, keys, checks):
            if ref_cnt[block] == 0:
                raise RuntimeError(f"block {block} cached while free")
            block_key[block] = key
            block_check[block] = check
            setdefault(key, block)

    def cache_block(self, block: int, key: object, check: object) -> None:
        """cache_blocks of one block."""
        if self.ref_cnt[block] == 0:
            raise RuntimeError(f"block {block} cached while free")
        self.block_key[block] = key
        self.block_check[block] = check
        self.cached_blocks.setdefault(key, block)

    def lookup(self, key: object, check: object) -> int | None:
        block = self.cached_blocks.get(key)
        return block if block is not None and self.block_check[block] == check else None

    def is_cached(self, block: int) -> bool:
        return self.block_key[block] is not None

    def check_integrity(self) -> None:
        if self.ref_cnt.count(0) != self.num_free_blocks:
            raise AssertionError(f"{self.ref_cnt.count(0)} blocks unreferenced, {self.num_free_blocks} free")
        if sum(self._stale) != self._num_stale or self._head > len(self._queue):
            raise AssertionError("stale queue entries miscounted")
        entries = Counter(self._queue[self._head:])
        for block, ref in enumerate(self.ref_cnt):
            if ref < 0:
                raise AssertionError(f"block {block} has refcount {ref}")
            # free <=> refcount 0: one live queue entry, after the block's stale ones
            if entries[block] != self._stale[block] + (ref == 0):
                raise AssertionError(f"block {block}: refcount {ref} but {entries[block]} queue entries, "
                                     f"{self._stale[block]} stale")
        for key, block in self.cached_blocks.items():
            if self.block_key[block] != key:
                raise AssertionError(f"cache key of block {block} does not match the map")
