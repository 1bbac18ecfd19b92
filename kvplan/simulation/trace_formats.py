"""The trace formats `kvplan simulate --trace` reads, one reader per format, one line at a time.

| format   | detected by (first non-blank line)                                 | time             | lengths                          |
|----------|--------------------------------------------------------------------|------------------|----------------------------------|
| mooncake | a JSON object with any of timestamp, input_length, output_length,  | `timestamp` (ms) | input_length, output_length,     |
|          | hash_ids (FAST'25 traces/*.jsonl, the arXiv mooncake_trace.jsonl)  |                  | hash_ids                         |
| kvplan   | any other JSON object                                              | `arrival` (s)    | prompt / prompt_len, output_len  |
| azure    | a CSV header with TIMESTAMP, ContextTokens, GeneratedTokens        | TIMESTAMP, a     | ContextTokens, GeneratedTokens   |
|          | (2023, 2024; 2025's multimodal file adds NumImages)                | date-time        |                                  |
| burstgpt | a CSV header with Timestamp, Request tokens, Response tokens       | Timestamp (s)    | Request tokens, Response tokens  |

A reader is made from the file's first non-blank line (a CSV header, or the first request) and turns
one line into a WorkItem (arrival in seconds on the file's clock; trace.py moves the origin), or into
the reason when the row is a request kvplan does not replay: a third-party row with 0 prompt or 0
output tokens (BurstGPT logs failed requests with 0 response tokens). Other columns and keys
(BurstGPT's Model, Total tokens, Log Type; Azure's NumImages; AIPerf's session_id) are not used.
"""

import csv
import math
import re
from datetime import date
from functools import lru_cache

from ..errors import InputError
from ..inputs import MAX_TOKENS, parse_json
from .workload import MAX_SAMPLES, MAX_TRACE_TOKEN_ID, WorkItem

MOONCAKE_BLOCK_TOKENS = 512  # tokens per hash id in the Mooncake release
_MAX_ARRIVAL_S = 1e12  # 30,000 years; float seconds still resolve 0.1 ms there
_DATES_REMEMBERED = 256  # distinct calendar dates parsed once each


def _count(value, key: str, minimum: int, where: str, maximum: int = MAX_TOKENS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InputError(f"{where}: {key!r} must be an integer >= {minimum} and <= {maximum:,}, got {value!r:.40}")
    return value


def _seconds(value, key: str, per_second: int, where: str) -> float:
    """A time stamp in 1/per_second seconds, as seconds; compared before any float(): a 400-digit
    integer is no float (NaN fails the comparison too)."""
    limit = _MAX_ARRIVAL_S * per_second
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= limit:
        unit = "seconds" if per_second == 1 else "milliseconds"
        raise InputError(f"{where}: {key!r} must be a non-negative number of {unit} up to {limit:.0e}, "
                         f"got {value!r:.40}")
    return value / per_second


def _json_object(text: str, where: str) -> dict:
    obj = parse_json(text, where)
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


class KvplanRows:
    """kvplan's own JSONL (docs/simulate.md): unknown keys are errors, since they are usually typos."""

    name = "kvplan"
    has_header = False
    keeps_order = True  # an arrival earlier than the line before is an error, not a reordering
    counts_from_first = False  # arrivals are the file's own, from 0
    KEYS = {"prompt", "prompt_len", "output_len", "arrival", "prefix_group", "prefix_len", "n", "id"}

    def __init__(self, first: str, block_tokens: int):
        self.groups: dict[str, int] = {}

    @staticmethod
    def detect(first: str) -> bool:
        return first.lstrip().startswith("{")

    def parse(self, text: str, index: int, where: str) -> WorkItem:
        obj = _json_object(text, where)
        unknown = sorted(set(obj) - self.KEYS)
        if unknown:
            raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(self.KEYS))})")
        if "output_len" not in obj:
            raise InputError(f"{where}: missing 'output_len'")
        output_len = _count(obj["output_len"], "output_len", 1, where)
        n = _count(obj.get("n", 1), "n", 1, where, MAX_SAMPLES)
        arrival = _seconds(obj.get("arrival", 0), "arrival", 1, where)
        group_name = obj.get("prefix_group")
        if group_name is not None and not isinstance(group_name, str):
            raise InputError(f"{where}: 'prefix_group' must be a string, got {group_name!r:.40}")
        if ("prompt" in obj) == ("prompt_len" in obj):
            raise InputError(f"{where}: give exactly one of 'prompt' (token ids) or 'prompt_len'")
        if "prompt" in obj:
            tokens = obj["prompt"]
            if not isinstance(tokens, list) or not tokens or not all(
                    isinstance(t, int) and not isinstance(t, bool) and 0 <= t < MAX_TRACE_TOKEN_ID for t in tokens):
                raise InputError(f"{where}: 'prompt' must be a non-empty list of token ids in [0, 2**40)")
            if "prefix_len" in obj:
                raise InputError(f"{where}: 'prefix_len' goes with 'prompt_len'; explicit tokens share by content")
            return WorkItem(index, arrival, output_len, 0, None, 0, tuple(tokens), n, group_name)
        prompt_len = _count(obj["prompt_len"], "prompt_len", 1, where)
        prefix_len = 0
        group = None
        if "prefix_len" in obj:
            if group_name is None:
                raise InputError(f"{where}: 'prefix_len' needs a 'prefix_group'")
            prefix_len = _count(obj["prefix_len"], "prefix_len", 0, where)
            if prefix_len > prompt_len:
                raise InputError(f"{where}: 'prefix_len' {prefix_len} exceeds 'prompt_len' {prompt_len}")
        if group_name is not None:
            group = self.groups.setdefault(group_name, len(self.groups))
            if group >= 1 << 20:
                raise InputError(f"{where}: more than 2**20 prefix groups")
        return WorkItem(index, arrival, output_len, prompt_len - prefix_len, group, prefix_len, None, n,
                        group_name)


