"""JSONL traces: one request per line, read as a stream with line numbers in every error.

    {"prompt_len": 1200, "output_len": 300, "arrival": 0.5, "prefix_group": "sys-a", "prefix_len": 1000}
    {"prompt": [1, 2, 3, 4], "output_len": 16, "arrival": 0.75, "n": 2}

| key          | meaning                                                                        |
|--------------|--------------------------------------------------------------------------------|
| prompt       | token ids (0 <= id < 2**40); or                                                |
| prompt_len   | prompt tokens in all (>= 1), including a prefix_len-token group prefix         |
| output_len   | tokens to generate (>= 1), required                                            |
| arrival      | arrival time in seconds (>= 0, non-decreasing over the file), default 0        |
| prefix_group | name of a group of requests whose prompts start with the same prefix_len tokens|
| prefix_len   | length of that shared prefix (<= prompt_len), needs prefix_group              |
| n            | samples per request (>= 1), default 1                                          |
| id           | free-form label, ignored                                                        |

Blank lines are skipped. Any other key is an error (it is usually a typo).
"""

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..inputs import MAX_TOKENS, TRACE, parse_json, read_lines
from .workload import MAX_SAMPLES, MAX_TRACE_TOKEN_ID, WorkItem

_MAX_ARRIVAL_S = 1e12  # 30,000 years; float seconds still resolve 0.1 ms there
_KEYS = {"prompt", "prompt_len", "output_len", "arrival", "prefix_group", "prefix_len", "n", "id"}


def _int(obj: dict, key: str, minimum: int, where: str, default: int | None = None, maximum: int = MAX_TOKENS) -> int:
    value = obj.get(key, default)
    if value is None:
        raise InputError(f"{where}: missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InputError(f"{where}: {key!r} must be an integer >= {minimum} and <= {maximum:,}, got {value!r:.40}")
    return value


def parse_line(text: str, index: int, where: str, groups: dict[str, int]) -> WorkItem:
    obj = parse_json(text, where)
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    output_len = _int(obj, "output_len", 1, where)
    n = _int(obj, "n", 1, where, 1, MAX_SAMPLES)
    arrival = obj.get("arrival", 0)
    # compared before any float(): a 400-digit integer is no float (NaN fails the comparison too)
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) or not 0 <= arrival <= _MAX_ARRIVAL_S:
        raise InputError(f"{where}: 'arrival' must be a non-negative number of seconds up to {_MAX_ARRIVAL_S:.0e}, "
                         f"got {arrival!r:.40}")
    group_name = obj.get("prefix_group")
    if group_name is not None and not isinstance(group_name, str):
        raise InputError(f"{where}: 'prefix_group' must be a string, got {group_name!r}")
    if ("prompt" in obj) == ("prompt_len" in obj):
        raise InputError(f"{where}: give exactly one of 'prompt' (token ids) or 'prompt_len'")
    if "prompt" in obj:
        tokens = obj["prompt"]
        if not isinstance(tokens, list) or not tokens or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < MAX_TRACE_TOKEN_ID for t in tokens):
            raise InputError(f"{where}: 'prompt' must be a non-empty list of token ids in [0, 2**40)")
        if "prefix_len" in obj:
            raise InputError(f"{where}: 'prefix_len' goes with 'prompt_len'; explicit tokens share by content")
        return WorkItem(index, float(arrival), output_len, 0, None, 0, tuple(tokens), n, group_name)
    prompt_len = _int(obj, "prompt_len", 1, where)
    prefix_len = 0
    group = None
    if "prefix_len" in obj:
        if group_name is None:
            raise InputError(f"{where}: 'prefix_len' needs a 'prefix_group'")
        prefix_len = _int(obj, "prefix_len", 0, where)
        if prefix_len > prompt_len:
            raise InputError(f"{where}: 'prefix_len' {prefix_len} exceeds 'prompt_len' {prompt_len}")
    if group_name is not None:
        group = groups.setdefault(group_name, len(groups))
        if group >= 1 << 20:
            raise InputError(f"{where}: more than 2**20 prefix groups")
    return WorkItem(index, float(arrival), output_len, prompt_len - prefix_len, group, prefix_len, None, n, group_name)


@dataclass(frozen=True)
class TraceWorkload:
    path: Path

    def __iter__(self):
        groups: dict[str, int] = {}
        last_arrival = 0.0
        index = 0
        for lineno, line in read_lines(self.path, TRACE):  # decoded per line: a bad byte is reported on its line
            where = f"{self.path}:{lineno}"
            if not line.strip():
                continue
            item = parse_line(line, index, where, groups)
            if item.arrival_time < last_arrival:
                raise InputError(f"{where}: arrival {item.arrival_time:g} is earlier than the previous "
                                 f"line's {last_arrival:g} (sort the trace by arrival)")
            last_arrival = item.arrival_time
            index += 1
            yield item
        if index == 0:
            raise InputError(f"trace {self.path}: no requests")

    def validate(self) -> int:
        """Read the whole trace once (bounded memory); return its number of requests."""
        return sum(1 for _ in self)

    def describe(self) -> dict:
        return {"kind": "trace", "path": str(self.path)}
