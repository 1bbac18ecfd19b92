"""Benchmark `kvplan simulate` on issue 17's workloads: whole processes, before/after, and where the time goes.

    .venv/bin/python benchmarks/simulate_bench.py                          # prints the report
    .venv/bin/python benchmarks/simulate_bench.py --before 6cf263b --write # and the same command on an older tree

Workloads:
  synthetic  10,000 requests, prompt lognormal mean 1,000 (sigma 0.5), output 500, all at once;
             Llama-3.1-70B in fp16 (80 layers, 8 KV heads) with a 40 GiB KV pool, H100 cost clock,
             max_model_len 8192: heavy preemption. Goal: under 3 s as a whole process.
  mooncake   a 12,000-request trace in the Mooncake format with ~12k-token prompts, written by
             benchmarks/mooncake_trace.py; Llama-3.1-8B on one H100, max_model_len 65536. Goal: under
             10 s, memory flat in trace length (peak RSS at 3,000, 6,000 and 12,000 requests).
Each whole-process figure is a child process running the command (paged run and contiguous comparison),
best of --repeat runs; CPU seconds (user + sys) are the figures to compare, wall seconds also count
other processes on the machine. --before REV also runs the synthetic command on git revision REV's
tree (git archive), alternating with this tree. The profile (cProfile, in process) splits the time by
owner: kvplan/paging/* is the allocator and scheduler (branch `paging`), kvplan/simulation/* this
simulator; and the event-driven run is checked against the step-by-step reference (identical metrics).
"""

import argparse
import cProfile
import collections
import json
import os
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from machine import describe_machine  # benchmarks/machine.py, beside this script
import mooncake_trace

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ["simulate", "llama-3.1-70b", "--dtype", "fp16", "--gpu", "H100", "--kv-cache-memory", "40GiB",
             "--max-model-len", "8192", "--requests", "10000", "--prompt-len", "lognormal:1000:0.5",
             "--output-len", "500"]
MOONCAKE = ["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "65536", "--trace"]  # + the file
CHILD = """
import contextlib, json, resource, sys
from kvplan.cli import main
with open(sys.argv[2], "w") as out, contextlib.redirect_stdout(out):
    rc = main(sys.argv[3:] + ["--format", "json"])
r = resource.getrusage(resource.RUSAGE_SELF)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "cpu_s": r.ru_utime + r.ru_stime, "rss_mib": r.ru_maxrss / 1024}, f)
"""


def child(argv: list[str], pythonpath: str | None = None) -> dict:
    """Run `kvplan ARGV --format json` in a fresh interpreter; its CPU time, peak RSS, wall time, JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        stats, out = os.path.join(tmp, "stats.json"), os.path.join(tmp, "out.json")
        env = dict(os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {}))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", CHILD, stats, out, *argv], check=True, env=env, cwd=tmp)
        wall = time.perf_counter() - start
        result = json.loads(Path(stats).read_text())
        assert result["rc"] == 0, result
        return {**result, "wall_s": wall, "report": json.loads(Path(out).read_text())}


def shared_equal(a, b) -> bool:
    """Equal on every key both reports have (notes aside), recursively: the figures an older tree also reports."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(shared_equal(a[k], b[k]) for k in a.keys() & b.keys() - {"notes"})
    return a == b


FIRST_SHOWN = ("prefix_hit_rate", "prefill_tokens_saved", "preemptions", "steps")  # what a reader checks first


def identical(a: dict, b: dict) -> str:
    """'yes', or 'no' with the top-level figures that differ (before -> now), a few of them."""
    if shared_equal(a, b):
        return "yes"
    changed = [f"{k} {a[k]:,} -> {b[k]:,}" if isinstance(a[k], int) else f"{k} {a[k]:.4g} -> {b[k]:.4g}"
               for k in sorted(a.keys() & b.keys(), key=lambda k: (k not in FIRST_SHOWN, k))
               if isinstance(a[k], (int, float)) and a[k] != b[k]]
    return "no (" + "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "") + ")"


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["cpu_s"])


