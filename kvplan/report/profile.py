"""Render a profile: predicted vs measured term by term (rich, JSON, markdown), the report directory
(JSON, markdown, PNG plots, each written atomically) and the headline."""

import json
import math
import sys
from pathlib import Path

from ..units import fmt_gib
from .common import check_format, console, md_table, print_json

# (key, label, kind): kind picks the display form
ROWS = (
    ("weights_bytes", "weights", "bytes"),
    ("activation_peak_bytes", "activation peak", "bytes"),
    ("non_torch_bytes", "non-torch", "bytes"),
    ("kv_pool_bytes", "KV pool", "bytes"),
    ("total_memory_bytes", "total memory", "bytes"),
    ("num_blocks", "KV blocks", "count"),
    ("max_concurrent_users", "max users reached", "count"),
    ("memory_utilization", "memory utilization", "ratio"),
    ("internal_fragmentation", "internal fragmentation", "ratio"),
    ("allocator_fragmentation_bytes", "allocator fragmentation", "bytes"),
    ("peak_allocated_bytes", "peak torch allocated", "bytes"),
    ("preemptions", "preemptions", "count"),
    ("decode_tokens_per_s", "decode tokens/s", "rate"),
)
COLUMNS = ("metric", "static", "simulated", "measured", "error", "rel.")
BASIS_MARK = {"measured": "", "computed": " (c)", "not measured": ""}
ERROR_NOTE = ("static: the estimate; simulated: the paging simulator over the same workload on the estimate's pool; "
              "measured: read on the device, (c) computed from measured figures; error: measured "
              "minus simulated, or minus static where nothing was simulated. Non-torch = NVML used - torch reserved; total memory = NVML used "
              "by this process; allocator fragmentation = torch reserved - allocated; utilization = filled / "
              "allocated block slots")
# Memory terms drawn in memory.png (only those the device measured).
MEMORY_TERMS = (("weights_bytes", "weights"), ("activation_peak_bytes", "activations"),
                ("non_torch_bytes", "non-torch"), ("kv_pool_bytes", "KV pool"))


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "bytes":
        return f"{fmt_gib(value)}"
    if kind == "ratio":
        return f"{100 * value:.1f}%"
    if kind == "rate":
        return f"{value:,.1f}"
    return f"{value:,}"


def _fmt_error(value, rel, kind: str) -> tuple[str, str]:
    if value is None:
        return "-", "-"
    if kind == "bytes":
        err = ("+" if value >= 0 else "-") + fmt_gib(abs(value))
    elif kind == "ratio":
        err = f"{100 * value:+.1f} pt"
    elif kind == "rate":
        err = f"{value:+,.1f}"
    else:
        err = f"{value:+,}"
    return err, "-" if rel is None else f"{100 * rel:+.1f}%"


def comparison_rows(d: dict) -> list[list[str]]:
    """One row per metric that has a figure on either side."""
    rows = []
    for key, label, kind in ROWS:
        if all(side.get(key) is None for side in (d["predicted_static"], d["predicted_simulated"], d["measured"])):
            continue
        err, rel = _fmt_error(d["error"].get(key), d["relative_error"].get(key), kind)
        measured = d["measured"].get(key)
        mark = BASIS_MARK[(d["measured_basis"].get(key) or {}).get("kind", "not measured")] if measured is not None else ""
        rows.append([label, _fmt(d["predicted_static"].get(key), kind), _fmt(d["predicted_simulated"].get(key), kind),
                     _fmt(measured, kind) + mark, err, rel])
    return rows


def unmeasured(d: dict) -> list[tuple[str, str]]:
    """(label, why) of the compared figures this device did not measure."""
    return [(label, d["measured_basis"][key]["how"]) for key, label, _ in ROWS
            if (d["measured_basis"].get(key) or {}).get("kind") == "not measured"]


def unmeasured_line(d: dict) -> str | None:
    missing = unmeasured(d)
    if not missing:
        return None
    reasons: dict[str, list[str]] = {}
    for label, why in missing:
        reasons.setdefault(why, []).append(label)
    return "not measured: " + "; ".join(f"{', '.join(labels)} ({why})" for why, labels in reasons.items())


