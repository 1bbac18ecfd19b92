"""One renderer per output format, each over a Report (report/document.py).

`emit(report, fmt, output)` prints the table, or writes the text formats to stdout or (atomically)
to `output`; a binary format needs `output`. Adding a format is one module and one line here.
"""

import sys
from pathlib import Path

from ...errors import InputError
from ..common import check_format
from ..document import Report
from . import csv_rows, github, json_doc, junit, markdown, parquet, terminal

TEXT = {"json": json_doc.render, "csv": csv_rows.render, "markdown": markdown.render, "junit": junit.render,
        "github": github.render}
BINARY = {"parquet": parquet.write}


def render_text(report: Report, fmt: str) -> str:
    return TEXT[check_format(fmt, report.formats)](report)


def check_destination(fmt: str, output: Path | None, formats: tuple[str, ...]) -> None:
    """The table goes to a terminal, a binary format to a file: refuse the other pairings early."""
    if fmt == "table" and output is not None:
        files = ", ".join(f for f in formats if f != "table")
        raise InputError(f"--output needs a file format: --format {files}")
    if fmt in BINARY and output is None:
        raise InputError(f"--format {fmt} writes a binary file: give --output FILE.{fmt}")


def emit(report: Report, fmt: str, output: Path | None = None) -> None:
    fmt = check_format(fmt, report.formats)
    check_destination(fmt, output, report.formats)
    if fmt == "table":
        terminal.render(report)
    elif fmt in BINARY:
        BINARY[fmt](report, output)
    elif output is None:
        if fmt == "json":  # streamed: a long list of records is never held as one string
            for chunk in json_doc.chunks(report):
                sys.stdout.write(chunk)
        else:
            sys.stdout.write(TEXT[fmt](report))
    else:
        from ...atomic import write_text_atomic

        write_text_atomic(output, TEXT[fmt](report))
