"""BlockPool: a fixed number of KV blocks, their refcounts, the free list and the prefix-cache map.

| invariant                                                                   | checked by        |
|-----------------------------------------------------------------------------|-------------------|
| a block is in the free list  <=>  its refcount is 0                         | check_integrity() |
| free + used == num_blocks                                                   | check_integrity() |
| cached_blocks[key] == b  =>  block_key[b] == key                            | check_integrity() |
| a freed hashed block keeps its key until popped for reuse (lazy eviction)   | get_new_blocks()  |
| a key's first cached block stays the one found while it is cached           | cache_blocks()    |
| lookup finds a block only if its check value equals the asked one           | lookup()          |

Keys are 64-bit digests (paging.hashing); a second, independent digest of the same block (its
check value) is kept beside each cached block and compared on a hit, so a key collision alone is
a miss, not wrong KV.

The free list is an OrderedDict used as an LRU queue: the front is evicted first, a freed block
goes to the back, and a cached free block is revived from anywhere in O(1).
"""

from collections import OrderedDict


class BlockPool:
    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"a block pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.ref_cnt = [0] * num_blocks
        self.block_key: list[object | None] = [None] * num_blocks  # prefix-cache key of a full, immutable block
        self.block_check: list[object | None] = [None] * num_blocks  # second digest of the keyed block (stale once evicted)
        self.cached_blocks: dict[object, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.num_evictions = 0  # cached blocks whose key was dropped because the block was reused

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def free_block_ids(self) -> list[int]:
        """The free list in eviction order (front first)."""
        return list(self._free)

    def get_new_blocks(self, n: int) -> list[int]:
        """Pop n blocks from the front of the free list (evicting their cache keys), refcount 1."""
        if n > len(self._free):
            raise ValueError(f"asked for {n} blocks, {len(self._free)} free")
        popitem, block_key, ref_cnt, cached = self._free.popitem, self.block_key, self.ref_cnt, self.cached_blocks
        blocks = []
        for _ in range(n):
            block, _ = popitem(last=False)
            key = block_key[block]
            if key is not None:  # _evict, inline: this loop is every block a request ever takes
                if cached.get(key) == block:
                    del cached[key]
                block_key[block] = None
                self.num_evictions += 1
            ref_cnt[block] = 1
            blocks.append(block)
        return blocks

    def get_new_block(self) -> int:
        block, _ = self._free.popitem(last=False)
        if self.block_key[block] is not None:
            self._evict(block)
        self.ref_cnt[block] = 1
        return block

    def _evict(self, block: int) -> None:
        key = self.block_key[block]
        if self.cached_blocks.get(key) == block:
            del self.cached_blocks[key]
        self.block_key[block] = None
        self.num_evictions += 1

    def touch(self, block: int) -> bool:
        """Take one more reference; True when the block was free (a cached block revived)."""
        revived = self.ref_cnt[block] == 0
        if revived:
            del self._free[block]
        self.ref_cnt[block] += 1
        return revived

    def free_block(self, block: int) -> bool:
        """Drop one reference; True when the block went back to the free list (at the back)."""
        ref = self.ref_cnt[block] - 1
        if ref < 0:
            raise RuntimeError(f"block {block} freed more often than referenced")
        self.ref_cnt[block] = ref
        if ref == 0:
            self._free[block] = None
            return True
        return False

    def free_blocks(self, blocks) -> list[int]:
        """free_block over `blocks` in order; returns the blocks that went back to the free list."""
        ref_cnt, free = self.ref_cnt, self._free
        freed = []
        for block in blocks:
            ref = ref_cnt[block] - 1
            if ref < 0:
                raise RuntimeError(f"block {block} freed more often than referenced")
            ref_cnt[block] = ref
            if ref == 0:
                free[block] = None
                freed.append(block)
        return freed

    def cache_blocks(self, blocks, keys, checks) -> None:
        """Mark full blocks immutable under their keys; a key's first cached block stays the one found."""
        ref_cnt, block_key, block_check = self.ref_cnt, self.block_key, self.block_check
        setdefault = self.cached_blocks.setdefault
        for block, key, check in zip(blocks, keys, checks):
            if ref_cnt[block] == 0:
                raise RuntimeError(f"block {block} cached while free")
            block_key[block] = key
            block_check[block] = check
            setdefault(key, block)

    def lookup(self, key: object, check: object) -> int | None:
        block = self.cached_blocks.get(key)
        return block if block is not None and self.block_check[block] == check else None

    def is_cached(self, block: int) -> bool:
        return self.block_key[block] is not None

    def check_integrity(self) -> None:
        free = self._free
        if len(free) + self.num_used_blocks != self.num_blocks:
            raise AssertionError("free + used != num_blocks")
        for block, ref in enumerate(self.ref_cnt):
            if ref < 0:
                raise AssertionError(f"block {block} has refcount {ref}")
            if (ref == 0) != (block in free):
                where = "in" if block in free else "not in"
                raise AssertionError(f"block {block}: refcount {ref} but {where} the free list")
        for key, block in self.cached_blocks.items():
            if self.block_key[block] != key:
                raise AssertionError(f"cache key of block {block} does not match the map")
