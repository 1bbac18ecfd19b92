"""Parquet: the report's records as a typed columnar file (pandas + pyarrow); written atomically."""

from pathlib import Path

from ...extras import require_extra
from ..document import Report


def write(report: Report, path: Path) -> None:
    require_extra("report", "pandas", "pyarrow", what="--format parquet")  # pyarrow: pandas' Parquet engine
    import pandas as pd

    from ...atomic import atomic_output

    records = report.records
    frame = records.frame if records.frame is not None else pd.DataFrame(list(records.rows()), columns=records.keys)
    with atomic_output(path) as tmp:
        frame.to_parquet(tmp, index=False)
