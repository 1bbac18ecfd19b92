"""A simulated prompt as segments of consecutive token ids, never as a list of ids; and the prefix-cache
keys of its full blocks, derived from the segments instead of hashed from the ids.

A segment is a run of tokens [start, start + length) whose ids are `first_id + offset`, and which has
an *identity* (bytes) that determines those ids: a group's shared prefix, a request's own prompt, one
block of a Mooncake trace (its hash id and length). Two prompts hold the same tokens up to position e
exactly when they have the same segments, with the same identities and starts, up to e. So the key
of the full block ending at e (block size b, e a multiple of b) is

    key = link(segment m) + (e - start_m) as 4 bytes,       m: the segment holding token e - 1
    link(segment m) = blake2b-96(link(m - 1) + identity_m + start_m),   link(-1) = b""

Equal keys mean equal token prefixes, at any block size b, whether the block lies in one segment or
straddles several (a block that straddles a segment two prompts do not share gets a different link).
Building a key costs one bytes concatenation, whatever b is: a 12,000-token Mooncake prompt gets its
750 keys without its 12,000 ids ever being made. The ids themselves are made only for slices the
allocator asks for (the block where the prompt ends and the outputs begin), through __getitem__.

The allocator takes the keys as the request's first `block_hashes` (kvplan.paging.hashing extends them
from token ids past the prompt, chained to the last one); keys and ids agree on what is shared, so a
manager that hashed the ids instead would find the same hits (tests/test_simulate_traces.py).
"""

from bisect import bisect_right
from collections.abc import Sequence
from hashlib import blake2b

MAX_SEGMENT_TOKENS = (1 << 32) - 1  # offsets are 4 bytes in a key


class SegmentedPrompt(Sequence):
    __slots__ = ("_starts", "_firsts", "_links", "_len")

    def __init__(self, segments: list[tuple[int, int, bytes]]):
        """`segments`: (length, first_id, identity) in order; lengths >= 1."""
        starts, firsts, links = [], [], []
        position, link = 0, b""
        for length, first_id, identity in segments:
            if not 1 <= length <= MAX_SEGMENT_TOKENS:
                raise ValueError(f"segment of {length} tokens")
            link = blake2b(link + identity + position.to_bytes(8, "little"), digest_size=12).digest()
            starts.append(position)
            firsts.append(first_id)
            links.append(link)
            position += length
        if not position:
            raise ValueError("an empty prompt")
        self._starts, self._firsts, self._links, self._len = starts, firsts, links, position

    def __len__(self) -> int:
        return self._len

    def _ids(self, start: int, stop: int) -> list[int]:
        starts, firsts = self._starts, self._firsts
        m = bisect_right(starts, start) - 1
        ids: list[int] = []
        while start < stop:
            end = starts[m + 1] if m + 1 < len(starts) else self._len
            end = min(end, stop)
            first = firsts[m] - starts[m]
            ids.extend(range(first + start, first + end))
            start, m = end, m + 1
        return ids

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            ids = self._ids(start, stop) if start < stop else []
            return ids if step == 1 else ids[::step]
        i = index + self._len if index < 0 else index
        if not 0 <= i < self._len:
            raise IndexError("prompt index out of range")
        return self._ids(i, i + 1)[0]

    def __iter__(self):
        return iter(self._ids(0, self._len))

    def __add__(self, other: list) -> list:
        return self._ids(0, self._len) + list(other)

    def __repr__(self) -> str:
        return f"SegmentedPrompt({self._len} tokens in {len(self._starts)} segments)"

    def block_keys(self, block_size: int) -> list[bytes]:
        """Keys of the full blocks, [0, len // block_size)."""
        starts, links = self._starts, self._links
        keys = []
        m, last = 0, len(starts) - 1
        for end in range(block_size, self._len + 1, block_size):
            while m < last and starts[m + 1] < end:  # token end - 1 lies in segment m
                m += 1
            keys.append(links[m] + (end - starts[m]).to_bytes(4, "little"))
        return keys
