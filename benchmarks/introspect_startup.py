"""Wall time of `kvplan estimate` on an unbundled model: first run (introspection) and later runs (cached).

    python benchmarks/introspect_startup.py [--runs 9] [--write]

Each session starts from an empty introspection cache (a temporary KVPLAN_CACHE_DIR): the first
estimate of the unbundled config builds the model with transformers on the meta device and
writes the record; the next runs read the record. A bundled spec is timed beside them. Each run
also reports whether torch or transformers ended up in the process (cached runs: must not).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
UNBUNDLED = ROOT / "tests" / "data" / "configs" / "qwen3.5-35b-a3b.json"
PROBE = ("import io, json, sys, contextlib\n"
         "from kvplan.cli import main\n"
         "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
         "    rc = main(sys.argv[1:] + ['--format', 'json'])\n"
         "assert rc == 0, rc\n"
         "derivation = json.loads(out.getvalue())['model_derivation']\n"
         "print(json.dumps([derivation, [m for m in ('torch', 'transformers') if m in sys.modules]]))")


def run(model: str, env: dict) -> tuple[float, str, list[str]]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, "estimate", model], env=env, capture_output=True, text=True,
                          check=True)
    seconds = time.perf_counter() - start
    derivation, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, derivation, heavy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9, help="cached and bundled runs (the first run is one)")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks/introspect.md")
    args = parser.parse_args()
    rows = []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kvplan-bench-cache-") as cache:
        env = dict(os.environ, KVPLAN_CACHE_DIR=cache, HF_HUB_OFFLINE="1")
        first = run(str(UNBUNDLED), env)
        rows.append(("unbundled, first (introspection)", [first[0]], first[1], first[2]))
        cached = [run(str(UNBUNDLED), env) for _ in range(args.runs)]
        rows.append(("unbundled, cached", [c[0] for c in cached], cached[-1][1], sorted({m for c in cached for m in c[2]})))
        bundled = [run("qwen3-next-80b-a3b", env) for _ in range(args.runs)]
        rows.append(("bundled qwen3-next-80b-a3b", [b[0] for b in bundled], bundled[-1][1],
                     sorted({m for b in bundled for m in b[2]})))
    lines = ["| run | runs | median wall time | path (model_derivation) | torch/transformers imported |",
             "|---|---:|---:|---|---|"]
    for name, samples, derivation, heavy in rows:
        lines.append(f"| {name} | {len(samples)} | {statistics.median(samples) * 1000:.0f} ms | {derivation} | "
                     f"{', '.join(heavy) or 'no'} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        text = ("# Introspection: first and cached `kvplan estimate`\n\n"
                f"Command: `python benchmarks/introspect_startup.py --runs {args.runs} --write`\n\n"
                f"Machine: {describe_machine()}; 1-minute load average {load:.1f} at the start (the machine is "
                "shared: compare rows of one session, not sessions). One session, an empty introspection cache "
                "at its start.\n\n"
                f"Unbundled model: `tests/data/configs/{UNBUNDLED.name}` (Qwen3.5-35B-A3B: 40 layers, Gated "
                "DeltaNet hybrid, 256-expert MoE, a vision tower). Each run is a whole `kvplan estimate` process.\n\n"
                f"{table}\n\n"
                "The first run imports torch and transformers and builds the model on the meta device; its record is "
                "then read from `$KVPLAN_CACHE_DIR/introspect/<sha256>.json`, and later runs import neither.\n")
        out = ROOT / "docs" / "benchmarks" / "introspect.md"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)


if __name__ == "__main__":
    main()
