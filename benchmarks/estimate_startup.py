"""Whole-process time of `kvplan estimate` against baselines run in the same session.

    python benchmarks/estimate_startup.py [--runs 15] [--write]

Baselines: a bare interpreter (`python -c pass`) and the CLI libraries alone (`import typer, rich`).
Also reports which heavy modules the estimate process imported (must be none).
"""

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "import typer+rich (baseline)": [sys.executable, "-c", "import typer, rich.console, rich.table"],
    "kvplan estimate (bundled default)": [sys.executable, "-m", "kvplan", "estimate", "--format", "json"],
    "kvplan estimate gemma-3-27b --gpu H100 --tp 2": [sys.executable, "-m", "kvplan", "estimate", "gemma-3-27b",
                                                      "--gpu", "H100", "--tp", "2", "--format", "json"],
}
HEAVY_CHECK = ("import sys, runpy; sys.argv=['kvplan','estimate','--format','json']\n"
               "import io, contextlib\n"
               "with contextlib.redirect_stdout(io.StringIO()):\n"
               "    try: runpy.run_module('kvplan', run_name='__main__')\n"
               "    except SystemExit: pass\n"
               "print(json.dumps([m for m in ('torch','transformers','pandas','numpy','matplotlib') if m in sys.modules]))")


def time_command(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks/estimate.md")
    args = parser.parse_args()
    medians = {name: time_command(cmd, args.runs) for name, cmd in CASES.items()}
    heavy = subprocess.run([sys.executable, "-c", "import json\n" + HEAVY_CHECK], capture_output=True, text=True,
                           check=True).stdout.strip()
    base = medians["python -c pass (baseline)"]
    lines = ["| command | median wall time | vs bare interpreter |", "|---|---:|---:|"]
    for name, seconds in medians.items():
        lines.append(f"| `{name}` | {seconds * 1000:.0f} ms | {seconds / base:.1f}x |")
    report = "\n".join(lines)
    print(report)
    print(f"heavy modules imported by `kvplan estimate`: {heavy}")
    if args.write:
        text = (f"# `kvplan estimate` start-up time\n\n"
                f"Command: `python benchmarks/estimate_startup.py --runs {args.runs} --write`\n\n"
                f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
                f"2 cores (the CI machine class); medians of {args.runs} runs each, all in one session.\n\n"
                f"{report}\n\nHeavy modules imported by `kvplan estimate`: `{heavy}` (must be `[]`).\n\n"
                f"Goal: well under 0.5 s as a whole process.\n")
        out = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "estimate.md"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)


if __name__ == "__main__":
    main()
