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
    if data.frame is not None:  # pandas writes large frames at C speed; same objects, one per line
        lines = data.frame[list(data.keys)].to_json(orient="records", lines=True).splitlines()
        yield "[\n " + ",\n ".join(lines) + "\n]\n" if lines else "[]\n"
        return
    lead = "[\n "
    for row in data.rows():
        record = dict(zip(data.keys, row))
        if any(isinstance(v, float) for v in row):
            record = finite(record)
        yield lead + json.dumps(record, allow_nan=False)
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
