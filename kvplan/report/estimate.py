"""Render an Estimate as a rich report, JSON, CSV (one row per context) or markdown."""

import csv
import math
import sys

from ..plan import Estimate
from ..units import fmt_gb, fmt_gib, fmt_tokens
from .common import check_format, console, md_table, print_json


def render_estimate(est: Estimate, fmt: str = "table") -> None:
    fmt = check_format(fmt)
    if fmt == "json":
        print_json(_json_ready(est.to_dict()))
    elif fmt == "csv":
        _csv(est)
    elif fmt == "markdown":
        sys.stdout.write(markdown(est) + "\n")
    else:
        _rich(est)


def _json_ready(d: dict) -> dict:
    mcc = d.get("max_concurrency")
    if isinstance(mcc, float) and not math.isfinite(mcc):
        d["max_concurrency"] = None
    return d


def _both(n: int | None) -> str:
    return "-" if n is None else f"{fmt_gib(n)} ({fmt_gb(n)})"


def _users(n) -> str:
    return "-" if n is None else f"{n:,}"


def summary_rows(est: Estimate) -> list[tuple[str, str]]:
    rows = [
        ("Model", f"{est.model} ({est.model_source}; read by {est.model_derivation})"),
        ("Layout", est.layout),
        ("KV dtype / weights", f"{est.kv_dtype} / {est.weights_dtype}"),
        ("KV per token", f"{est.kv_bytes_per_token:,} B (whole model, no window cap)"),
        (f"KV{' + state' if est.state_bytes_per_request else ''} per request @ {est.context_tokens:,}",
         f"{_both(est.kv_bytes_per_request)}  [{est.kv_bytes_per_request:,} B] (peak, what the engine reserves)"),
        ("  decode steady state", f"{_both(est.kv_bytes_per_request_steady)}  [{est.kv_bytes_per_request_steady:,} B] "
                                  "(windows and chunks capped, no prefill chunk, no block rounding)"),
        (f"KV for batch {est.batch}", f"{_both(est.kv_bytes_total)}  [{est.kv_bytes_total:,} B]"),
    ]
    if est.state_bytes_per_request:
        rows.append(("Recurrent state / request", f"{_both(est.state_bytes_per_request)} (constant)"))
    return rows


def memory_rows(est: Estimate) -> list[tuple[str, str, str]]:
    rows = []
    if est.gpu_memory_bytes is not None:
        util = est.deployment["gpu_memory_utilization"]
        rows.append(("GPU memory (reported)", _both(est.gpu_memory_bytes), est.gpu or ""))
        rows.append((f"x utilization {util:g}", _both(int(est.gpu_memory_bytes * util)), "engine's share"))
    rows.append(("Weights / GPU", _both(est.weights_bytes_per_gpu), est.weights_basis))
    for term in est.overhead:
        rows.append((term["name"], _both(term["bytes"]), term["basis"]))
    rows.append(("KV budget / GPU", _both(est.kv_budget_bytes),
                 "--kv-cache-memory" if est.deployment.get("kv_cache_memory_bytes") is not None else "the rest"))
    return rows


def _rich(est: Estimate) -> None:
    from rich.table import Table

    out = console()
    dep = est.deployment
    title = (f"kvplan estimate: {est.model} on {est.gpu or 'no GPU'} x{dep['tp'] * dep['pp']} "
             f"(tp={dep['tp']}, pp={dep['pp']}, engine {est.engine}{' ' + est.engine_version if est.engine_version else ''})")
    out.print(f"[bold]{title}[/bold]")
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="cyan")
    t.add_column()
    for k, v in summary_rows(est):
        t.add_row(k, v)
    out.print(t)

    m = Table(title="Memory per GPU", title_justify="left", show_lines=False)
    m.add_column("term")
    m.add_column("size", justify="right")
    m.add_column("basis")
    for row in memory_rows(est):
        m.add_row(*row)
    out.print(m)

    if est.kv_budget_bytes is not None:
        c = Table(show_header=False, box=None, pad_edge=False)
        c.add_column(style="cyan")
        c.add_column()
        c.add_row("KV blocks", f"{est.num_blocks:,} x {est.block_size} tokens")
        c.add_row("KV cache tokens", f"{est.kv_cache_tokens:,}")
        if est.max_concurrency is not None and math.isfinite(est.max_concurrency):
            c.add_row(f"Max concurrency @ {est.max_model_len:,}", f"{est.max_concurrency:.2f}x")
        c.add_row(f"Max users @ {est.context_tokens:,}", _users(est.max_concurrent_users))
        c.add_row(f"Longest context for batch {est.batch}", _users(est.max_context_tokens))
        out.print(c)

    ctx = Table(title="Users per context", title_justify="left")
    ctx.add_column("context", justify="right")
    ctx.add_column("KV / request (whole model)", justify="right")
    ctx.add_column("KV / request / GPU", justify="right")
    ctx.add_column("max users", justify="right")
    for row in est.contexts:
        ctx.add_row(fmt_tokens(row.context_tokens), fmt_gib(row.kv_bytes_per_request),
                    fmt_gib(row.kv_bytes_per_request_per_gpu), _users(row.max_concurrent_users))
    out.print(ctx)

    style = {True: "bold green", False: "bold red", None: "bold yellow"}[est.fits]
    out.print(f"[{style}]Verdict:[/{style}] {est.verdict}")
    for s in est.suggestions:
        out.print(f"  - {s}")
    for n in est.notes:
        out.print(f"[dim]note: {n}[/dim]")
    out.print("[dim]GiB = 2^30 bytes, GB = 10^9 bytes[/dim]")


def _csv(est: Estimate) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["model", "gpu", "tp", "pp", "kv_dtype", "context_tokens", "kv_bytes_per_request",
                "kv_bytes_per_request_per_gpu", "kv_budget_bytes", "max_concurrent_users", "kv_bytes_per_request_steady"])
    for row in est.contexts:
        w.writerow([est.model, est.gpu or "", est.deployment["tp"], est.deployment["pp"], est.kv_dtype,
                    row.context_tokens, row.kv_bytes_per_request, row.kv_bytes_per_request_per_gpu,
                    "" if est.kv_budget_bytes is None else est.kv_budget_bytes,
                    "" if row.max_concurrent_users is None else row.max_concurrent_users,
                    row.kv_bytes_per_request_steady])


def markdown(est: Estimate) -> str:
    parts = [f"## kvplan estimate: {est.model} on {est.gpu or 'no GPU'} "
             f"(tp={est.deployment['tp']}, pp={est.deployment['pp']}, engine {est.engine})", ""]
    parts.append(md_table(["", ""], [list(r) for r in summary_rows(est)]))
    parts += ["", md_table(["memory per GPU", "size", "basis"], [list(r) for r in memory_rows(est)]), ""]
    parts.append(md_table(["context", "KV / request", "KV / request / GPU", "max users"],
                          [[f"{r.context_tokens:,}", fmt_gib(r.kv_bytes_per_request),
                            fmt_gib(r.kv_bytes_per_request_per_gpu), _users(r.max_concurrent_users)]
                           for r in est.contexts]))
    parts += ["", f"**Verdict:** {est.verdict}"]
    parts += [f"- {s}" for s in est.suggestions]
    parts += [f"> note: {n}" for n in est.notes]
    return "\n".join(parts)
