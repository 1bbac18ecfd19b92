"""Benchmark: `kvplan sweep` vectorized vs a plain per-row loop over `estimate`, in one process.

    .venv/bin/python benchmarks/sweep_bench.py            # prints and writes docs/benchmarks/sweep.md
    .venv/bin/python benchmarks/sweep_bench.py --no-write --sample 500

The grid has >= 100,000 configurations. The vectorized sweep runs in full (best of --repeat runs);
the per-row loop (`estimate` on each row's deployment, the reference the sweep must equal) runs on
a random sample of rows, whose rows per second extrapolate to the grid because rows are
independent. Every sampled row is also compared with the sweep's row (exact integers).
"""

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine  # benchmarks/machine.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("llama-3.1-8b", "llama-3.1-70b", "qwen3-32b", "mistral-7b-v0.1", "gemma-3-27b", "deepseek-v2-lite",
          "gpt-oss-20b", "qwen3-next-80b-a3b")


def build_grid():
    from kvplan.hardware import GPUS
    from kvplan.sweep import SweepGrid

    contexts = tuple(range(2048, 136 * 1024 + 1, 2048))  # 68 contexts, 2k to 136k
    return SweepGrid(models=MODELS, gpus=GPUS, tp=(1, 2, 4, 8), dtypes=(None, "fp8"), kv_dtypes=("auto", "fp8"),
                     contexts=contexts)


def machine() -> str:
    import numpy
    import pandas

    return f"{describe_machine()}, numpy {numpy.__version__}, pandas {pandas.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000, help="rows the per-row loop computes")
    parser.add_argument("--repeat", type=int, default=3, help="vectorized runs (best is reported)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "sweep.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from kvplan.cli import main as kvplan_main
    from kvplan.model import load_model
    from kvplan.sweep import COLUMNS, estimate_row, run_sweep

    grid = build_grid()
    run_sweep(grid)  # warm-up: imports, spec files
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = run_sweep(grid)
        times.append(time.perf_counter() - start)
    frame = result.frame
    best = min(times)
    assert len(frame) == grid.size >= 100_000, (len(frame), grid.size, result.skipped)

    rng = random.Random(7)
    models = {m: load_model(m) for m in grid.models}
    picks = [tuple(rng.randrange(len(getattr(grid, a))) for a in ("models", "gpus", "tp", "pp", "dtypes", "kv_dtypes",
                                                                   "contexts")) for _ in range(args.sample)]
    start = time.perf_counter()
    rows = [estimate_row(models[grid.models[m]], grid, grid.gpus[g], grid.tp[t], grid.pp[p], grid.dtypes[d],
                         grid.kv_dtypes[k], grid.contexts[c]) for m, g, t, p, d, k, c in picks]
    loop_seconds = time.perf_counter() - start

    import pandas

    shape = [len(getattr(grid, a)) for a in ("models", "gpus", "tp", "pp", "dtypes", "kv_dtypes", "contexts")]
    for index, row in zip(picks, rows):  # no row is skipped in this grid, so position = C-order index
        position = 0
        for i, n in zip(index, shape):
            position = position * n + i
        got = frame.iloc[position]
        got = {c: None if got[c] is pandas.NA else got[c] for c in COLUMNS}  # a null budget is NA in the frame
        assert all(got[c] == row[c] for c in COLUMNS), (index, row, got)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "grid.csv"
        argv_cli = ["sweep", "-m", ",".join(MODELS), "--gpu", "all", "--tp", "1,2,4,8", "--dtype", "checkpoint,fp8",
                    "--kv-dtype", "auto,fp8", "--context", "2k:136k:2k", "-o", str(out)]
        start = time.perf_counter()
        rc = kvplan_main(argv_cli)
        cli_seconds = time.perf_counter() - start
        assert rc == 0 and out.stat().st_size > 0

    vec_rate = grid.size / best
    loop_rate = args.sample / loop_seconds
    lines = [
        "# `kvplan sweep` benchmark",
        "",
        f"Command: `.venv/bin/python benchmarks/sweep_bench.py --sample {args.sample} --repeat {args.repeat}`",
        "",
        f"Machine: {machine()}",
        "",
        f"Grid: {len(MODELS)} models x {len(grid.gpus)} GPUs x tp 1,2,4,8 x weights checkpoint,fp8 x KV auto,fp8 x "
        f"{len(grid.contexts)} contexts (2k..136k) = **{grid.size:,} configurations** (generic engine).",
        "",
        "| path | configurations | seconds | configurations / s |",
        "|---|---:|---:|---:|",
        f"| vectorized `run_sweep` (best of {args.repeat}: {', '.join(f'{t:.3f}' for t in times)} s) | "
        f"{grid.size:,} | {best:.3f} | {vec_rate:,.0f} |",
        f"| per-row loop of `estimate` (random sample) | {args.sample:,} | {loop_seconds:.3f} | {loop_rate:,.0f} |",
        f"| `kvplan sweep ... -o grid.csv` end to end, in process (incl. writing the CSV) | {grid.size:,} | "
        f"{cli_seconds:.3f} | {grid.size / cli_seconds:,.0f} |",
        "",
        f"**Speed-up of the vectorized sweep over the per-row loop: {vec_rate / loop_rate:,.0f}x** "
        f"(the loop would take ~{grid.size / loop_rate:,.0f} s for the whole grid).",
        "",
        f"All {args.sample:,} sampled rows were equal, column by column (exact integers), between the two paths.",
        "The per-row loop is the full `estimate` (it also builds the per-context table and the longest-context "
        "search that a sweep row does not need), i.e. what a script calling the library per configuration pays.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(ROOT))
        from kvplan.atomic import write_text_atomic

        write_text_atomic(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