def tree_of(repo: Path, rev: str, into: str) -> str:
    """Revision REV's files (git archive) under `into`, for PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev], check=True,
                             capture_output=True).stdout
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(archive)
        f.flush()
        with tarfile.open(f.name) as tar:
            tar.extractall(into)
    return into


WATCHED = {"paging/scheduler.py": "_schedule_waiting", "paging/kv_cache_manager.py": "_hit",
           "simulation/events.py": "step"}


def profile(argv: list[str]) -> tuple[float, dict, list, dict]:
    """cProfile of the command in this process: total seconds, seconds by owner, top functions by own
    time, and the cumulative seconds of the WATCHED functions."""
    import contextlib
    import io

    from kvplan.cli import main as kvplan_main

    prof = cProfile.Profile()
    with contextlib.redirect_stdout(io.StringIO()):
        prof.runcall(kvplan_main, argv + ["--format", "json"])
    stats = pstats.Stats(prof).stats
    owners: collections.Counter = collections.Counter()
    funcs, watched = [], {}
    for (path, line, name), (_, calls, own, cumulative, _) in stats.items():
        where = path.split("kvplan/", 1)[1] if "/kvplan/" in path else None
        owner = ("paging (allocator, scheduler)" if where and where.startswith("paging/") else
                 "simulation (this simulator)" if where and where.startswith("simulation/") else
                 "other kvplan (CLI, estimate, report)" if where else "Python and libraries")
        owners[owner] += own
        if where:
            funcs.append((own, cumulative, calls, f"{where}:{line}({name})"))
            if WATCHED.get(where) == name:
                watched[name] = cumulative
    total = sum(owners.values())
    return total, dict(owners), sorted(funcs, reverse=True)[:12], watched


def event_vs_step(requests: int) -> dict:
    """The synthetic workload at `requests` requests, event-driven and step by step: CPU s and equality."""
    from kvplan import Deployment, estimate, find_gpu, load_model
    from kvplan.paging import SchedulerConfig
    from kvplan.simulation import Simulator, SyntheticWorkload
    from kvplan.simulation.run import _clock, _stage_layout
    from kvplan.simulation.workload import Distribution

    model = load_model("llama-3.1-70b")
    dep = Deployment(gpu=find_gpu("H100"), weight_dtype="fp16", kv_cache_memory_bytes=40 << 30, max_model_len=8192,
                     block_size=16, max_num_batched_tokens=8192, max_num_seqs=256)
    est = estimate(model, dep)
    workload = SyntheticWorkload(requests, Distribution.parse("lognormal:1000:0.5", "p"), Distribution.parse("500", "o"))
    clock = _clock("auto", model, dep, est, [])
    layout = _stage_layout(model, dep, est.block_size, est.context_tokens)
    out = {}
    for mode in ("event", "step"):
        sim = Simulator(layout, est.num_blocks, est.block_size, est.max_model_len,
                        SchedulerConfig(est.max_num_seqs, est.max_num_batched_tokens), clock, mode=mode)
        cpu = time.process_time()
        metrics = sim.run(workload)
        out[mode] = {"cpu_s": time.process_time() - cpu, "summary": metrics.summary(256), "timeline": metrics.timeline,
                     "now": sim.now}
    ev, st = out["event"], out["step"]
    out["same"] = ev["summary"] == st["summary"] and ev["timeline"] == st["timeline"] and ev["now"] == st["now"]
    assert out["same"], "event-driven and step-by-step metrics differ"
    return out


def table(rows: list[tuple], header: tuple) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="whole-process runs per figure (the best is reported)")
    parser.add_argument("--before", metavar="REV", help="also run the synthetic command on this git revision")
    parser.add_argument("--repo", type=Path, default=ROOT, help="git repository holding --before (default: this one)")
    parser.add_argument("--step-requests", type=int, default=2000, help="requests for the event-vs-step check")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "simulate.md")
    parser.add_argument("--write", action="store_true", help="write the markdown report to --output")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    lines = ["# `kvplan simulate` benchmark", "",
             f"Command: `.venv/bin/python benchmarks/simulate_bench.py{f' --before {args.before}' if args.before else ''}"
             f"{f' --repeat {args.repeat}' if args.repeat != 3 else ''} --write`", "",
             f"Machine: {describe_machine()}; load average {load:.2f} at start. Whole-process figures are child "
             f"processes, best of {args.repeat} runs by CPU seconds (user + sys; wall seconds also count other "
             "processes on the machine); peak RSS is the child's.", ""]

    # ---- synthetic: the 10,000 requests, whole process --------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        before = tree_of(args.repo, args.before, tmp) if args.before else None
        runs, old = [], []
        for _ in range(args.repeat):
            runs.append(child(SYNTHETIC))
            if before:
                old.append(child(SYNTHETIC, before))
    now = best(runs)
    s = now["report"]
    lines += ["## 10,000 requests with heavy preemption", "",
              f"`kvplan {' '.join(SYNTHETIC)}`: {s['num_blocks']:,} blocks of {s['block_size']}; "
              f"{s['preemptions']:,} preemptions, {s['steps']:,} scheduler steps, {s['completed_requests']:,} requests "
              f"completed (contiguous comparison: {s['contiguous']['steps']:,} steps).", ""]
    rows = [("this tree", f"**{now['cpu_s']:.2f}**", ", ".join(f"{r['cpu_s']:.2f}" for r in runs), f"{now['wall_s']:.2f}",
             f"{now['rss_mib']:.0f}")]
    if old:
        was = best(old)
        same = identical(was["report"], s)
        rows.insert(0, (f"before (`{args.before}`)", f"{was['cpu_s']:.2f}", ", ".join(f"{r['cpu_s']:.2f}" for r in old),
                        f"{was['wall_s']:.2f}", f"{was['rss_mib']:.0f}"))
        rows.append(("speed-up", f"{was['cpu_s'] / now['cpu_s']:.2f}x", "", "", ""))
    lines += table(rows, ("tree", "CPU s", "all runs, CPU s", "wall s", "peak RSS MiB"))
    if old:
        lines += ["", f"Figures shared by both reports identical: {same}."]
    lines += ["", "Goal: under 3 s."]

    # ---- Mooncake-format trace ----------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mooncake_12000.jsonl"
        shape = mooncake_trace.write(path, 12_000)
        sizes = {}
        for n in (3000, 6000, 12000):
            argv = MOONCAKE + [str(path)] + ([] if n == 12000 else ["--trace-limit", str(n)])
            sizes[n] = best([child(argv) for _ in range(args.repeat if n == 12000 else 1)])
        if args.before:  # the first 3,000 requests on the older tree too (whole, it takes minutes there)
            old_mc = child(MOONCAKE + [str(path), "--trace-limit", "3000"], tree_of(args.repo, args.before, tmp))
        prof_argv = MOONCAKE + [str(path)]
        mc_total, mc_owners, mc_funcs, mc_watched = profile(prof_argv)
    m = sizes[12000]["report"]
    lines += ["", "## A 12,000-request Mooncake-format trace", "",
              f"`kvplan {' '.join(MOONCAKE)} mooncake_12000.jsonl`, the trace from `benchmarks/mooncake_trace.py` "
              f"(seed 0): {shape['requests']:,} requests over {shape['duration_s']:,.0f} s, {shape['prompt_tokens']:,} "
              f"prompt tokens (mean {shape['mean_prompt_tokens']:,.0f}), outputs mean {shape['mean_output_tokens']:.0f}; "
              f"{shape['bytes'] / 2**20:.1f} MiB. Replay: prefix-cache hit rate {100 * m['prefix_hit_rate']:.1f}%, "
              f"{m['preemptions']:,} preemptions, {m['steps']:,} steps, peak {m['peak_concurrency']} requests.", ""]
    lines += table([(f"{n:,}", f"{'**' if n == 12000 else ''}{r['cpu_s']:.2f}{'**' if n == 12000 else ''}",
                     f"{r['wall_s']:.2f}", f"{r['rss_mib']:.0f}") for n, r in sizes.items()],
                   ("requests replayed (`--trace-limit`)", "CPU s", "wall s", "peak RSS MiB"))
    if args.before:
        lines += ["", f"The first 3,000 requests on `{args.before}`: {old_mc['cpu_s']:.2f} CPU s against "
                  f"{sizes[3000]['cpu_s']:.2f} here ({old_mc['cpu_s'] / sizes[3000]['cpu_s']:.1f}x); figures shared by "
                  f"both reports identical: {identical(old_mc['report'], sizes[3000]['report'])}."]
    lines += ["", "Goal: under 10 s, memory flat in trace length."]

    # ---- where the time goes ------------------------------------------------------------------------
    sy_total, sy_owners, sy_funcs, sy_watched = profile(SYNTHETIC)
    lines += ["", "## Where the time goes", "",
              "cProfile of each command in one process (profiling slows Python code ~2x; shares are what to read). "
              "Own time by owner:", ""]
    owners = sorted(set(sy_owners) | set(mc_owners), key=lambda o: -sy_owners.get(o, 0))
    lines += table([(o, f"{sy_owners.get(o, 0):.2f} ({100 * sy_owners.get(o, 0) / sy_total:.0f}%)",
                     f"{mc_owners.get(o, 0):.2f} ({100 * mc_owners.get(o, 0) / mc_total:.0f}%)") for o in owners],
                   ("owner", "10,000 synthetic, s", "Mooncake 12,000, s"))
    share = lambda w, total, name: f"{100 * w.get(name, 0) / total:.0f}%"
    lines += ["", f"Steps run by the event scheduler (`EventScheduler.step`, cumulative): "
              f"{share(sy_watched, sy_total, 'step')} of the synthetic run, {share(mc_watched, mc_total, 'step')} of "
              f"the Mooncake replay; the rest of the simulator loop records quiet stretches, including steps that "
              f"only cross block boundaries (`EventScheduler.cross_quietly`). Admitting the head of the waiting "
              f"queue (`Scheduler._schedule_waiting`, cumulative): {share(sy_watched, sy_total, '_schedule_waiting')} "
              f"and {share(mc_watched, mc_total, '_schedule_waiting')}; of it, finding a request's prefix hit "
              f"(`KVCacheManager._hit`: lookups in C, the last walk taken up again while none of its blocks was "
              f"evicted): {share(sy_watched, sy_total, '_hit')} and {share(mc_watched, mc_total, '_hit')}. What "
              "remains is per-block work done once per block (taking, registering, freeing, hashing output blocks) "
              "and per-step bookkeeping."]
    for title, funcs in (("10,000 synthetic", sy_funcs), ("Mooncake 12,000", mc_funcs)):
        lines += ["", f"Top functions by own time, {title}:", ""]
        lines += table([(f"`{name}`", f"{own:.2f}", f"{cum:.2f}", f"{calls:,}") for own, cum, calls, name in funcs],
                       ("function", "own s", "cumulative s", "calls"))

    # ---- event-driven vs step by step ---------------------------------------------------------------
    es = event_vs_step(args.step_requests)
    lines += ["", "## Event-driven vs step by step", "",
              f"The synthetic workload at {args.step_requests:,} requests, in process, paged run only: event-driven "
              f"{es['event']['cpu_s']:.2f} CPU s, step by step {es['step']['cpu_s']:.2f} CPU s "
              f"(**{es['step']['cpu_s'] / es['event']['cpu_s']:.1f}x**); every summary figure, the timeline and the "
              f"clock identical: {'yes' if es['same'] else 'NO'}.", ""]

    text = "\n".join(lines)
    print(text)
    if args.write:
        sys.path.insert(0, str(ROOT))
        from kvplan.atomic import write_text_atomic

        write_text_atomic(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
