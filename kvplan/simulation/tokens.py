"""A simulated prompt as segments of consecutive token ids, never as a list of ids; and the prefix-cache
keys of its full blocks, derived from the segments instead of hashed from the ids.

A segment is a run of tokens [start, start + length) whose ids are `first_id + offset`, and which has
an *identity* (bytes) that determines those ids: a group's shared prefix, a request's own prompt, one
block of a Mooncake trace (its hash id and length). Two prompts hold the same tokens up to position e
exactly when they have the same segments, with the same identities and starts, up to e. So the key
of the full block ending at e (block size b, e a multiple of b) is

    key = 2**128 + link(segment m) * 2**32 + (e - start_m),     m: the segment holding token e - 1
    link(segment m) = blake2b-96(link(m - 1) + identity_m + start_m),   link(-1) = b""

Equal keys mean equal token prefixes, at any block size b, whether the block lies in one segment or
straddles several (a block that straddles a segment two prompts do not share gets a different link).
Building a key costs one integer addition, whatever b is: a 12,000-token Mooncake prompt gets its
750 keys without its 12,000 ids ever being made. The ids themselves are made only for slices the
allocator asks for (the block where the prompt ends and the outputs begin), through __getitem__.

A sequence's outputs are one more segment (identity: the sequence's number; its ids are
workload.output_tokens of it, which no other sequence holds), so the simulator hands the allocator
keys up to the end of the sequence and no block's ids are hashed.

The allocator takes the keys as the request's first `block_hashes`: kvplan.paging.hashing extends them
from token ids past them (a forked sample's own outputs), chained to the last one, and takes a key of
2**128 or more (its own keys are Python hashes, below 2**63) as its own check value, since the pool's
map compares all its bits. Keys and ids agree on what is shared, so a manager that hashed the ids instead would find the
same hits (tests/test_simulate_traces.py).
"""

from bisect import bisect_right
from collections.abc import Sequence
from hashlib import blake2b

from ..paging.hashing import GIVEN_KEYS

MAX_SEGMENT_TOKENS = (1 << 32) - 1  # offsets take the low 32 bits of a key


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

    def block_keys(self, block_size: int, tail: tuple[bytes, int] | None = None) -> list[int]:
        """Keys of the full blocks, [0, len // block_size); with `tail` (identity, tokens), of the full
        blocks of the prompt followed by one more segment: a sequence's own outputs, which no other
        sequence's tokens equal, so their blocks get keys without their ids being hashed."""
        starts, keys, link = self._starts, [], b""
        spans = list(zip(starts, starts[1:] + [self._len], self._identities))
        if tail is not None and tail[1] > 0:
            spans.append((self._len, self._len + tail[1], tail[0]))
        end = block_size  # the end of the next full block
        for start, stop, identity in spans:
            link = blake2b(link + identity + start.to_bytes(8, "little"), digest_size=12).digest()
            if end <= stop:  # blocks whose last token lies in this segment end at end, end + b, ... <= stop
                base = GIVEN_KEYS + (int.from_bytes(link, "little") << 32) - start
                keys += range(base + end, base + stop + 1, block_size)
                end += (stop - end) // block_size * block_size + block_size
        return keys
