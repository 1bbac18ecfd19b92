"""`sweep --plot`: max concurrent users against context, one line per configuration.

Readable with many lines: each configuration gets its own (colour, line style, marker), chosen
from what varies (colour by one column, line style by another, marker by the rest, or by the
colour's column again when nothing else varies); markers are hollow and earlier lines drawn
wider, so a line lying on another still shows; configurations with identical figures share one
line whose label names them all; a line stops at its model's max context, which a dotted vertical
line marks; what every configuration shares goes in the title; configurations where no request
fits at any context are named in the legend, not drawn along zero; the legend sits outside.
"""

import itertools
from pathlib import Path

from ..errors import InputError
from ..units import fmt_tokens

CONFIG_COLUMNS = ("model", "gpu", "tp", "pp", "weights_dtype", "kv_dtype")
COLOURS = tuple(f"C{i}" for i in range(10))
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
MAX_LEGEND = 60  # entries; more than this and the legend is left out (the title says so)
_LABELS = {"model": "{}", "gpu": "{}", "tp": "tp{}", "pp": "pp{}", "weights_dtype": "{} weights",
           "kv_dtype": "{} KV"}


def _describe(columns, values, sep: str = " ") -> str:
    return sep.join(_LABELS[c].format(v) for c, v in zip(columns, values))


def styles_for(configs: list[tuple], columns: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """A distinct (colour, line style, marker) per configuration.

    The columns that vary are mapped to attributes: the one with the most values (at most 10) to
    colour, the next (at most 4) to line style, all others together (at most 10) to marker, so a
    colour or a dash means the same thing on every line. When the grid does not allow that, the
    configurations are numbered through every combination instead."""
    varying = [i for i in range(len(columns)) if len({c[i] for c in configs}) > 1]
    varying.sort(key=lambda i: -len({c[i] for c in configs}))
    if varying:
        colour_of, rest = varying[0], varying[1:]
        dash_of = next((i for i in rest if len({c[i] for c in configs}) <= len(LINESTYLES)), None)
        marker_of = [i for i in rest if i != dash_of] or [colour_of]

        def index(i_columns, config, palette):
            values = sorted({tuple(c[i] for i in i_columns) for c in configs}, key=str)
            key = tuple(config[i] for i in i_columns)
            return palette[values.index(key)] if len(values) <= len(palette) else None

        styles = [(index([colour_of], c, COLOURS), index([dash_of] if dash_of is not None else [], c, LINESTYLES),
                   index(marker_of, c, MARKERS)) for c in configs]
        if all(None not in s for s in styles) and len(set(styles)) == len(styles):
            return styles
    combos = itertools.product(LINESTYLES, MARKERS, COLOURS)
    styles = []
    for _, (dash, marker, colour) in zip(configs, combos):
        styles.append((colour, dash, marker))
    if len(styles) < len(configs):
        raise InputError(f"--plot: {len(configs):,} configurations are too many lines for one plot "
                         f"(at most {len(LINESTYLES) * len(MARKERS) * len(COLOURS)}): filter with --fits-only, "
                         "--min-users or fewer models and GPUs")
    return styles


def users_vs_context_figure(frame, model_max: dict[str, int | None]):
    """The figure, and how many configurations it shows. `model_max`: each model's max context."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    if frame.empty:
        raise InputError("--plot: no rows to plot (filters removed everything)")
    series: dict[tuple, list] = {}
    for key, g in frame.groupby(list(CONFIG_COLUMNS), observed=True, sort=False):
        g = g[g["within_model_max"]].sort_values("context_tokens")
        series[key] = (g["context_tokens"].tolist(), g["max_concurrent_users"].tolist())
    shared = [i for i, _ in enumerate(CONFIG_COLUMNS) if len({k[i] for k in series}) == 1]
    varying = tuple(i for i in range(len(CONFIG_COLUMNS)) if i not in shared)
    never = [k for k, (_, users) in series.items() if not any(users)]
    drawn: dict[tuple, list[tuple]] = {}  # identical figures -> the configurations that share them
    for key, (x, y) in series.items():
        if x and any(y):
            drawn.setdefault((tuple(x), tuple(y)), []).append(key)
    lines = list(drawn.items())
    styles = styles_for([keys[0] for _, keys in lines], CONFIG_COLUMNS)

    def name(key: tuple) -> str:
        return _describe([CONFIG_COLUMNS[i] for i in varying], [key[i] for i in varying]) or "all"

    wide = len(lines) > 8
    fig = Figure(figsize=(13 if wide else 10, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for n, (((x, y), keys), (colour, dash, marker)) in enumerate(zip(lines, styles)):
        halo = 1 - n / max(len(lines) - 1, 1)  # the first line drawn widest: a later one on top leaves it visible
        ax.plot(x, y, color=colour, linestyle=dash, marker=marker, markerfacecolor="none", markersize=5 + 2.5 * halo,
                markeredgewidth=1.2, linewidth=1.2 + 1.2 * halo, label=" = ".join(name(k) for k in keys))
    maxima: dict[int, list[str]] = {}
    for m in sorted({k[0] for k in series}):
        top = model_max.get(m)
        if top and top <= frame["context_tokens"].max():
            maxima.setdefault(top, []).append(m)
    for top, names in maxima.items():
        ax.axvline(top, color="dimgrey", linestyle=":", linewidth=1.2)
        ax.annotate(f"{', '.join(names)}: max {top:,}", (top, 1), xycoords=("data", "axes fraction"), rotation=90,
                    ha="right", va="top", fontsize=7, color="dimgrey", xytext=(-2, -4), textcoords="offset points")
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=1)  # users span orders of magnitude, and 0 must stay visible
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_tokens(int(v)) if v >= 1 else ""))
    ax.set_xlabel("context (tokens per request); lines stop at the model's max context")
    ax.set_ylabel("max concurrent users")
    common = _describe([CONFIG_COLUMNS[i] for i in shared], [next(iter(series))[i] for i in shared], ", ")
    ax.set_title(f"kvplan sweep: max users vs context, {len(series)} configuration(s)"
                 + (f" ({common})" if common else ""))
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if never:  # named, not drawn: a line along zero would hide the axis
        handles.append(Line2D([], [], linestyle="none"))
        labels.append("no request fits at any context:\n" + "\n".join(name(k) for k in never))
    if len(handles) <= MAX_LEGEND:
        ax.legend(handles, labels, fontsize=7 if wide else 8, loc="upper left", bbox_to_anchor=(1.01, 1),
                  borderaxespad=0, ncol=1 if len(handles) <= 30 else 2, title="one line per configuration",
                  title_fontsize=8)
    else:
        ax.text(0.99, 0.99, f"{len(lines)} lines: too many for a legend", transform=ax.transAxes, ha="right",
                va="top", fontsize=8)
    return fig, len(series)


def plot_users_vs_context(frame, path: Path, model_max: dict[str, int | None]) -> int:
    """Write the figure atomically (format from the suffix, PNG by default); the number of configurations."""
    from ..atomic import atomic_output
    from .common import plot_format

    fmt = plot_format(path)
    fig, configurations = users_vs_context_figure(frame, model_max)
    with atomic_output(path, suffix="." + fmt) as tmp:
        fig.savefig(tmp, format=fmt)
    return configurations
