"""A profile as a Report: predicted vs measured term by term, the run beside the contiguous rerun,
what was not measured and the notes. JSON is the ProfileResult document less its step samples
(docs/profile.md lists its keys); `--report DIR` writes the document with its samples, the markdown
and the plots (report/profile_plot.py), each atomically."""

import json
from dataclasses import dataclass
from pathlib import Path

from ..units import fmt_gib
from .document import TEXT, Line, Report, Table, col
from .formats import emit
from .formats.json_doc import finite
from .formats.markdown import render as render_markdown

FORMATS = ("table", "json", "markdown")
# (key, label, kind): kind picks the display form
METRIC_ROWS = (
    ("weights_bytes", "weights", "bytes"),
    ("activation_peak_bytes", "activation peak", "bytes"),
    ("non_torch_bytes", "non-torch", "bytes"),
    ("non_torch_baseline_bytes", "CUDA context (no term)", "bytes"),
    ("kv_pool_bytes", "KV pool", "bytes"),
    ("kv_pool_allocator_overhead_bytes", "allocator excess over the pool", "bytes"),
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
RUN_ROWS = (("steps", "steps", "count"), ("requests", "requests", "count"),
            ("output_tokens", "output tokens", "count"), ("max_concurrent_users", "max concurrent users", "count"),
            ("peak_blocks_in_use", "peak blocks in use", "count"), ("memory_utilization", "memory utilization", "ratio"),
            ("preemptions", "preemptions", "count"), ("decode_tokens_per_s", "decode tokens/s", "rate"),
            ("total_time_s", "wall time (s)", "rate"), ("blocks_leaked", "blocks not returned", "count"))
BASIS_MARK = {"measured": "", "computed": " (c)", "not measured": ""}
ERROR_NOTE = ("static: the estimate; simulated: the paging simulator over the same workload on the estimate's pool; "
              "measured: read on the device, (c) computed from measured figures; error: measured minus simulated, "
              "or minus static where nothing was simulated. CUDA context = driver used - torch reserved right after "
              "CUDA start-up; non-torch = the same after the warm-up - the CUDA context (the growth the policy's term "
              "models); total memory = the most driver used over the run - the CUDA context (NVML for this process, "
              "else the whole device: the basis says which); allocator fragmentation = torch reserved - allocated; "
              "utilization = filled / allocated block slots")


@dataclass(frozen=True)
class ComparisonRow:
    """One compared figure, in display form (JSON carries the raw figures)."""

    metric: str = col("metric", kind=TEXT)
    static: str = col("static", show=str)
    simulated: str = col("simulated", show=str)
    measured: str = col("measured", show=str)
    error: str = col("error", show=str)
    relative_error: str = col("rel.", show=str)


@dataclass(frozen=True)
class RunRow:
    figure: str = col("figure", kind=TEXT)
    paged: str = col("paged", show=str)


@dataclass(frozen=True)
class ComparedRunRow(RunRow):
    contiguous: str = col("contiguous", show=str)


def _fmt(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "bytes":
        return fmt_gib(value)
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


def comparison_rows(d: dict) -> list[ComparisonRow]:
    """One row per metric that has a figure on either side."""
    rows = []
    for key, label, kind in METRIC_ROWS:
        if all(side.get(key) is None for side in (d["predicted_static"], d["predicted_simulated"], d["measured"])):
            continue
        err, rel = _fmt_error(d["error"].get(key), d["relative_error"].get(key), kind)
        measured = d["measured"].get(key)
        mark = BASIS_MARK[(d["measured_basis"].get(key) or {}).get("kind", "not measured")] if measured is not None else ""
        rows.append(ComparisonRow(label, _fmt(d["predicted_static"].get(key), kind),
                                  _fmt(d["predicted_simulated"].get(key), kind), _fmt(measured, kind) + mark, err, rel))
    return rows


def run_rows(run: dict, cont: dict | None) -> list[RunRow]:
    if not cont:
        return [RunRow(label, _fmt(run.get(key), kind)) for key, label, kind in RUN_ROWS]
    return [ComparedRunRow(label, _fmt(run.get(key), kind), _fmt(cont.get(key), kind)) for key, label, kind in RUN_ROWS]


def unmeasured_line(d: dict) -> str | None:
    """The compared figures this device did not measure, grouped by why."""
    reasons: dict[str, list[str]] = {}
    for key, label, _ in METRIC_ROWS:
        basis = d["measured_basis"].get(key) or {}
        if basis.get("kind") == "not measured":
            reasons.setdefault(basis["how"], []).append(label)
    if not reasons:
        return None
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


def status_line(d: dict) -> Line:
    if d["finding"]:
        return Line(d["finding"], "fail", label="FINDING:")
    if d["interrupted"]:
        return Line(f"during {d['phase']}: partial report", "warn", label="INTERRUPTED")
    if d["phase"] != "done":
        return Line(f"written before the {d['phase']} phase finished: partial report", "warn", label="PARTIAL:")
    return Line("complete", "ok", label="Status:")


def document(d: dict) -> dict:
    """The stable JSON document: the step samples stay in the report directory's profile.json."""
    out = {k: v for k, v in d.items() if k != "samples"}
    out["num_samples"] = len(d["samples"])
    return out


def profile_report(d: dict) -> Report:
    blocks = [Line(f"kvplan profile: {headline(d)}", "title"), status_line(d),
              Table(ComparisonRow, comparison_rows(d), title="predicted vs measured"), Line(ERROR_NOTE, "dim")]
    missing = unmeasured_line(d)
    if missing:
        blocks.append(Line(missing, "note"))
    run, cont = d.get("run"), d.get("contiguous")
    if run:
        ran = cont if cont and "note" not in cont else None
        blocks.append(Table(ComparedRunRow if ran else RunRow, run_rows(run, ran), title="run"))
        if cont and "note" in cont:
            blocks.append(Line(f"contiguous: {cont['note']}", "note"))
    if d.get("simulated") and "error" in d["simulated"]:
        blocks.append(Line(f"the simulator could not run the workload on the predicted pool: {d['simulated']['error']}",
                           "note"))
    blocks += [Line(n, "note") for n in d["notes"]]
    blocks.append(Line("GiB = 2^30 bytes", "dim"))
    return Report("kvplan profile", FORMATS, blocks, data=document(d))


def render_profile(result, fmt: str = "table") -> None:
    emit(profile_report(result.to_dict()), fmt)


def write_report_dir(result, directory: Path) -> list[Path]:
    """profile.json (with every step sample), profile.md, memory.png, timeline.png; each atomically.
    `kvplan profile --report` checked for matplotlib before the run."""
    from ..atomic import write_text_atomic
    from .profile_plot import plot_memory, plot_timeline

    directory = Path(directory)
    d = result.to_dict()
    written = [directory / "profile.json", directory / "profile.md"]
    write_text_atomic(written[0], json.dumps(finite(d), indent=2, allow_nan=False, default=str) + "\n")
    write_text_atomic(written[1], render_markdown(profile_report(d)))
    written.append(plot_memory(d, directory / "memory.png"))
    if d["samples"]:
        written.append(plot_timeline(d, directory / "timeline.png"))
    return written
