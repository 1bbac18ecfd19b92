"""`simulate --plot`: blocks, running requests and memory utilization over time, paged beside contiguous.

Top: blocks allocated (line) over blocks holding tokens (shaded to the line; the gap is internal
fragmentation), the pool drawn on top so a full pool stays visible. Middle: running requests
against the --max-num-seqs cap. Bottom: memory utilization. Legends sit outside the axes.
"""

from pathlib import Path

RUNS = (("paged", "tab:blue"), ("contiguous", "tab:orange"))


def simulation_figure(report):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    d = report.to_dict()
    bs, unit = d["block_size"], d["time_unit"]
    fig = Figure(figsize=(11, 8.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    blocks, running, util = fig.subplots(3, 1, sharex=True, height_ratios=(3, 2, 2))
    timelines = {"paged": report.timeline, "contiguous": report.contiguous_timeline}
    for label, color in RUNS:
        timeline = timelines[label]
        if not timeline:
            continue
        times = [p[1] for p in timeline]
        allocated = [p[3] / bs for p in timeline]
        filled = [p[4] / bs for p in timeline]
        blocks.plot(times, allocated, color=color, linewidth=1.3, label=f"{label}: blocks allocated")
        blocks.fill_between(times, filled, color=color, alpha=0.25, linewidth=0, label=f"{label}: holding tokens")
        running.plot(times, [p[2] for p in timeline], color=color, linewidth=1.1, label=label)
        summary = d if label == "paged" else d["contiguous"]
        mean = summary.get("memory_utilization")
        util.plot(times, [p[4] / p[3] if p[3] else 0.0 for p in timeline], color=color, linewidth=1.1,
                  label=label + ("" if mean is None else f" (mean {100 * mean:.1f}%)"))
    blocks.axhline(d["num_blocks"], color="black", linestyle=(0, (4, 3)), linewidth=1, zorder=5,
                   label=f"pool: {d['num_blocks']:,} blocks")
    blocks.set_ylim(0, d["num_blocks"] * 1.08)
    blocks.set_ylabel(f"blocks ({bs} tokens)")
    blocks.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    running.axhline(d["max_num_seqs"], color="black", linestyle=(0, (4, 3)), linewidth=1, zorder=5,
                    label=f"--max-num-seqs {d['max_num_seqs']:,}")
    running.set_ylim(bottom=0)
    running.set_ylabel("running requests")
    util.set_ylim(0, 1.05)
    util.set_ylabel("memory utilization\n(filled / allocated)")
    util.set_xlabel(f"time ({unit})")
    blocks.set_title(f"kvplan simulate: {d['model']} on {d['gpu'] or 'no GPU'}, {d['num_blocks']:,} blocks x {bs} "
                     f"tokens, max_model_len {d['max_model_len']:,}")
    for ax in (blocks, running, util):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return fig


def plot_simulation(report, path: Path) -> None:
    """The figure, written atomically in the format of the path's suffix (PNG by default)."""
    from ..atomic import atomic_output
    from .common import plot_format

    fmt = plot_format(path)
    fig = simulation_figure(report)
    with atomic_output(path, suffix="." + fmt) as tmp:
        fig.savefig(tmp, format=fmt)
