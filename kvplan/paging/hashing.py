"""Stable chained block hashes for prefix caching (the same value in every process and run).

hash(block i) = blake2b-128(hash(block i-1) + token ids of block i as little-endian int64),
hash(block -1) = 16 zero bytes. Python's hash() is salted per process, so it is never used.
"""

from array import array
from hashlib import blake2b

from .request import Request

ROOT_HASH = bytes(16)


def block_hashes(req: Request, block_size: int, num_blocks: int) -> list[bytes]:
    """Extend req.block_hashes (cached on the request) to its first num_blocks full blocks."""
    hashes = req.block_hashes
    start = len(hashes)
    if start < num_blocks:
        step = block_size * 8
        data = array("q", req.token_ids(start * block_size, num_blocks * block_size)).tobytes()
        parent = hashes[-1] if hashes else ROOT_HASH
        for offset in range(0, (num_blocks - start) * step, step):
            parent = blake2b(parent + data[offset:offset + step], digest_size=16).digest()
            hashes.append(parent)
    return hashes
