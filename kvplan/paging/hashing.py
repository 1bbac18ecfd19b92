"""Prefix-cache keys of full blocks: each block's tokens, chained to everything before them.

key(block i) = hash((key(i - 1), token ids of block i...)), key(-1) = 0; beside each key the
pool keeps a check value, hash(((token ids of block i...), key(i - 1))), compared on a hit, so a
false hit needs two independent 64-bit hashes to agree (nano-vllm compares the tokens instead,
which would keep every cached block's tokens alive). The check hashes the block's tokens as a
nested tuple, from the hash function's initial state, where the key hashes them flat after the
parent key: different functions of the same tokens, at the cost of one 2-tuple instead of a
second copy of the block. Python's hash of a tuple of ints is not salted per process (only
str/bytes hashes are), so keys are the same in every process and run; they live in memory only.
Two tuple hashes per block cost far less than a cryptographic digest, which keeps the per-token
path cheap (docs/benchmarks/allocator.md).

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
    """Check values of the request's full blocks [first, stop), computed once per request: they and the
    blocks' keys are kept on it (req.block_checks, req.block_hashes)."""
    if len(req.block_checks) < stop:
        extend_checks(req, block_size, stop)
    return req.block_checks[first:stop]


def extend_checks(req: Request, block_size: int, stop: int) -> None:
    """Compute the keys and check values of the request's full blocks up to `stop` that it lacks.
    req.block_checks covers a prefix of req.block_hashes (keys may be given, or copied by a fork)."""
    hashes, checks = req.block_hashes, req.block_checks
    first = len(checks)
    end = min(stop, len(hashes))
    if first < end and hashes[first] >= GIVEN_KEYS:  # given keys lead the list: no token ids for them
        if hashes[end - 1] < GIVEN_KEYS:  # the range runs past them
            end = bisect_left(hashes, True, first, end, key=lambda k: k < GIVEN_KEYS)
        checks += hashes[first:end]
        first = end
        if first == stop:
            return
    tokens = tuple(req.token_ids(first * block_size, stop * block_size))
    parent = hashes[first - 1] if first else ROOT
    keys = []
    key, check = keys.append, checks.append
    n = len(tokens)
    for block in map(tokens.__getitem__, map(slice, range(0, n, block_size), range(block_size, n + 1, block_size))):
        check(hash((block, parent)))
        parent = hash((parent,) + block)  # (parent, *block), by one tuple concatenation
        key(parent)
    hashes[first:stop] = keys  # the same values where already known (given keys lead: none past first)


def block_check(req: Request, block_size: int, i: int) -> int:
    """block_checks(req, block_size, i, i + 1)[0] without the lists (a decode step's full block)."""
    hashes, checks = req.block_hashes, req.block_checks
    if i != len(checks) or i < len(hashes):  # known already, or keys known past the checks
        return block_checks(req, block_size, i, i + 1)[0]
    parent = hashes[i - 1] if i else ROOT
    start = i * block_size - len(req.prompt_token_ids)  # in the output tokens, as decoded blocks are
    block = tuple(req.output_token_ids[start:start + block_size] if start >= 0 else
                  req.token_ids(i * block_size, (i + 1) * block_size))
    hashes.append(hash((parent,) + block))
    check = hash((block, parent))
    checks.append(check)
    return check
