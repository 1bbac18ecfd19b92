"""Format checking, and the helpers report/gpus.py still uses until it builds a Report."""

import json
import sys
from pathlib import Path

from ..errors import InputError

FORMATS = ("table", "json", "csv", "markdown")


def check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    key = (fmt or "table").strip().lower()
    if key == "md":
        key = "markdown"
    if key not in allowed:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(allowed)}")
    return key


def plot_format(path) -> str:
    """The image format a plot path's suffix names (PNG without one); one the plotting library cannot
    write is refused before any figure is drawn."""
    from matplotlib.backend_bases import FigureCanvasBase

    from ..inputs import printable

    fmt = (Path(path).suffix or ".png").lstrip(".").lower()
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise InputError(f"{printable(path)}: cannot draw a plot as .{printable(fmt)[:20]}; name it .png, .svg or .pdf "
                         f"(or any of {', '.join(sorted(known))})")
    return fmt


def print_json(data) -> None:
    """stdout holds exactly one JSON document."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n")


def console():
    from .formats.terminal import make_console

    return make_console()


def md_table(headers: list[str], rows: list[list]) -> str:
    from .formats.markdown import pipe_table

    return pipe_table(headers, [[str(c) for c in row] for row in rows])
