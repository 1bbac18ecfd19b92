"""Render a sweep: rich table, CSV, Parquet, JSON records, markdown; the users-vs-context plot (PNG)."""

import sys
from pathlib import Path

from ..errors import InputError
from ..units import fmt_gib, fmt_tokens
from .common import check_format, console, md_table

SWEEP_FORMATS = ("table", "csv", "parquet", "json", "markdown")
_SUFFIX_FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".md": "markdown", ".markdown": "markdown"}
CONFIG_COLUMNS = ["model", "gpu", "tp", "pp", "weights_dtype", "kv_dtype"]
_HUMAN_HEADERS = ["model", "GPU", "tp", "pp", "weights", "KV", "context", "weights / GPU", "KV budget / GPU",
                  "KV / request / GPU", "max users", "fits"]


def format_for(fmt: str | None, output: Path | None) -> str:
    """--format as given, else from the --output suffix, else the rich table."""
    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(output.suffix.lower(), "table") if output is not None else "table"
    fmt = check_format(fmt, SWEEP_FORMATS)
    if fmt == "parquet" and output is None:
        raise InputError("--format parquet writes a binary file: give --output FILE.parquet")
    if fmt == "table" and output is not None:
        raise InputError("--output needs a file format: --format csv, parquet, json or markdown")
    return fmt


def render_sweep(frame, fmt: str, output: Path | None = None, limit: int = 40, notes: list[str] = ()) -> None:
    if fmt == "table":
        _rich(frame, limit, notes)
        return
    if fmt == "parquet":
        _parquet(frame, output)
        return
    if fmt == "csv":
        text = frame.to_csv(index=False, lineterminator="\n")
    elif fmt == "json":
        text = frame.to_json(orient="records", indent=1) + "\n"
    else:
        text = markdown(frame, notes) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        from ..atomic import write_text_atomic

        write_text_atomic(output, text)


def _parquet(frame, output: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:  # pandas' Parquet engine
        raise InputError("--format parquet needs pyarrow: pip install pyarrow (or use --format csv)")
    from ..atomic import atomic_output

    with atomic_output(output) as tmp:
        frame.to_parquet(tmp, index=False)


def human_rows(frame) -> list[list[str]]:
    rows = []
    for r in frame.itertuples(index=False):
        rows.append([r.model, r.gpu, str(r.tp), str(r.pp), r.weights_dtype, r.kv_dtype, fmt_tokens(r.context_tokens),
                     fmt_gib(r.weights_bytes_per_gpu), fmt_gib(r.kv_budget_bytes),
                     fmt_gib(r.kv_bytes_per_request_per_gpu), f"{r.max_concurrent_users:,}",
                     ("yes" if r.fits else "no") + ("" if r.within_model_max else " (> model max)")])
    return rows


def markdown(frame, notes: list[str] = ()) -> str:
    parts = [f"## kvplan sweep: {len(frame):,} configurations", "", md_table(_HUMAN_HEADERS, human_rows(frame))]
    parts += [f"\n> {n}" for n in notes]
    parts.append("\nGiB = 2^30 bytes.")
    return "\n".join(parts)


def _rich(frame, limit: int, notes: list[str]) -> None:
    from rich.table import Table

    out = console()
    shown = frame.head(limit) if limit else frame
    t = Table(title=f"kvplan sweep: {len(frame):,} configurations", title_justify="left")
    for h in _HUMAN_HEADERS:
        t.add_column(h, justify="right" if h not in ("model", "GPU", "weights", "KV", "fits") else "left")
    for row in human_rows(shown):
        t.add_row(*row)
    out.print(t)
    if len(shown) < len(frame):
        out.print(f"[dim]showing {len(shown):,} of {len(frame):,} rows: --limit 0 for all, --format csv/parquet "
                  "--output FILE for the data, --fits-only / --min-users to filter[/dim]")
    for n in notes:
        out.print(f"[dim]note: {n}[/dim]")
    out.print("[dim]GiB = 2^30 bytes[/dim]")


def plot_users_vs_context(frame, path: Path, max_legend: int = 20) -> int:
    """Max concurrent users against context, one line per configuration; written atomically (PNG).
    Returns the number of lines drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from ..atomic import atomic_output

    if frame.empty:
        raise InputError("--plot: no rows to plot (filters removed everything)")
    fig = Figure(figsize=(10, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    groups = frame.groupby(CONFIG_COLUMNS, observed=True, sort=False)
    for i, (key, g) in enumerate(groups):
        g = g.sort_values("context_tokens")
        label = f"{key[0]} {key[1]} tp{key[2]} pp{key[3]} {key[4]}/{key[5]}"
        # 10 colours, then the next line style, so no two of the first 40 lines look alike
        ax.plot(g["context_tokens"], g["max_concurrent_users"], marker="o", markersize=3, linewidth=1, label=label,
                color=f"C{i % 10}", linestyle=("-", "--", ":", "-.")[i // 10 % 4])
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=1)  # users span orders of magnitude, and 0 must stay visible
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_tokens(int(x)) if x >= 1 else ""))
    ax.set_xlabel("context (tokens per request)")
    ax.set_ylabel("max concurrent users")
    ax.set_title(f"kvplan sweep: max users vs context ({groups.ngroups} configurations)")
    ax.grid(True, which="both", alpha=0.3)
    if groups.ngroups <= max_legend:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    suffix = path.suffix or ".png"
    with atomic_output(path, suffix=suffix) as tmp:
        fig.savefig(tmp, format=suffix.lstrip(".") or "png")
    return groups.ngroups
