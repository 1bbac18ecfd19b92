"""The longest prefix-cache hit of a new request when page groups attend differently (vLLM v1's hybrid rule).

A hit of i whole blocks lets a request skip computing positions [0, i * block_size). It is valid in
a page group when everything that a query at that position, or at a later one, reads from before it
is cached there:

| group's kind                              | blocks that must be cached              | before them          |
|-------------------------------------------|-----------------------------------------|----------------------|
| keeps every token (full attention, MLA)   | [0, i)                                  | nothing              |
| sliding window W / local chunk C          | [first_needed_position(i * bs) // bs, i) | NULL: never read again |

The hit is the longest i valid in every group. Full-attention validity is downward closed (a
left-to-right scan to the first miss bounds i); a window's is not (a block may have been evicted
while a later one stayed), so each windowed group keeps, per i, the run of cached blocks ending at
i, and the answer is the largest i at or under the bound whose run covers its window in every
group.

Reference: vLLM's HybridKVCacheCoordinator.find_longest_cache_hit (vllm/v1/core/kv_cache_coordinator.py)
lowers a candidate length group by group until no group lowers it, with FullAttentionManager
scanning left to right and SlidingWindowManager right to left for cdiv(W - 1, block_size)
contiguous cached blocks, ChunkedLocalAttentionManager from the current chunk's start
(vllm/v1/core/single_type_kv_cache_manager.py). Every length above that fixed point fails some
group and the fixed point is valid in all, so it is the length computed here.
"""

from collections.abc import Callable

NULL_BLOCK = -1


def longest_hit(max_blocks: int, block_size: int, first_needed: list[Callable[[int], int] | None],
                find: Callable[[int, int], int | None]) -> tuple[int, list[list[int]], list[int]]:
    """The hit in blocks, each group's table head for it (NULL_BLOCK before its window) and the index
    of its first held block.

    first_needed: per group, its kind's first_needed_position, or None when it keeps every token.
    find(group, i): the cached block holding block i of the request in that group, or None.
    """
    full = [g for g, rule in enumerate(first_needed) if rule is None]
    windowed = [g for g, rule in enumerate(first_needed) if rule is not None]
    bound = max_blocks
    if full:
        bound = 0
        while bound < max_blocks and all(find(g, bound) is not None for g in full):
            bound += 1
    runs = {}  # group -> run[i]: cached blocks ending just before block i
    for g in windowed:
        run = [0] * (bound + 1)
        for i in range(bound):
            run[i + 1] = run[i] + 1 if find(g, i) is not None else 0
        runs[g] = run
    hit = bound
    while hit and not all(runs[g][hit] >= hit - first_needed[g](hit * block_size) // block_size for g in windowed):
        hit -= 1
    tables, first_held = [], []
    for g, rule in enumerate(first_needed):
        first = 0 if rule is None else rule(hit * block_size) // block_size
        tables.append([NULL_BLOCK] * first + [find(g, i) for i in range(first, hit)])
        first_held.append(first)
    return hit, tables, first_held
