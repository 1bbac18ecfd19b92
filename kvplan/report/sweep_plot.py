"""`sweep --plot`: max concurrent users against context, one line per configuration (PNG)."""

from pathlib import Path

from ..errors import InputError
from ..units import fmt_tokens

CONFIG_COLUMNS = ["model", "gpu", "tp", "pp", "weights_dtype", "kv_dtype"]


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