def headline(d: dict) -> str:
    est = d.get("estimate") or {}
    dep = d["deployment"]
    where = f"{d['device_name']} ({d['device']})"
    budget = (f"KV budget {fmt_gib(dep['kv_cache_memory_bytes'])} (given)" if dep.get("kv_cache_memory_bytes") is not None
              else f"{dep.get('gpu') or '?'} x util {dep['gpu_memory_utilization']:g}")
    weights = "random weights" if d["random_weights"] else "checkpoint weights"
    return (f"{d['model']} on {where}, {d['dtype']} ({weights}), KV {est.get('kv_dtype', d['kv_dtype'])}, "
            f"block {est.get('block_size', dep['block_size'])}, {budget}")


def status_line(d: dict) -> str:
    if d["finding"]:
        return f"FINDING: {d['finding']}"
    if d["interrupted"]:
        return f"INTERRUPTED during {d['phase']}: partial report"
    return "complete"


def markdown(d: dict) -> str:
    lines = [f"# kvplan profile: {d['model']}", "", headline(d), "", f"Status: {status_line(d)}", "",
             md_table(list(COLUMNS), comparison_rows(d)), "", ERROR_NOTE + "."]
    if unmeasured_line(d):
        lines += ["", unmeasured_line(d) + "."]
    run, cont = d.get("run"), d.get("contiguous")
    if run:
        lines += ["", "## Run", "", md_table(["figure", "paged"] + (["contiguous"] if cont else []),
                                             _run_rows(run, cont))]
    if d.get("simulated") and "error" in d["simulated"]:
        lines += ["", f"The simulator could not run the workload on the predicted pool: {d['simulated']['error']}."]
    if d["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in d["notes"]]
    return "\n".join(lines) + "\n"


def _run_rows(run: dict, cont: dict | None) -> list[list[str]]:
    keys = (("steps", "steps", "count"), ("requests", "requests", "count"),
            ("output_tokens", "output tokens", "count"), ("max_concurrent_users", "max concurrent users", "count"),
            ("peak_blocks_in_use", "peak blocks in use", "count"), ("memory_utilization", "memory utilization", "ratio"),
            ("preemptions", "preemptions", "count"), ("decode_tokens_per_s", "decode tokens/s", "rate"),
            ("total_time_s", "wall time (s)", "rate"), ("blocks_leaked", "blocks not returned", "count"))
    rows = []
    for key, label, kind in keys:
        row = [label, _fmt(run.get(key), kind)]
        if cont:
            row.append(cont.get("note", "-") if key == "steps" and "note" in cont else _fmt(cont.get(key), kind))
        rows.append(row)
    return rows


def render_profile(result, fmt: str = "table") -> None:
    fmt = check_format(fmt, ("table", "json", "markdown"))
    d = result.to_dict()
    if fmt == "json":
        print_json(_json_ready(d))
    elif fmt == "markdown":
        sys.stdout.write(markdown(d))
    else:
        _rich(d)


def _json_ready(d: dict) -> dict:
    """The stable document: samples stay in the report directory's JSON, not on stdout."""
    out = {k: v for k, v in d.items() if k != "samples"}
    out["num_samples"] = len(d["samples"])
    return _finite(out)


def _finite(value):
    """JSON has no inf/NaN: such figures (e.g. an unbounded concurrency) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _rich(d: dict) -> None:
    from rich.table import Table

    out = console()
    out.print(f"[bold]kvplan profile[/bold]: {headline(d)}")
    style = "red" if d["finding"] else ("yellow" if d["interrupted"] else "green")
    out.print(f"[{style}]{status_line(d)}[/{style}]")
    t = Table(title="predicted vs measured", title_justify="left", caption=ERROR_NOTE, caption_justify="left")
    for col in COLUMNS:  # figures never wrap; the metric's words may
        t.add_column(col, justify="left" if col == "metric" else "right", no_wrap=col != "metric")
    for row in comparison_rows(d):
        t.add_row(*row)
    out.print(t)
    if unmeasured_line(d):
        out.print(f"[dim]{unmeasured_line(d)}[/dim]")
    if d.get("run"):
        r = Table(title="run", title_justify="left")
        r.add_column("figure")
        r.add_column("paged", justify="right")
        if d.get("contiguous"):
            r.add_column("contiguous", justify="right")
        for row in _run_rows(d["run"], d.get("contiguous")):
            r.add_row(*row)
        out.print(r)
    for note in d["notes"]:
        out.print(f"[dim]- {note}[/dim]")


def write_report_dir(result, directory: Path) -> list[Path]:
    """profile.json (with every step sample), profile.md, memory.png, timeline.png; each atomically."""
    from ..atomic import write_text_atomic

    directory = Path(directory)
    d = result.to_dict()
    written = []
    path = directory / "profile.json"
    write_text_atomic(path, json.dumps(_finite(d), indent=2, allow_nan=False, default=str) + "\n")
    written.append(path)
    path = directory / "profile.md"
    write_text_atomic(path, markdown(d))
    written.append(path)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        result.notes.append("matplotlib not installed: no PNG plots (pip install kvplan[report])")
        return written
    written.append(_plot_memory(d, directory / "memory.png"))
    if d["samples"]:
        written.append(_plot_timeline(d, directory / "timeline.png"))
    return written


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    from ..atomic import atomic_output

    with atomic_output(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def memory_chart_terms(d: dict) -> tuple[list, list]:
    """(drawn, left out): the memory terms the device measured, and those it did not."""
    shown = [(k, label) for k, label in MEMORY_TERMS if d["measured"].get(k) is not None]
    return shown, [(k, label) for k, label in MEMORY_TERMS if d["measured"].get(k) is None]


def _plot_memory(d: dict, path: Path) -> Path:
    """Predicted (static) vs measured bars for the memory terms this device measured; the figure
    says which terms it leaves out and what they were predicted to be."""
    shown, left_out = memory_chart_terms(d)
    largest = max([d["predicted_static"].get(k) or 0 for k, _ in shown] +
                  [d["measured"].get(k) or 0 for k, _ in shown] + [0])
    unit, scale = ("GiB", 2 ** 30) if largest >= 2 ** 30 else ("MiB", 2 ** 20)
    fig = _figure(8, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    xs = range(len(shown))
    pred = [(d["predicted_static"].get(k) or 0) / scale for k, _ in shown]
    meas = [d["measured"][k] / scale for k, _ in shown]
    bars = ax.bar([x - 0.2 for x in xs], pred, 0.4, label="predicted (estimate)")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    bars = ax.bar([x + 0.2 for x in xs], meas, 0.4, label="measured")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks(list(xs), [label for _, label in shown])
    ax.set_ylabel(unit)
    ax.set_title(f"kvplan profile: {d['model']} on {d['device_name']}")
    ax.legend(loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    if left_out:
        why = "; ".join(sorted({d["measured_basis"].get(k, {}).get("how", "not measured") for k, _ in left_out}))
        text = ("Not measured here, so not drawn: " +
                ", ".join(f"{label} (predicted {fmt_gib(d['predicted_static'].get(k))})"
                          if d["predicted_static"].get(k) is not None else label for k, label in left_out) +
                f".\n{why}.")
        fig.text(0.01, 0.01, text, fontsize=8, va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout()
    return _save(fig, path)


def _plot_timeline(d: dict, path: Path) -> Path:
    """Blocks in use and running sequences per step; torch allocated / reserved when on CUDA."""
    samples = d["samples"]
    steps = [s["step"] for s in samples]
    cuda = any(s["allocated_bytes"] is not None for s in samples)
    fig = _figure(10, 7 if cuda else 5)
    top = fig.add_subplot(2 if cuda else 1, 1, 1)
    top.plot(steps, [s["blocks_in_use"] for s in samples], label="blocks in use")
    top.axhline(d["measured"].get("num_blocks") or 0, color="grey", linewidth=0.8, label="pool")
    top.set_ylabel("blocks")
    top.set_ylim(bottom=0)
    right = top.twinx()
    right.plot(steps, [s["running"] for s in samples], color="tab:orange", linewidth=0.8, label="running")
    right.set_ylabel("running sequences")
    top.legend(loc="upper left", fontsize=8)
    right.legend(loc="upper right", fontsize=8)
    top.set_title(f"kvplan profile: {d['model']}")
    top.grid(True, alpha=0.3)
    if cuda:
        bottom = fig.add_subplot(2, 1, 2)
        gib = 2 ** 30
        bottom.plot(steps, [(s["allocated_bytes"] or 0) / gib for s in samples], label="torch allocated")
        bottom.plot(steps, [(s["reserved_bytes"] or 0) / gib for s in samples], label="torch reserved")
        if any(s["nvml_used_bytes"] is not None for s in samples):
            bottom.plot(steps, [(s["nvml_used_bytes"] or 0) / gib for s in samples], label="NVML used")
        bottom.set_ylabel("GiB")
        bottom.set_xlabel("step")
        bottom.legend(fontsize=8)
        bottom.grid(True, alpha=0.3)
    else:
        top.set_xlabel("step")
    fig.tight_layout()
    return _save(fig, path)
