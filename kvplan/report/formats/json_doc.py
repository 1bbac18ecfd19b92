"""JSON: the report's document (indent 2), or a list of objects, one per line, streamed row by row."""

import json
import math

from ..document import Records, Report


def render(report: Report) -> str:
    return "".join(chunks(report))


def chunks(report: Report):
    data = report.data
    if not isinstance(data, Records):
        yield json.dumps(finite(data), indent=2, allow_nan=False, default=str) + "\n"
        return
    lead = "[\n "
    for row in data.rows():
        yield lead + json.dumps(finite(dict(zip(data.keys, row))), allow_nan=False)
        lead = ",\n "
    yield "[]\n" if lead.startswith("[") else "\n]\n"


def finite(value):
    """JSON has no inf/NaN: such figures (an unbounded concurrency) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
