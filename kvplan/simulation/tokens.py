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
_OFFSETS: list[bytes] = []  # offset -> its 4 bytes, for offsets up to _OFFSETS_CAP (keys are made by the million)
_OFFSETS_CAP = 1 << 16


def _offsets(n: int) -> list[bytes]:
    """The 4-byte forms of offsets 0..n, from the table when n is within it."""
    if n < len(_OFFSETS):
        return _OFFSETS
    if n < _OFFSETS_CAP:
        _OFFSETS.extend(i.to_bytes(4, "little") for i in range(len(_OFFSETS), n + 1))
        return _OFFSETS
    return [i.to_bytes(4, "little") for i in range(n + 1)]


class SegmentedPrompt(Sequence):
    __slots__ = ("_starts", "_firsts", "_identities", "_len")

    def __init__(self, starts: list[int], firsts: list[int], identities: list[bytes], length: int):
        """Segment m covers [starts[m], starts[m + 1]) (the last one up to `length`) with ids firsts[m] + offset;
        starts begin at 0 and increase; a segment holds at most MAX_SEGMENT_TOKENS."""
        if not starts or starts[0] != 0 or length <= starts[-1]:
            raise ValueError("segments must start at 0 and end before the prompt's length")
        self._starts, self._firsts, self._identities, self._len = starts, firsts, identities, length

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
        starts, keys, link = self._starts, [], b""
        end = block_size  # the end of the next full block
        for start, stop, identity in zip(starts, starts[1:] + [self._len], self._identities):
            link = blake2b(link + identity + start.to_bytes(8, "little"), digest_size=12).digest()
            if end <= stop:  # blocks whose last token lies in this segment end at end, end + b, ... <= stop
                keys += map(link.__add__, _offsets(stop - start)[end - start:stop - start + 1:block_size])
                end += (stop - end) // block_size * block_size + block_size
        return keys
