"""A LogExplanation as a Report: logged and predicted figures side by side. JSON is the explanation's
own document (docs/engines.md lists its keys)."""

from dataclasses import dataclass

from ..logs.rows import LogExplanation
from .document import ID, NUM, TEXT, Line, Report, Table, col
from .formats import emit

EXPLAIN_FORMATS = ("table", "json", "markdown")
_MARK = {True: "agrees", False: "DIFFERS", None: "-"}


@dataclass(frozen=True)
class FigureRow:
    figure: str = col("figure", kind=TEXT)
    logged: str = col("logged", kind=NUM, show=str)
    predicted: str = col("kvplan predicts", kind=NUM, show=str)
    difference: str = col("difference", kind=NUM, show=str, drop=1)
    agrees: bool | None = col("result", kind=ID, show=_MARK.get, style=lambda a: "fail" if a is False else None)
    basis: str = col("basis", kind=TEXT, drop=2)


def render_explanation(ex: LogExplanation, fmt: str = "table") -> None:
    emit(explanation_report(ex), fmt)


def explanation_report(ex: LogExplanation) -> Report:
    settings = ", ".join(f"{k}={v}" for k, v in ex.settings.items() if v is not None)
    rows = [FigureRow(r.figure, r.logged, r.predicted, r.difference, r.agrees, r.basis) for r in ex.rows]
    blocks = [Line(f"kvplan explain-log: {ex.model} under {ex.engine} {ex.engine_version}", "title"),
              Line(f"settings: {settings}", "dim"), Table(FigureRow, rows)]
    blocks += [Line(f"kvplan predicts the engine logs: {line}", "item") for line in ex.predicted_lines]
    blocks += [Line(name, "warn", label="not found in the log:") for name in ex.missing]
    blocks += [Line(n, "note") for n in ex.notes]
    blocks.append(Line("GiB = 2^30 bytes (vLLM and SGLang print GiB; SGLang labels them GB)", "dim"))
    return Report("kvplan explain-log", EXPLAIN_FORMATS, blocks, data=ex.to_dict())
