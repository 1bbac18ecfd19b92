"""Format checking, and the helpers report/gpus.py still uses until it builds a Report."""

import json
import sys

from ..errors import InputError

FORMATS = ("table", "json", "csv", "markdown")


def check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    key = (fmt or "table").strip().lower()
    if key == "md":
        key = "markdown"
    if key not in allowed:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(allowed)}")
    return key


def print_json(data) -> None:
    """stdout holds exactly one JSON document."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n")


def console():
    from .formats.terminal import make_console

    return make_console()


def md_table(headers: list[str], rows: list[list]) -> str:
    from .formats.markdown import pipe_table

    return pipe_table(headers, [[str(c) for c in row] for row in rows])