class MooncakeRows:
    """Mooncake's JSONL: `timestamp` in ms, `input_length`, `output_length`, and `hash_ids`, one id per
    block of `block_tokens` prompt tokens (the last block may be partial): requests with the same first
    k ids share their first k blocks. Fewer ids than blocks leave the rest of the prompt unshared; more
    ids than blocks means the trace was cut with another block size (--trace-block-size). A first line
    with any of KEYS (none is kvplan's) makes the file Mooncake's, so a line missing one is named as such."""

    name = "mooncake"
    has_header = False
    keeps_order = False
    counts_from_first = True  # time from the first replayed request (trace.py)
    KEYS = frozenset({"timestamp", "input_length", "output_length", "hash_ids"})

    def __init__(self, first: str, block_tokens: int):
        self.block_tokens = block_tokens

    @staticmethod
    def detect(first: str) -> bool:
        if not first.lstrip().startswith("{"):
            return False
        try:
            obj = parse_json(first, "")
        except InputError:  # not JSON at all: another format's (parse() reports a bad first line)
            return False
        return isinstance(obj, dict) and not MooncakeRows.KEYS.isdisjoint(obj)

    def parse(self, text: str, index: int, where: str) -> WorkItem | str:
        obj = _json_object(text, where)
        for key in ("timestamp", "input_length", "output_length"):
            if key not in obj:
                raise InputError(f"{where}: missing {key!r} (a Mooncake trace line has timestamp, input_length, "
                                 "output_length, hash_ids)")
        arrival = _seconds(obj["timestamp"], "timestamp", 1000, where)
        prompt = _count(obj["input_length"], "input_length", 0, where)
        output = _count(obj["output_length"], "output_length", 0, where)
        ids = obj.get("hash_ids", [])
        if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
            raise InputError(f"{where}: 'hash_ids' must be a list of integers")
        blocks = -(-prompt // self.block_tokens)
        if len(ids) > blocks:
            raise InputError(f"{where}: {len(ids)} hash_ids for {prompt} input tokens, more than the {blocks} "
                             f"blocks of {self.block_tokens} tokens (set --trace-block-size to the trace's)")
        if not prompt or not output:
            return "0 input or output tokens"
        return WorkItem(index, arrival, output, prompt, hash_ids=tuple(ids), hash_block_tokens=self.block_tokens)


def _csv_fields(text: str, where: str = "") -> list[str]:
    line = text.rstrip("\r\n")
    if '"' not in line:
        return line.split(",")
    try:
        return next(csv.reader([line]))
    except csv.Error as exc:  # a quoted field over csv's 131,072-character limit, a NUL
        raise InputError(f"{where}: not a CSV row kvplan can read ({exc})") from None


class _CsvRows:
    """A CSV trace: a header naming the columns, then one request per row."""

    has_header = True
    keeps_order = False
    counts_from_first = True
    COLUMNS: tuple[str, str, str] = ("", "", "")  # time, prompt tokens, output tokens

    def __init__(self, header: str, block_tokens: int):
        names = [h.strip() for h in _csv_fields(header)]
        self.width = len(names)
        self.cols = [names.index(c) for c in self.COLUMNS]

    @classmethod
    def detect(cls, first: str) -> bool:
        try:
            fields = _csv_fields(first)
        except InputError:  # not CSV csv can read: not this format (detect() names the file)
            return False
        return set(cls.COLUMNS) <= {h.strip() for h in fields}

    def _tokens(self, field: str, column: str, where: str) -> int:
        try:
            value = int(field)
        except ValueError:  # "472.0", as a spreadsheet or pandas may write it, is still 472
            try:
                number = float(field)
            except ValueError:
                number = math.nan
            if not (number.is_integer() and abs(number) <= MAX_TOKENS):
                raise InputError(f"{where}: {column} must be a whole number of tokens, got {field[:40]!r}") from None
            value = int(number)
        if not 0 <= value <= MAX_TOKENS:
            raise InputError(f"{where}: {column} must be >= 0 and <= {MAX_TOKENS:,}, got {field[:40]}")
        return value

    def parse(self, text: str, index: int, where: str) -> WorkItem | str:
        fields = _csv_fields(text, where)
        if len(fields) != self.width:
            raise InputError(f"{where}: {len(fields)} columns, the header has {self.width}")
        t, p, o = (fields[c].strip() for c in self.cols)
        prompt = self._tokens(p, self.COLUMNS[1], where)
        output = self._tokens(o, self.COLUMNS[2], where)
        arrival = self.arrival(t, where)
        if not prompt or not output:
            return self.EMPTY
        return WorkItem(index, arrival, output, prompt)


_DATE_TIME = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?\s*(Z|[+-]\d\d:?\d\d)?", re.ASCII)


@lru_cache(maxsize=_DATES_REMEMBERED)  # a week-long trace has 7 days: one date parse each, not one per row
def _day_seconds(day: str) -> int | None:
    try:
        return date.fromisoformat(day).toordinal() * 86400
    except ValueError:
        return None


def _nanoseconds(text: str) -> int | None:
    """An ISO 8601 date-time as integer ns from a fixed origin (date.toordinal's; only differences are
    used), naive read as UTC; None if it is not one."""
    m = _DATE_TIME.fullmatch(text)
    if not m:
        return None
    day, hour, minute, second, fraction, zone = m.groups()
    day_s = _day_seconds(day)
    if day_s is None or hour > "23" or minute > "59" or second > "59":  # two ASCII digits each
        return None
    seconds = day_s + int(hour) * 3600 + int(minute) * 60 + int(second)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[-2:]) * 60)
    return seconds * 10**9 + (int(fraction.ljust(9, "0")) if fraction else 0)


