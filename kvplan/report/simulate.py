"""Render a simulation: rich table, JSON, CSV (metric, paged, contiguous), markdown; the PNG plot."""

import csv
import sys
from pathlib import Path

from .common import check_format, console, md_table, print_json


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:,}" if isinstance(x, int) else f"{x:,.{digits}f}"


def metric_rows(d: dict) -> list[tuple[str, str, str]]:
    """(label, paged, contiguous) in display form."""
    c = d.get("contiguous") or {}
    unit = d["time_unit"]
    qd, cqd = d["queueing_delay"], c.get("queueing_delay") or {}
    return [
        ("peak concurrent requests", _num(d["peak_concurrency"]), _num(c.get("peak_concurrency"))),
        ("mean concurrent requests", _num(d["mean_concurrency"]), _num(c.get("mean_concurrency"))),
        ("effective batch (mean / max-num-seqs)", _pct(d["effective_batch"]), "-"),
        ("memory utilization (live / allocated)", _pct(d["memory_utilization"]), _pct(c.get("memory_utilization"))),
        ("internal fragmentation", _pct(d["internal_fragmentation"]), _pct(c.get("internal_fragmentation"))),
        ("prefix-cache hit rate", _pct(d["prefix_hit_rate"]), "-"),
        ("prefill tokens saved", _num(d["prefill_tokens_saved"]), "-"),
        ("preemptions", _num(d["preemptions"]), _num(c.get("preemptions"))),
        ("completed requests", _num(d["completed_requests"]), _num(c.get("completed_requests"))),
        (f"queueing delay p50 / p90 / p99 ({unit})", f"{qd['p50']:.3g} / {qd['p90']:.3g} / {qd['p99']:.3g}",
         f"{cqd['p50']:.3g} / {cqd['p90']:.3g} / {cqd['p99']:.3g}" if cqd else "-"),
        (f"simulated time ({unit})", _num(d["simulated_time"], 2), _num(c.get("simulated_time"), 2)),
        ("scheduler steps", _num(d["steps"]), _num(c.get("steps"))),
    ]


def render_simulation(report, fmt: str = "table") -> None:
    fmt = check_format(fmt)
    d = report.to_dict()
    if fmt == "json":
        print_json(d)
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["metric", "paged", "contiguous"])
        c = d.get("contiguous") or {}
        for key in ("peak_concurrency", "mean_concurrency", "effective_batch", "memory_utilization",
                    "internal_fragmentation", "prefix_hit_rate", "prefill_tokens_saved", "preemptions",
                    "completed_requests", "simulated_time", "steps"):
            w.writerow([key, d[key], c.get(key, "")])
        for q in ("p50", "p90", "p99"):
            w.writerow([f"queueing_delay_{q}", d["queueing_delay"][q], (c.get("queueing_delay") or {}).get(q, "")])
    elif fmt == "markdown":
        lines = [f"**kvplan simulate**: {_headline(d)}", "",
                 md_table(["metric", "paged", "contiguous"], [list(r) for r in metric_rows(d)])]
        lines += [""] + [f"- {n}" for n in d["notes"]] if d["notes"] else []
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        _rich(d)


def _headline(d: dict) -> str:
    w = d["workload"]
    if w["kind"] == "synthetic":
        what = f"{w['requests']:,} requests, prompt {w['prompt_len']}, output {w['output_len']}"
        if w["shared_prefix"]:
            what += f", shared prefix {w['shared_prefix']:,} ({w['prefix_groups']} group(s))"
        if w["n"] > 1:
            what += f", n={w['n']}"
        what += ", all at once" if w["arrival_rate"] is None else f", {w['arrival_rate']:g}/{d['time_unit']}"
    else:
        what = f"trace {w['path']}"
    return (f"{d['model']} on {d['gpu'] or 'no GPU'} (tp={d['tp']}, pp={d['pp']}): {d['num_blocks']:,} blocks x "
            f"{d['block_size']} tokens ({d['layers_per_block']} layers/block), max_model_len {d['max_model_len']:,}; "
            f"{what}")


def _rich(d: dict) -> None:
    from rich.table import Table

    out = console()
    out.print(f"[bold]kvplan simulate[/bold]: {_headline(d)}")
    t = Table(show_header=True, header_style="bold")
    t.add_column("metric", style="cyan")
    t.add_column("paged", justify="right")
    t.add_column("contiguous (max_model_len reserved)", justify="right")
    for row in metric_rows(d):
        t.add_row(*row)
    out.print(t)
    c = d.get("contiguous")
    if c:
        out.print(f"contiguous reservation: {c['reservation_slots']:,} slots per request, at most "
                  f"{c['max_concurrency']:,} requests fit")
    for note in d["notes"]:
        out.print(f"[yellow]note:[/yellow] {note}")


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
