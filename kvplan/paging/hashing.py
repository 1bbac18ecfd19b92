"""Prefix-cache keys of full blocks: each block's tokens, chained to everything before them.

key(block i) = hash((key(i - 1), token ids of block i...)), key(-1) = 0; beside each key the
pool keeps a check value, hash((~key(i - 1), the same token ids...)), compared on a hit, so a
false hit needs two independent 64-bit hashes to agree (nano-vllm compares the tokens instead,
which would keep every cached block's tokens alive). Python's hash of a tuple of ints is not
salted per process (only str/bytes hashes are), so keys are the same in every process and run;
they live in memory only. Two tuples and their hashes per block cost far less than a
cryptographic digest, which keeps the per-token path cheap (docs/benchmarks/allocator.md).

A caller may fill a request's first block_hashes itself with keys of GIVEN_KEYS or more, derived
from what its tokens are rather than from their ids (kvplan.simulation.tokens: a traced prompt's
ids are never built); they are chained to as to any key. Such a key is its own check value: it is
at least 128 bits, all compared by the pool's map, where a key hashed here has 64.
"""

from bisect import bisect_left

from .request import Request

ROOT = 0  # key before the first block
GIVEN_KEYS = 1 << 128  # keys from this value up were given by the caller (Python's hash() stays below 2**63)


def block_checks(req: Request, block_size: int, first: int, stop: int) -> list[int]:
    """Check values of the request's full blocks [first, stop); extends req.block_hashes (their keys,
    cached on the request) as it goes. Needs the key of block first - 1 (first <= len)."""
    hashes = req.block_hashes
    known = len(hashes)
    checks = []
    end = min(stop, known)
    if first < end and hashes[first] >= GIVEN_KEYS:  # given keys lead the list: no token ids for them
        if hashes[end - 1] < GIVEN_KEYS:  # the range runs past them
            end = bisect_left(hashes, True, first, end, key=lambda k: k < GIVEN_KEYS)
        checks, first = hashes[first:end], end
        if first == stop:
            return checks
    tokens = req.token_ids(first * block_size, stop * block_size)
    parent = hashes[first - 1] if first else ROOT
    for i, offset in enumerate(range(0, len(tokens), block_size), first):
        block = tokens[offset:offset + block_size]
        checks.append(hash((~parent, *block)))
        parent = hash((parent, *block))
        if i >= known:
            hashes.append(parent)
    return checks
