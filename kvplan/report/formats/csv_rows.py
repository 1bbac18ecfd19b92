"""CSV: the report's records, a header of keys (units in the names) and raw values; missing is empty."""

import csv
import io

from ..document import Report


def render(report: Report) -> str:
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(report.records.keys)
    w.writerows([("" if v is None else v) for v in row] for row in report.records.rows())
    return buffer.getvalue()
