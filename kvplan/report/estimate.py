"""The estimate as a Report: summary, memory per GPU, users per context (also the CSV rows), verdict.
JSON is the Estimate itself (docs/estimate.md lists its keys)."""

import math
from dataclasses import dataclass

from ..plan import Estimate
from ..units import fmt_gb, fmt_gib, fmt_tokens
from .document import TEXT, Line, Pairs, Records, Report, Table, col, data
from .common import FORMATS
from .formats import emit


def both_units(n: int | None) -> str:
    return "-" if n is None else f"{fmt_gib(n)} ({fmt_gb(n)})"


@dataclass(frozen=True)
class MemoryRow:
    term: str = col("term", kind=TEXT)
    bytes: int | None = col("size", show=both_units)
    basis: str = col("basis", kind=TEXT)


@dataclass(frozen=True)
class ContextRecord:
    """One row of the users-per-context table; the CSV rows."""

    model: str = data()
    gpu: str = data()
    tp: int = data()
    pp: int = data()
    kv_dtype: str = data()
    context_tokens: int = col("context", show=fmt_tokens)
    kv_bytes_per_request: int = col("KV / request (whole model)", show=fmt_gib)
    kv_bytes_per_request_per_gpu: int = col("KV / request / GPU", show=fmt_gib)
    kv_budget_bytes: int | None = data()
    max_concurrent_users: int | None = col("max users")


def render_estimate(est: Estimate, fmt: str = "table") -> None:
    emit(estimate_report(est), fmt)


def estimate_report(est: Estimate) -> Report:
    dep = est.deployment
    version = f" {est.engine_version}" if est.engine_version else ""
    title = (f"kvplan estimate: {est.model} on {est.gpu or 'no GPU'} x{dep['tp'] * dep['pp']} "
             f"(tp={dep['tp']}, pp={dep['pp']}, engine {est.engine}{version})")
    contexts = [ContextRecord(est.model, est.gpu or "", dep["tp"], dep["pp"], est.kv_dtype, r.context_tokens,
                              r.kv_bytes_per_request, r.kv_bytes_per_request_per_gpu, est.kv_budget_bytes,
                              r.max_concurrent_users) for r in est.contexts]
    users_table = Table(ContextRecord, contexts, title="Users per context")
    blocks = [Line(title, "title"), Pairs(summary_pairs(est)),
              Table(MemoryRow, memory_rows(est), title="Memory per GPU")]
    if est.kv_budget_bytes is not None:
        blocks.append(Pairs(pool_pairs(est)))
    blocks += [users_table, Line(est.verdict, {True: "ok", False: "fail", None: "warn"}[est.fits], label="Verdict:")]
    blocks += [Line(s, "item") for s in est.suggestions]
    blocks += [Line(n, "note") for n in est.notes]
    blocks.append(Line("GiB = 2^30 bytes, GB = 10^9 bytes", "dim"))
    document = est.to_dict()
    if isinstance(est.max_concurrency, float) and not math.isfinite(est.max_concurrency):
        document["max_concurrency"] = None
    return Report("kvplan estimate", FORMATS, blocks, data=document, records=Records.of(users_table))


def summary_pairs(est: Estimate) -> list[tuple[str, str]]:
    state = " + state" if est.state_bytes_per_request else ""
    pairs = [
        ("Model", f"{est.model} ({est.model_source})"),
        ("Layout", est.layout),
        ("KV dtype / weights", f"{est.kv_dtype} / {est.weights_dtype}"),
        ("KV per token", f"{est.kv_bytes_per_token:,} B (whole model, no window cap)"),
        (f"KV{state} per request @ {est.context_tokens:,}",
         f"{both_units(est.kv_bytes_per_request)}  [{est.kv_bytes_per_request:,} B]"),
        (f"KV for batch {est.batch}", f"{both_units(est.kv_bytes_total)}  [{est.kv_bytes_total:,} B]"),
    ]
    if est.state_bytes_per_request:
        pairs.append(("Recurrent state / request", f"{both_units(est.state_bytes_per_request)} (constant)"))
    return pairs


def memory_rows(est: Estimate) -> list[MemoryRow]:
    rows = []
    if est.gpu_memory_bytes is not None:
        util = est.deployment["gpu_memory_utilization"]
        rows.append(MemoryRow("GPU memory (reported)", est.gpu_memory_bytes, est.gpu or ""))
        rows.append(MemoryRow(f"x utilization {util:g}", int(est.gpu_memory_bytes * util), "engine's share"))
    rows.append(MemoryRow("Weights / GPU", est.weights_bytes_per_gpu, est.weights_basis))
    rows += [MemoryRow(t["name"], t["bytes"], t["basis"]) for t in est.overhead]
    given = est.deployment.get("kv_cache_memory_bytes") is not None
    rows.append(MemoryRow("KV budget / GPU", est.kv_budget_bytes, "--kv-cache-memory" if given else "the rest"))
    return rows


def pool_pairs(est: Estimate) -> list[tuple[str, str]]:
    users = "-" if est.max_concurrent_users is None else f"{est.max_concurrent_users:,}"
    longest = "-" if est.max_context_tokens is None else f"{est.max_context_tokens:,}"
    pairs = [("KV blocks", f"{est.num_blocks:,} x {est.block_size} tokens"),
             ("KV cache tokens", f"{est.kv_cache_tokens:,}")]
    if est.max_concurrency is not None and math.isfinite(est.max_concurrency):
        pairs.append((f"Max concurrency @ {est.max_model_len:,}", f"{est.max_concurrency:.2f}x"))
    pairs += [(f"Max users @ {est.context_tokens:,}", users), (f"Longest context for batch {est.batch}", longest)]
    return pairs
