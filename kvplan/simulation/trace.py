"""A trace file replayed as a workload: its format detected from the first line, read as a stream
(kvplan.inputs.read_lines: regular files only, bounded lines) with the line number in every error.

Formats and their columns: trace_formats.py. kvplan's own JSONL, one request per line:

    {"prompt_len": 1200, "output_len": 300, "arrival": 0.5, "prefix_group": "sys-a", "prefix_len": 1000}
    {"prompt": [1, 2, 3, 4], "output_len": 16, "arrival": 0.75, "n": 2}

Blank lines are skipped. Arrivals must not go back in kvplan's format (an error: sort the file); in
the other formats a request stamped earlier than the one before it is replayed at that one's
arrival and counted (`reordered_requests`), as its arrival must come after the requests already sent.
The other formats' time counts from the first replayed request (a slice of a day-long trace does
not start with hours of idle time; the origin is noted). `speed` divides every arrival time (2:
twice the request rate); `limit` replays the first N requests. A compressed file is refused by
its magic bytes, with what to run: the readers take text.
"""

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from ..inputs import TRACE, open_regular, read_lines
from .trace_formats import MOONCAKE_BLOCK_TOKENS, MooncakeRows, detect
from .workload import MAX_TRACE_BLOCK_TOKENS

MAX_TRACE_REQUESTS = 1 << 30  # request k's own token ids are 2**53 + k * 2**32 + j (workload.py)
_COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip -k"), b"PK\x03\x04": ("zip", "unzip"), b"BZh": ("bzip2", "bunzip2 -k"),
               b"\xfd7zXZ\x00": ("xz", "unxz -k"), b"(\xb5/\xfd": ("zstd", "unzstd")}


def _refuse_compressed(path: Path) -> None:
    with open_regular(path, TRACE) as f:
        head = f.read(6)
    for magic, (kind, command) in _COMPRESSED.items():
        if head.startswith(magic):
            raise InputError(f"{path}: a {kind}-compressed file; decompress it first ({command} {path})")


@dataclass
class TraceWorkload:
    path: Path
    speed: float = 1.0  # --trace-speed
    limit: int | None = None  # --trace-limit
    block_tokens: int | None = None  # --trace-block-size: tokens per Mooncake hash id (default 512)
    # Counted by the last complete pass over the file:
    format: str | None = field(default=None, init=False)
    skipped: dict[str, int] = field(default_factory=dict, init=False)  # reason -> rows not replayed
    reordered: int = field(default=0, init=False)
    origin_s: float = field(default=0.0, init=False)  # the first replayed request's time in the file (not kvplan's)

    def __post_init__(self):
        if not (isinstance(self.speed, (int, float)) and math.isfinite(self.speed) and self.speed > 0):
            raise InputError(f"--trace-speed must be a positive number, got {self.speed}")
        if self.limit is not None and not 1 <= self.limit <= MAX_TRACE_REQUESTS:
            raise InputError(f"--trace-limit must be between 1 and 2**30, got {self.limit}")
        if self.block_tokens is not None and not 1 <= self.block_tokens <= MAX_TRACE_BLOCK_TOKENS:
            raise InputError(f"--trace-block-size must be between 1 and {MAX_TRACE_BLOCK_TOKENS:,}, "
                             f"got {self.block_tokens}")

    def _rows(self, first: str, where: str):
        rows = detect(first, where)
        if self.block_tokens is not None and rows is not MooncakeRows:
            raise InputError(f"--trace-block-size goes with a Mooncake trace (hash_ids); {self.path} is a "
                             f"{rows.name} trace")
        return rows(first, self.block_tokens or MOONCAKE_BLOCK_TOKENS)

    def __iter__(self):
        reader = None
        skipped: dict[str, int] = {}
        reordered = 0
        last = 0.0
        origin = None
        index = 0
        _refuse_compressed(self.path)
        for lineno, text in read_lines(self.path, TRACE):
            if not text.strip():
                continue
            where = f"{self.path}:{lineno}"
            if reader is None:
                text = text.lstrip("\ufeff")  # a byte-order mark some tools write
                reader = self._rows(text, where)
                if reader.has_header:
                    continue
            item = reader.parse(text, index, where)
            if isinstance(item, str):
                skipped[item] = skipped.get(item, 0) + 1
                continue
            stamp = item.arrival_time
            if reader.counts_from_first:
                origin = stamp if origin is None else origin
                stamp -= origin
            arrival = stamp / self.speed
            if arrival < last:
                if reader.keeps_order:
                    raise InputError(f"{where}: arrival {item.arrival_time:g} is earlier than the previous "
                                     f"line's {last * self.speed:g} (sort the trace by arrival)")
                arrival = last
                reordered += 1
            if arrival != item.arrival_time:
                item = replace(item, arrival_time=arrival)
            if index == MAX_TRACE_REQUESTS:
                raise InputError(f"{where}: more than 2**30 requests (use --trace-limit)")
            last = arrival
            index += 1
            yield item
            if index == self.limit:
                break
        if index == 0:
            raise InputError(f"trace {self.path}: no requests" + (f" ({self._skips(skipped)})" if skipped else ""))
        self.format, self.skipped, self.reordered, self.origin_s = reader.name, skipped, reordered, origin or 0.0

    def validate(self) -> int:
        """Read the whole trace once (bounded memory); return its number of requests."""
        return sum(1 for _ in self)

    @staticmethod
    def _skips(skipped: dict[str, int]) -> str:
        return "; ".join(f"{n:,} rows with {reason} skipped" for reason, n in skipped.items())

    def notes(self) -> list[str]:
        notes = []
        if self.skipped:
            notes.append(f"trace: {self._skips(self.skipped)}")
        if self.origin_s:
            stamp = f"{self.origin_s:,.3f}".rstrip("0").rstrip(".")  # ms resolution, no exponent for days
            notes.append(f"trace: time counted from the first replayed request, stamped {stamp} s into the file")
        if self.reordered:
            notes.append(f"trace: {self.reordered:,} requests stamped earlier than the one before them replayed "
                         "at its arrival (the file is not sorted by time)")
        return notes

    def describe(self) -> dict:
        d = {"kind": "trace", "path": str(self.path), "format": self.format, "speed": self.speed, "limit": self.limit,
             "skipped_requests": sum(self.skipped.values()), "reordered_requests": self.reordered}
        if self.format == MooncakeRows.name:
            d["trace_block_size"] = self.block_tokens or MOONCAKE_BLOCK_TOKENS
        return d
