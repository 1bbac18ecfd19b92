"""Benchmark: block operations per second, and `simulate` event-driven vs step-by-step, in one process.

    .venv/bin/python benchmarks/simulate_bench.py            # prints the figures
    .venv/bin/python benchmarks/simulate_bench.py --write    # and writes docs/benchmarks/simulate.md
    .venv/bin/python benchmarks/simulate_bench.py --requests 2000

Workload: --requests requests (default 10,000), prompt lognormal mean 1,000 (sigma 1), output
lognormal mean 500 (sigma 1), all arriving at once, on llama-3.1-8b / one H100 / max_model_len 8192
(the estimate's pool). The event-driven run and the step-by-step reference run the same workload;
their metric summaries must be identical (checked), and the ratio of their CPU times is reported.
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

from machine import describe_machine  # benchmarks/machine.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{describe_machine()}; load average {load:.2f} at start"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def block_ops_bench(num_requests: int = 400) -> dict:
    """Prefill 1,024 tokens, decode 512 tokens one by one (hashing full blocks), free: a request's life."""
    from kvplan.paging import KVCacheManager, Request
    from kvplan.model import load_model
    from kvplan.model.grouping import page_layout

    kv = KVCacheManager(page_layout(load_model("llama-3.1-8b").spec), 4096, 16)
    pool = kv.pool
    calls = 0
    popped = hashed = freed = 0

    def life(i: int) -> None:
        nonlocal calls, popped, hashed, freed
        req = Request(str(i), list(range(i * 10_000, i * 10_000 + 1024)), 512)
        before = pool.num_free_blocks
        kv.allocate_slots(req, 1024)
        req.num_computed_tokens = 1024
        kv.cache_blocks(req)
        calls += 1
        for t in range(511):
            req.output_token_ids.append(-t - 1)
            kv.allocate_slots(req, 1)
            req.num_computed_tokens += 1
            kv.cache_blocks(req)
            calls += 1
        held = kv.num_blocks_held(req)
        popped += before - pool.num_free_blocks
        hashed += req.num_computed_tokens // 16
        kv.free(req)
        freed += held

    _, wall, cpu = timed(lambda: [life(i) for i in range(num_requests)])
    kv.check_integrity()
    ops = popped + hashed + freed
    return {"requests": num_requests, "calls": calls, "block_ops": ops, "cpu": cpu, "wall": wall,
            "ops_per_s": ops / cpu, "calls_per_s": calls / cpu}


def simulate_bench(requests: int, repeat: int) -> dict:
    from kvplan import Deployment, estimate, find_gpu, load_model
    from kvplan.paging import SchedulerConfig
    from kvplan.simulation import Simulator, SyntheticWorkload
    from kvplan.simulation.workload import Distribution
    from kvplan.plan.estimate import settings_used
    from kvplan.simulation.run import _clock
    from kvplan.model.grouping import page_layout

    model = load_model("llama-3.1-8b")
    dep = Deployment(gpu=find_gpu("H100"), max_model_len=8192)
    est = estimate(model, dep)
    dep = settings_used(dep, est)  # the engine's defaults for settings left unset (max_num_seqs, ...)
    workload = SyntheticWorkload(requests, Distribution.parse("lognormal:1000:1", "p"),
                                 Distribution.parse("lognormal:500:1", "o"), seed=0)
    clock = _clock("auto", model, dep, est, [])
    out = {"num_blocks": est.num_blocks}
    for mode in ("event", "step"):
        runs = []
        for _ in range(repeat):  # alternating would not help: each run is long; the best one is reported
            sim = Simulator(page_layout(model.spec), est.num_blocks, est.block_size, est.max_model_len,
                            SchedulerConfig(dep.max_num_seqs, dep.max_num_batched_tokens), clock, mode=mode)
            metrics, wall, cpu = timed(lambda: sim.run(workload))
            runs.append((cpu, wall, sim, metrics))
        cpu, wall, sim, metrics = min(runs, key=lambda r: r[0])
        out[mode] = {"summary": metrics.summary(dep.max_num_seqs), "timeline": metrics.timeline, "wall": wall,
                     "cpu": cpu, "cpus": [r[0] for r in runs], "now": sim.now,
                     "wakes": getattr(sim.sched, "num_wakes", None)}
    same = (out["event"]["summary"] == out["step"]["summary"] and out["event"]["timeline"] == out["step"]["timeline"]
            and out["event"]["now"] == out["step"]["now"])
    assert same, "event-driven and step-by-step metrics differ"
    out["same"] = same
    return out


