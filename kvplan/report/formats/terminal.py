"""The rich report on stdout: tables fitted to the width (formats/fit.py), pairs, lines of prose.

Width: a terminal's own width, or COLUMNS when set. When stdout is not a terminal (a pipe, a file,
a CI log) and COLUMNS is not set, nothing is wrapped: tables take their natural width and each
line of prose stays one line, so grep and diff see whole records. Prose is wrapped between words
only, with a hanging indent; no line carries trailing spaces.
"""

import os
import textwrap

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from ...inputs import printable
from ..document import NUM, TEXT, Line, Pairs, Report, Table
from .fit import fit_table

UNWRAPPED_WIDTH = 100_000
MIN_WIDTH = 20
LINE_STYLES = {"title": "bold", "note": "dim", "dim": "dim", "item": "", "": "", "ok": "bold green",
               "fail": "bold red", "warn": "bold yellow"}
CELL_STYLES = {"ok": "green", "fail": "bold red", "warn": "yellow", "dim": "dim", None: ""}


def make_console() -> Console:
    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        out.width = UNWRAPPED_WIDTH
    out.width = max(out.width, MIN_WIDTH)  # COLUMNS=0 would leave no room to wrap prose in
    return out


def render(report: Report, out: Console | None = None) -> None:
    out = out or make_console()
    for block in report.blocks:
        if isinstance(block, Table):
            _table(out, block)
        elif isinstance(block, Pairs):
            _pairs(out, block)
        else:
            _line(out, block)


def _line(out: Console, line: Line) -> None:
    style = LINE_STYLES[line.style]
    if line.style == "note":
        _prose(out, "note: " + line.text, style, indent="  ")
    elif line.style == "item":
        _prose(out, "  - " + line.text, style, indent="    ")
    elif line.label:
        _prose(out, f"{line.label} {line.text}", "", indent="  ", lead=(len(line.label), style))
    else:
        _prose(out, line.text, style, indent="  ")


def _prose(out: Console, text: str, style: str, indent: str, lead: tuple[int, str] | None = None) -> None:
    """Wrap between words (a word longer than the line stays whole); `lead`: style the first n characters."""
    text = printable(text.replace("\n", " "))  # wrapping makes a newline a space; no other control gets through
    lines = textwrap.wrap(text, width=max(out.width, 2 * len(indent) + 1), subsequent_indent=indent,
                          break_long_words=False, break_on_hyphens=False, drop_whitespace=True) or [""]
    for n, line in enumerate(lines):
        t = Text(line, style=style)
        if lead and n == 0:
            t.stylize(lead[1], 0, lead[0])
        out.print(t, soft_wrap=True)


def _packed(out: Console, lead: str, pieces: list[str]) -> None:
    """`lead` then the pieces separated by commas, lines broken only between pieces."""
    lines, line = [], lead
    for n, piece in enumerate(pieces):
        piece += "," if n + 1 < len(pieces) else ""
        if cell_len(line) + 1 + cell_len(piece) > out.width and line.strip() and line != lead:
            lines.append(line)
            line = "  " + piece
        else:
            line += " " + piece
    lines.append(line)
    for n, text in enumerate(lines):
        t = Text(text)
        if n == 0:
            t.stylize("cyan", 0, len(lead))
        out.print(t, soft_wrap=True)


def _pairs(out: Console, pairs: Pairs) -> None:
    """Labels in one column, values wrapped beside them; a value goes under its label when there is no room."""
    if pairs.title:
        out.print(Text(printable(pairs.title), style="bold"), soft_wrap=True)
    if not pairs.items:
        return
    items = [(printable(k), printable(v.replace("\n", " "))) for k, v in pairs.items]
    label_width = max(cell_len(k) for k, _ in items)
    longest_word = max(max((cell_len(w) for w in v.split()), default=1) for _, v in items)
    beside = label_width + 2 + longest_word <= out.width
    for k, v in items:
        indent = " " * (label_width + 2) if beside else "    "
        lines = textwrap.wrap(v, width=out.width, initial_indent=indent, subsequent_indent=indent,
                              break_long_words=False, break_on_hyphens=False) or [indent]
        if beside:
            lines[0] = Text.assemble((k.ljust(label_width), "cyan"), lines[0][label_width:])
        else:
            out.print(Text(k, style="cyan"), soft_wrap=True)
        for line in lines:
            out.print(line if isinstance(line, Text) else Text(line), soft_wrap=True)


def _table(out: Console, table: Table) -> None:
    columns = table.shown
    whole = table.cells()
    fit = fit_table(columns, whole, out.width)
    if table.title:
        out.print(Text(printable(table.title), style="bold"), soft_wrap=True)
    if fit.blocks:
        _blocks(out, table)
        return
    if fit.hoisted:  # what every row shares, once
        _packed(out, "in every row:", [f"{columns[i].header} {whole[0][i]}".strip() for i in fit.hoisted])
    styles = table.styles()
    t = RichTable()
    for n, i in enumerate(fit.drawn):
        c = columns[i]
        t.add_column(c.header, justify="right" if c.kind == NUM else "left",
                     width=fit.widths[n] if fit.widths else None, overflow="fold", no_wrap=fit.widths is None)
    ends = table.group_ends()
    for r, row in enumerate(table.cells(blank_groups=True)):
        t.add_row(*(Text(row[i], style=CELL_STYLES[styles[r][i]]) for i in fit.drawn), end_section=ends[r])
    out.print(t)
    if fit.dropped:
        names = ", ".join(columns[i].header for i in fit.dropped)
        _prose(out, f"left out at {out.width} columns: {names} (--format json or markdown has every column)",
               "dim", indent="  ")


def _blocks(out: Console, table: Table) -> None:
    """One block per row: the first column as its heading, then `header: value` lines."""
    columns = table.shown
    for row, styles in zip(table.cells(), table.styles()):
        out.print(Text(row[0], style="bold cyan"), soft_wrap=True)
        for c, value, style in zip(columns[1:], row[1:], styles[1:]):
            head = f"  {c.header}: "
            if c.kind == TEXT or cell_len(head) + cell_len(value) <= out.width:
                lines = textwrap.wrap(head + value, width=out.width, subsequent_indent="    ", break_long_words=False,
                                      break_on_hyphens=False) or [head]
            else:  # an identifier or number too long to follow its header: on its own line, whole
                lines = [head.rstrip(), "    " + value]
            for n, line in enumerate(lines):
                t = Text(line)
                if n == 0:
                    t.stylize("cyan", 0, len(head.rstrip()))
                    t.stylize(CELL_STYLES[style], len(head), len(line))
                out.print(t, soft_wrap=True)
