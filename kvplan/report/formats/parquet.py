"""Parquet: the report's records as a typed columnar file (pandas + pyarrow); written atomically."""

from pathlib import Path

from ...errors import InputError
from ..document import Report


def write(report: Report, path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:  # pandas' Parquet engine
        raise InputError("--format parquet needs pyarrow: pip install pyarrow (or use --format csv)")
    import pandas as pd

    from ...atomic import atomic_output

    records = report.records
    frame = records.frame if records.frame is not None else pd.DataFrame(list(records.rows()), columns=records.keys)
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)
