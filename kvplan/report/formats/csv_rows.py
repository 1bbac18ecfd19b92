"""CSV: the report's records, a header of keys (units in the names) and raw values; missing is empty."""

import csv
import io

from ..document import Report


def render(report: Report) -> str:
    records = report.records
    if records.frame is not None:  # pandas writes large frames at C speed, in the same form
        return records.frame[list(records.keys)].to_csv(index=False, lineterminator="\n")
    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(report.records.keys)
    w.writerows([("" if v is None else v) for v in row] for row in report.records.rows())
    return buffer.getvalue()
