"""Stream a large JSONL trace through kvplan's reader and report its peak memory.

    python benchmarks/trace_stream.py --lines 10000000 [--write]

Writes the trace to a temporary file, then validates it in a child process (the same pass
`kvplan simulate --trace` makes before simulating) and reports the child's peak RSS next to a
baseline child that only imports kvplan, run in the same session.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = ("import resource, sys, time\n"
         "from kvplan.simulation.trace import TraceWorkload\n"
         "t = time.perf_counter()\n"
         "n = TraceWorkload(sys.argv[1]).validate() if sys.argv[1] != '-' else 0\n"
         "print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
ROW = '{"prompt_len": 1200, "output_len": 300, "arrival": %d, "prefix_group": "sys", "prefix_len": 1000}\n'


def child(path: str) -> tuple[int, float, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, check=True).stdout
    n, seconds, rss_kib = out.split()
    return int(n), float(seconds), int(rss_kib) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.jsonl")
        with open(path, "w") as f:
            chunk = "".join(ROW % (i // 1000) for i in range(1000))
            for _ in range(args.lines // 1000):
                f.write(chunk)
        size = os.path.getsize(path)
        _, _, base_rss = child("-")
        n, seconds, rss = child(path)
    lines = [f"| trace | {n:,} lines, {size / 2**30:.2f} GiB |", "|---|---:|",
             f"| read + validate | {seconds:.1f} s ({n / seconds:,.0f} lines/s) |",
             f"| peak RSS, reader | {rss / 2**20:.1f} MiB |",
             f"| peak RSS, `import kvplan` baseline | {base_rss / 2**20:.1f} MiB |",
             f"| growth over baseline | {(rss - base_rss) / 2**20:.1f} MiB |"]
    report = "\n".join(lines)
    print(report)
    if args.write:
        out = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "trace_stream.md"
        out.write_text(f"# Streaming a large trace\n\nCommand: `python benchmarks/trace_stream.py --lines {args.lines} "
                       f"--write`\n\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}.\n\n{report}\n")


if __name__ == "__main__":
    main()