def cli_bench(requests: int) -> tuple[list[str], float, float]:
    import contextlib
    import io

    from kvplan.cli import main as kvplan_main

    argv = ["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "8192", "--requests", str(requests),
            "--prompt-len", "lognormal:1000:1", "--output-len", "lognormal:500:1", "--format", "json"]
    with contextlib.redirect_stdout(io.StringIO()):
        rc, wall, cpu = timed(lambda: kvplan_main(argv))
    assert rc == 0
    return argv, wall, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode; the lowest CPU time is reported")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "simulate.md")
    parser.add_argument("--write", action="store_true", help="write the markdown report to --output")
    args = parser.parse_args(argv)

    where = machine()
    ops = block_ops_bench()
    sim = simulate_bench(args.requests, args.repeat)
    cli_argv, cli_wall, cli_cpu = cli_bench(args.requests)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ev, st, s = sim["event"], sim["step"], sim["event"]["summary"]
    flags = (f" --requests {args.requests}" if args.requests != 10_000 else "") + \
        (f" --repeat {args.repeat}" if args.repeat != 2 else "")
    command = f"`.venv/bin/python benchmarks/simulate_bench.py{flags} --write`"
    lines = [
        "# `kvplan simulate` benchmark",
        "",
        f"Command: {command}",
        "",
        f"Machine: {where}. CPU seconds (process time) are the figures to compare; wall seconds also "
        "count other processes sharing the cores.",
        "",
        "## Block operations",
        "",
        f"{ops['requests']} request lives on llama-3.1-8b pages (block size 16): prefill 1,024 tokens, decode 511 "
        "tokens one `allocate_slots` call each with `cache_blocks` after it, free. Block operations = blocks popped "
        "from the free list + full blocks hashed into the prefix cache + blocks released.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| block operations | {ops['block_ops']:,} |",
        f"| allocate_slots + cache_blocks calls | {ops['calls']:,} |",
        f"| CPU seconds | {ops['cpu']:.3f} |",
        f"| **block operations / s** | **{ops['ops_per_s']:,.0f}** |",
        f"| manager calls / s | {ops['calls_per_s']:,.0f} |",
        "",
        "## Simulation: event-driven vs step-by-step",
        "",
        f"{args.requests:,} requests, prompt lognormal mean 1,000 (sigma 1), output lognormal mean 500 (sigma 1), "
        f"all at once; llama-3.1-8b on one H100, max_model_len 8192: {sim['num_blocks']:,} blocks of 16 tokens, "
        f"cost-model clock. Both runs use the same Scheduler policy and KVCacheManager.",
        "",
        f"| run | scheduler steps | CPU s (best of {args.repeat}) | all runs, CPU s | wall s | requests woken |",
        "|---|---:|---:|---:|---:|---:|",
        f"| event-driven (`--mode event`, default) | {s['steps']:,} | {ev['cpu']:.2f} | "
        f"{', '.join(f'{c:.2f}' for c in ev['cpus'])} | {ev['wall']:.2f} | {ev['wakes']:,} |",
        f"| step-by-step (`--mode step`) | {st['summary']['steps']:,} | {st['cpu']:.2f} | "
        f"{', '.join(f'{c:.2f}' for c in st['cpus'])} | {st['wall']:.2f} | - |",
        "",
        f"**Speed-up of the event-driven run: {st['cpu'] / ev['cpu']:.1f}x** (CPU time). Metrics identical: "
        f"{'yes' if sim['same'] else 'NO'} (every summary figure, the timeline and the simulated clock, compared "
        "with ==).",
        "",
        f"Figures of that run: peak concurrency {s['peak_concurrency']}, mean {s['mean_concurrency']:.1f}, memory "
        f"utilization {100 * s['memory_utilization']:.1f}%, preemptions {s['preemptions']}, simulated "
        f"{ev['now']:.1f} s, {s['completed_requests']:,} requests completed.",
        "",
        "## End to end",
        "",
        f"`kvplan {' '.join(cli_argv)}` (paged run plus the contiguous comparison run, in process): "
        f"**{cli_cpu:.2f} CPU s** ({cli_wall:.2f} wall s). Peak RSS of the benchmark process: {rss_mib:,.0f} MiB.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(ROOT))
        from kvplan.atomic import write_text_atomic

        write_text_atomic(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