class AzureRows(_CsvRows):
    """Azure LLM inference traces (2023 Splitwise, 2024 DynamoLLM): TIMESTAMP is a date-time, naive
    (2023: `2023-11-16 18:15:46.6805900`, read as UTC) or with an offset (2024: `...+00:00`); arrivals
    count from the first row's."""

    name = "azure"
    COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
    EMPTY = "0 ContextTokens or GeneratedTokens"

    def __init__(self, header: str, block_tokens: int):
        super().__init__(header, block_tokens)
        self.start_ns: int | None = None

    def arrival(self, field: str, where: str) -> float:
        ns = _nanoseconds(field)
        if ns is None:
            raise InputError(f"{where}: TIMESTAMP {field!r} is not a date-time like 2023-11-16 18:15:46.6805900")
        if self.start_ns is None:
            self.start_ns = ns
        return (ns - self.start_ns) / 1e9


class BurstGPTRows(_CsvRows):
    """BurstGPT (v1.1+): Timestamp in seconds; failed requests are logged with 0 Response tokens and
    are skipped (they generated nothing; kvplan simulates requests that run)."""

    name = "burstgpt"
    COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
    EMPTY = "0 Request or Response tokens (failed)"

    def arrival(self, field: str, where: str) -> float:
        try:
            value = float(field)
        except ValueError:
            value = math.nan
        if not 0 <= value <= _MAX_ARRIVAL_S:  # NaN fails the comparison too
            raise InputError(f"{where}: Timestamp must be a non-negative number of seconds up to "
                             f"{_MAX_ARRIVAL_S:.0e}, got {field[:40]!r}")
        return value


FORMATS = {rows.name: rows for rows in (MooncakeRows, KvplanRows, AzureRows, BurstGPTRows)}  # detection order


def detect(first: str, where: str):
    """The reader class for a trace whose first non-blank line is `first`."""
    head = first.strip()
    if head in ("{", "[") or head.startswith("[{"):  # JSON written for people (the Mooncake README's sample)
        what, jq = ("a JSON array", "jq -c '.[]'") if head.startswith("[") else ("an indented JSON object", "jq -c .")
        raise InputError(f"{where}: {what}; a trace has one JSON object per line ({jq} FILE writes it so)")
    for rows in FORMATS.values():
        if rows.detect(first):
            return rows
    raise InputError(f"{where}: not a trace kvplan reads: expected JSON lines (kvplan's or Mooncake's) or a CSV "
                     f"header with {', '.join(AzureRows.COLUMNS)} (Azure) or {', '.join(BurstGPTRows.COLUMNS)} "
                     "(BurstGPT)")
