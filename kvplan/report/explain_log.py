"""Render a LogExplanation: logged and predicted figures side by side (rich table, JSON or markdown)."""

import sys

from ..logs.explain import LogExplanation
from .common import check_format, console, md_table, print_json

_MARK = {True: "agrees", False: "DIFFERS", None: "-"}


def render_explanation(ex: LogExplanation, fmt: str = "table") -> None:
    fmt = check_format(fmt, ("table", "json", "markdown"))
    if fmt == "json":
        print_json(ex.to_dict())
    elif fmt == "markdown":
        sys.stdout.write(markdown(ex) + "\n")
    else:
        _rich(ex)


def _settings_line(ex: LogExplanation) -> str:
    return ", ".join(f"{k}={v}" for k, v in ex.settings.items() if v is not None)


def _rows(ex: LogExplanation) -> list[list[str]]:
    return [[r.figure, r.logged, r.predicted, r.difference, _MARK[r.agrees], r.basis] for r in ex.rows]


def _rich(ex: LogExplanation) -> None:
    from rich.table import Table

    out = console()
    out.print(f"[bold]kvplan explain-log: {ex.model} under {ex.engine} {ex.engine_version} semantics[/bold]")
    out.print(f"[dim]settings: {_settings_line(ex)}[/dim]")
    t = Table(show_lines=False)
    for name, justify in (("figure", "left"), ("logged", "right"), ("kvplan predicts", "right"),
                          ("difference", "right"), ("", "left"), ("basis", "left")):
        t.add_column(name, justify=justify)
    for row in _rows(ex):
        style = "red" if row[4] == "DIFFERS" else None
        t.add_row(*row, style=style)
    out.print(t)
    for line in ex.predicted_lines:
        out.print(f"[dim]kvplan predicts the engine logs: {line}[/dim]")
    for name in ex.missing:
        out.print(f"[yellow]not found in the log:[/yellow] {name}")
    for note in ex.notes:
        out.print(f"[dim]note: {note}[/dim]")
    out.print("[dim]GiB = 2^30 bytes (vLLM and SGLang print GiB; SGLang labels them GB)[/dim]")


def markdown(ex: LogExplanation) -> str:
    parts = [f"## kvplan explain-log: {ex.model} ({ex.engine} {ex.engine_version})", "",
             f"settings: {_settings_line(ex)}", "",
             md_table(["figure", "logged", "kvplan predicts", "difference", "", "basis"], _rows(ex))]
    parts += [f"- predicted log line: `{line}`" for line in ex.predicted_lines]
    parts += [f"- not found in the log: {name}" for name in ex.missing]
    parts += [f"> note: {note}" for note in ex.notes]
    return "\n".join(parts)
