"""`simulate --plot`: blocks in use and memory utilization over time, paged vs contiguous (PNG)."""

from pathlib import Path


def plot_simulation(report, path: Path) -> None:
    """Blocks in use and memory utilization over time, paged vs contiguous; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..atomic import atomic_output

    d = report.to_dict()
    bs, unit = d["block_size"], d["time_unit"]
    fig = Figure(figsize=(10, 7), dpi=110)
    FigureCanvasAgg(fig)
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    runs = (("paged", report.timeline, "tab:blue"), ("contiguous", report.contiguous_timeline, "tab:orange"))
    for label, timeline, color in runs:
        if not timeline:
            continue
        times = [p[1] for p in timeline]
        top.plot(times, [p[3] / bs for p in timeline], color=color, linewidth=1.2, label=f"{label}: allocated")
        top.plot(times, [p[4] / bs for p in timeline], "--", color=color, linewidth=0.9,
                 label=f"{label}: holding tokens")
        bottom.plot(times, [p[4] / p[3] if p[3] else 0.0 for p in timeline], color=color, linewidth=1, label=label)
    top.axhline(d["num_blocks"], color="grey", linewidth=0.8, label="pool")
    top.set_ylabel(f"blocks ({bs} tokens)")
    top.set_title(f"kvplan simulate: {d['model']}, {d['num_blocks']:,} blocks")
    bottom.set_ylabel("memory utilization")
    bottom.set_ylim(0, 1.05)
    bottom.set_xlabel(f"time ({unit})")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    suffix = path.suffix or ".png"
    with atomic_output(path, suffix=suffix) as tmp:
        fig.savefig(tmp, format=suffix.lstrip(".") or "png")
