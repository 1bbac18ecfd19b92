"""A sweep as a Report: one SweepRow per configuration (the frame's columns, docs/ci.md); CSV, Parquet
and JSON records come straight from the frame, the table and markdown from SweepRows."""

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ..units import fmt_gib, fmt_tokens
from .document import ID, Line, Records, Report, Table, col, data
from .formats import check_destination, emit
from .common import check_format

SWEEP_FORMATS = ("table", "csv", "parquet", "json", "markdown")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".md": "markdown", ".markdown": "markdown"}
_ROWS_PER_CHUNK = 65_536  # frame rows converted to Python values at a time


def _yes_no(ok: bool) -> str:
    return "yes" if ok else "no"


@dataclass(frozen=True)
class SweepRow:
    model: str = col("model", kind=ID, code=True)
    gpu: str = col("GPU", kind=ID)
    tp: int = col("tp")
    pp: int = col("pp")
    weights_dtype: str = col("weights", kind=ID)
    kv_dtype: str = col("KV", kind=ID)
    context_tokens: int = col("context", show=fmt_tokens)
    weights_bytes_per_gpu: int = col("weights / GPU", show=fmt_gib, drop=3)
    kv_budget_bytes: int | None = col("KV budget / GPU", show=fmt_gib, drop=1)
    kv_bytes_per_request: int = data()
    kv_bytes_per_request_per_gpu: int = col("KV / request / GPU", show=fmt_gib, drop=2)
    num_blocks: int = data()
    kv_cache_tokens: int = data()
    max_concurrent_users: int = col("max users")
    fits: bool = col("fits", kind=ID, show=_yes_no, style=lambda ok: "ok" if ok else "fail")
    within_model_max: bool = col("ctx <= model max", kind=ID, show=_yes_no, style=lambda ok: None if ok else "warn")


KEYS = tuple(f.name for f in fields(SweepRow))


def format_for(fmt: str | None, output: Path | None) -> str:
    """--format as given, else from the --output suffix, else the rich table."""
    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(output.suffix.lower(), "table") if output is not None else "table"
    fmt = check_format(fmt, SWEEP_FORMATS)
    check_destination(fmt, output, SWEEP_FORMATS)
    return fmt


def render_sweep(frame, fmt: str, output: Path | None = None, limit: int = 40, notes: list[str] = ()) -> None:
    emit(sweep_report(frame, limit if fmt == "table" else 0, notes), fmt, output)


def sweep_report(frame, limit: int = 0, notes: list[str] = ()) -> Report:
    """`limit`: rows the table shows (0: all); the records always hold every row."""
    shown = frame.head(limit) if limit else frame
    records = Records(KEYS, lambda: frame_rows(frame), frame)
    blocks = [Line(f"kvplan sweep: {len(frame):,} configurations", "title"), Table(SweepRow, _SweepRows(shown))]
    if len(shown) < len(frame):
        blocks.append(Line(f"showing {len(shown):,} of {len(frame):,} rows: --limit 0 for all, --format csv/parquet "
                           "--output FILE for the data, --fits-only / --min-users to filter", "dim"))
    blocks += [Line(n, "note") for n in notes]
    blocks.append(Line("GiB = 2^30 bytes. KV budget -: weights and overhead leave no memory for KV "
                       "(kv_budget_bytes null in CSV, JSON and Parquet).", "dim"))
    return Report("kvplan sweep", SWEEP_FORMATS, blocks, data=records, records=records)


class _SweepRows(Sequence):
    """The frame's rows as SweepRows, built only when a table or markdown reads them (CSV, JSON and
    Parquet read the frame itself)."""

    def __init__(self, frame):
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> SweepRow:
        return SweepRow(*next(frame_rows(self.frame.iloc[i:i + 1])))

    def __iter__(self):
        return (SweepRow(*row) for row in frame_rows(self.frame))


def frame_rows(frame):
    """The frame's rows as tuples of Python values (None where a figure is missing), in KEYS order."""
    for start in range(0, len(frame), _ROWS_PER_CHUNK):
        part = frame.iloc[start:start + _ROWS_PER_CHUNK]
        columns = []
        for key in KEYS:
            column = part[key]
            values = column.astype(object).where(column.notna(), None) if column.hasnans else column
            columns.append(values.tolist())
        yield from zip(*columns)
