"""Prefix-cache keys of full blocks: each block's tokens, chained to everything before them.

content(block i) = (chain(i - 1), token ids of block i...), chain(i) = hash(content(block i)),
chain(-1) = 0. The prefix cache maps chain values to blocks and keeps each block's content beside
it (BlockPool.lookup compares it), so a hit matches the block's tokens exactly, as nano-vllm
verifies tokens on a hit; only the link to the blocks before is a 64-bit digest. Python's hash of
a tuple of ints is not salted per process (only str/bytes hashes are), so chain values are the
same in every process and run; they live in memory only. A tuple and its hash per block cost far
less than a cryptographic digest per block, which keeps the per-token path cheap
(docs/benchmarks/allocator.md).
"""

from .request import Request

ROOT = 0  # chain value before the first block


def block_contents(req: Request, block_size: int, first: int, stop: int) -> list[tuple]:
    """Contents of the request's full blocks [first, stop); extends req.block_hashes (their chain
    values, cached on the request) as it goes. Needs the chain value of block first - 1."""
    hashes = req.block_hashes
    known = len(hashes)
    tokens = req.token_ids(first * block_size, stop * block_size)
    parent = hashes[first - 1] if first else ROOT
    keys = []
    for i, offset in enumerate(range(0, len(tokens), block_size), first):
        key = (parent, *tokens[offset:offset + block_size])
        parent = hash(key)
        if i >= known:
            hashes.append(parent)
        keys.append(key)
    return keys
