"""A simulation as a Report: one row per metric, paged beside contiguous. JSON is the simulation's own
document (docs/simulate.md lists its keys); CSV has the raw figures under their JSON keys."""

from dataclasses import dataclass
from typing import Any

from .document import NUM, TEXT, Line, Records, Report, Table, col, data
from .common import FORMATS
from .formats import emit


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:,}" if isinstance(x, int) else f"{x:,.{digits}f}"


@dataclass(frozen=True)
class MetricRow:
    label: str = col("metric", kind=TEXT)
    paged: str = col("paged", kind=NUM, show=str)
    contiguous: str = col("contiguous", kind=NUM, show=str)


@dataclass(frozen=True)
class MetricRecord:
    """The CSV rows: a metric under its JSON key, raw figures."""

    metric: str = data()
    paged: Any = data()
    contiguous: Any = data()


CSV_METRICS = ("peak_concurrency", "mean_concurrency", "effective_batch", "memory_utilization",
               "internal_fragmentation", "prefix_hit_rate", "prefill_tokens_saved", "preemptions",
               "completed_requests", "simulated_time", "steps")


def render_simulation(report, fmt: str = "table") -> None:
    emit(simulation_report(report.to_dict()), fmt)


def simulation_report(d: dict) -> Report:
    c = d.get("contiguous") or {}
    blocks = [Line(f"kvplan simulate: {headline(d)}", "title"), Table(MetricRow, metric_rows(d))]
    if c:
        blocks.append(Line(f"contiguous reservation: {c['reservation_slots']:,} slots per request, at most "
                           f"{c['max_concurrency']:,} requests fit"))
    if d["peak_concurrency"] == d["max_num_seqs"]:
        blocks.append(Line(f"peak {d['peak_concurrency']:,} = --max-num-seqs cap: concurrency was held at the "
                           "scheduler's limit; raise --max-num-seqs to see what KV memory allows", "note"))
    blocks.append(Line(f"latency and throughput: {d['latency']['basis']}", "note"))
    blocks += [Line(n, "note") for n in d["notes"]]
    return Report("kvplan simulate", FORMATS, blocks, data=d, records=Records.of(Table(MetricRecord, metric_records(d))))


def metric_rows(d: dict) -> list[MetricRow]:
    """Display forms, paged beside contiguous."""
    c = d.get("contiguous") or {}
    unit = d["time_unit"]
    qd, cqd = d["queueing_delay"], c.get("queueing_delay") or {}
    rows = [
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
    lat, clat = d["latency"], c.get("latency") or {}
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "end-to-end")):
        scale, shown = _time_unit(unit, key, lat[key], clat.get(key))
        rows.append((f"{label} p50 / p90 / p99 ({shown})", _quantiles(lat[key], scale), _quantiles(clat.get(key), scale)))
    rows += [(f"output / total tokens per {unit}{' (modelled)' if unit == 's' else ''}",
              f"{lat['output_tokens_per_s']:,.0f} / {lat['total_tokens_per_s']:,.0f}",
              f"{clat['output_tokens_per_s']:,.0f} / {clat['total_tokens_per_s']:,.0f}" if clat else "-"),
             ("prompt tokens from the prefix cache", _pct(lat["prompt_hit_rate"]), "-")]
    slo, cslo = lat["slo"], clat.get("slo") or {}
    if slo:
        shown = [("meeting_ttft", f"TTFT <= {slo['ttft']:g} s")] if slo["ttft"] is not None else []
        shown += [("meeting_tpot", f"TPOT <= {slo['tpot']:g} s")] if slo["tpot"] is not None else []
        shown += [("meeting_both", "both")] if len(shown) == 2 else []
        rows += [(f"requests meeting {label}", _pct(slo[key]), _pct(cslo.get(key))) for key, label in shown]
    return [MetricRow(*r) for r in rows]


def _time_unit(unit: str, key: str, *runs: dict | None) -> tuple[float, str]:
    """Modelled seconds shown in ms when every figure of the row is under a second (TPOT always is)."""
    if unit != "s":
        return 1.0, unit
    if key == "tpot" or max(r["max"] for r in runs if r) < 1:
        return 1000.0, "ms, modelled"
    return 1.0, "s, modelled"


def _quantiles(q: dict | None, scale: float) -> str:
    return " / ".join(f"{scale * q[p]:.3g}" for p in ("p50", "p90", "p99")) if q else "-"


def metric_records(d: dict) -> list[MetricRecord]:
    c = d.get("contiguous") or {}
    rows = [MetricRecord(key, d[key], c.get(key, "")) for key in CSV_METRICS]
    cqd = c.get("queueing_delay") or {}
    rows += [MetricRecord(f"queueing_delay_{q}", d["queueing_delay"][q], cqd.get(q, "")) for q in ("p50", "p90", "p99")]
    lat, clat = d["latency"], c.get("latency") or {}
    rows += [MetricRecord(f"{key}_{q}", lat[key][q], clat[key][q] if clat else "")
             for key in ("ttft", "tpot", "e2e") for q in ("p50", "p90", "p99")]
    rows += [MetricRecord(key, lat[key], clat.get(key, "")) for key in ("output_tokens_per_s", "total_tokens_per_s")]
    rows.append(MetricRecord("prompt_hit_rate", lat["prompt_hit_rate"], ""))
    slo, cslo = lat["slo"] or {}, clat.get("slo") or {}
    rows += [MetricRecord(f"slo_{key}", slo[key], cslo.get(key, "")) for key in ("meeting_ttft", "meeting_tpot",
                                                                                "meeting_both") if slo]
    return rows


def headline(d: dict) -> str:
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
