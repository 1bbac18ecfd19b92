"""How far `kvplan estimate --engine vllm@X` lands from what vLLM logged, term by term, from the command alone.

For every log in tests/data/vllm_logs whose `# kvplan:` header names the GPU (the command: model,
GPU, tp, dtype, utilization, max_model_len, vLLM release), kvplan predicts each memory term and
the available KV memory without looking at anything the log measured, and sets them beside the
logged figures. The constants kvplan uses (vllm_overhead.py) were fitted on the FIT logs only;
the others are held out. `--fit` recomputes those constants from the FIT logs alone.

    .venv/bin/python benchmarks/vllm_log_errors.py                  # the tables, markdown, on stdout
    .venv/bin/python benchmarks/vllm_log_errors.py --fit            # the constants the FIT logs imply
    .venv/bin/python benchmarks/vllm_log_errors.py --write docs/benchmarks/vllm_logs.md
"""

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvplan.cli.options import load_model_from_flags, resolve_gpu  # noqa: E402
from kvplan.logs.startup import read_startup_log  # noqa: E402
from kvplan.plan import Deployment, estimate  # noqa: E402
from kvplan.plan.dtype_plan import dtype_plan  # noqa: E402
from kvplan.plan.policies.vllm_overhead import (CUDA_GRAPH_BYTES_PER_LAYER_GRAPH,  # noqa: E402
                                                SAMPLER_FP32_BYTES, cuda_graph_bytes, cuda_graph_count,
                                                forward_peak_bytes)
from kvplan.units import GiB  # noqa: E402

LOGS = ROOT / "tests" / "data" / "vllm_logs"
# The logs the constants were fitted on; every other log is held out.
FIT = {"llama-3.1-8b-16k-h100-v0.19-llmdplanner.log", "gemma-2-9b-h100-v0.19-llmdplanner.log",
       "qwen2.5-7b-fp8dyn-h100-v0.19-llmdplanner.log", "llama-3.3-70b-fp8-tp2-h100-v0.19-llmdplanner.log",
       "opt-2.7b-tp4-v0.11-vllm29070.log"}
TERMS = ("weights", "activation", "non-torch", "CUDA graphs (estimate)", "available KV")


@dataclass
class Case:
    name: str
    release: str
    family: str
    gpu: str
    tp: int
    fit: bool
    logged: dict  # term -> GiB
    predicted: dict  # term -> GiB or None
    notes: list
    scheduler: tuple[int, int]  # (max_num_seqs, max_num_batched_tokens) the policy's defaults gave


def header_flags(args: list[str]) -> dict:
    flags, i = {}, 0
    while i < len(args):
        flags[args[i].lstrip("-").replace("-", "_")] = args[i + 1]
        i += 2
    return flags


def predict(path: Path) -> Case | None:
    log = read_startup_log(str(path))
    flags = header_flags(log.kvplan_args)
    if not log.available_kv_gib or not (flags.get("gpu") or flags.get("gpu_memory")) or log.weights_gib is None:
        return None  # no measured budget, or the command does not say which GPU
    raw = [flags.get(k) for k in ("layers", "kv_heads", "head_dim", "heads")]
    if raw[0] is not None:
        loaded = load_model_from_flags(None, *[int(v) for v in raw])
    else:
        loaded = load_model_from_flags(flags["model"])
    gpu = resolve_gpu(flags.get("gpu"), flags.get("gpu_memory"), default=None)
    release = flags.get("engine_version") or log.version
    dep = Deployment(
        gpu=gpu, tp=int(flags.get("tp", 1)), pp=int(flags.get("pp", 1)), weight_dtype=flags.get("dtype"),
        kv_dtype=flags.get("kv_dtype", "auto"), max_model_len=int(flags["max_model_len"]),
        gpu_memory_utilization=float(flags.get("gpu_memory_utilization", 0.9)),
        max_num_seqs=None, max_num_batched_tokens=None, engine=f"vllm@{release}")
    est = estimate(loaded, dep)
    terms = {t["name"]: t["bytes"] for t in est.overhead}
    used = est.deployment
    used_dep = Deployment(gpu=gpu, tp=dep.tp, pp=dep.pp, max_num_seqs=used["max_num_seqs"],
                          max_num_batched_tokens=used["max_num_batched_tokens"])
    loaded_with_model = terms.get("rotary cos/sin cache", 0) + terms.get("vision encoder", 0)
    weights = None if est.weights_bytes_per_gpu is None else est.weights_bytes_per_gpu + loaded_with_model
    predicted = {
        "weights": _gib(weights), "activation": _gib(terms.get("activation peak")),
        "non-torch": _gib(terms.get("non-torch (CUDA/NCCL)")),
        "CUDA graphs (estimate)": _gib(cuda_graph_bytes(loaded.spec, used_dep, loaded.config)),
        "available KV": _gib(est.kv_budget_bytes),
    }
    logged = {"weights": log.weights_gib, "activation": log.activation_gib, "non-torch": log.non_torch_gib,
              "CUDA graphs (estimate)": log.cuda_graph_gib if log.cuda_graph_basis == "estimate" else None,
              "available KV": log.min_available_kv_gib()}
    notes = [] if est.weights_bytes is not None else ["weights not predicted (no parameter count)"]
    return Case(path.name, release or "?", est.engine_version, gpu.name, dep.tp, path.name in FIT, logged,
                predicted, notes, (est.max_num_seqs, est.max_num_batched_tokens))


def _gib(value: int | None) -> float | None:
    return None if value is None else value / GiB


def errors(cases: list[Case], term: str, fit: bool | None = None) -> list[tuple[float, float, float]]:
    """(GiB error, % of the term, % of the logged available KV) per case with both figures; fit=None: all."""
    out = []
    for c in cases:
        if fit is not None and c.fit != fit:
            continue
        logged, pred = c.logged.get(term), c.predicted.get(term)
        if logged is None or pred is None:
            continue
        err = pred - logged
        out.append((err, 100 * err / logged if logged else 0.0, 100 * err / c.logged["available KV"]))
    return out


def summary_row(term: str, errs: list[tuple[float, float, float]]) -> str:
    if not errs:
        return f"| {term} | 0 | | | |"
    worst = max(errs, key=lambda e: abs(e[2]))
    within1 = sum(abs(e[2]) <= 1.0 for e in errs)
    return (f"| {term} | {len(errs)} | {statistics.median(abs(e[0]) for e in errs):.2f} GiB "
            f"({statistics.median(abs(e[1]) for e in errs):.1f}% of the term) | {worst[0]:+.2f} GiB "
            f"({worst[1]:+.1f}%; {worst[2]:+.1f}% of available KV) | {within1}/{len(errs)} |")


def render(cases: list[Case]) -> str:
    lines = ["| term | logs | median abs error | worst error | error within 1% of the available KV |",
             "|---|---|---|---|---|"]
    for label, fit in (("all", None), ("fitted on", True), ("held out", False)):
        lines.append(f"| **{label}** | | | | |")
        for term in TERMS:
            lines.append(summary_row(term, errors(cases, term, fit)))
    lines += ["", "| log | vLLM | GPU | tp | set | " + " | ".join(f"{t} logged / kvplan" for t in TERMS) + " |",
              "|---|---|---|---|---|" + "---|" * len(TERMS)]
    for c in cases:
        cells = []
        for t in TERMS:
            lg, pr = c.logged.get(t), c.predicted.get(t)
            cells.append(f"{_fmt(lg)} / {_fmt(pr)}" + (f" ({100 * (pr - lg) / lg:+.1f}%)" if lg and pr is not None
                                                       else ""))
        lines.append(f"| {c.name.removesuffix('.log')} | {c.release} | {c.gpu} | {c.tp} | "
                     f"{'fit' if c.fit else 'held out'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def fit_constants(cases: list[Case]) -> str:
    """The constants the FIT logs imply, computed here from their logged terms and the command."""
    fit = [c for c in cases if c.fit]
    sampler, single, multi, graphs = [], [], [], []
    for c in fit:
        log = read_startup_log(str(LOGS / c.name))
        flags = header_flags(log.kvplan_args)
        if flags.get("layers"):
            continue
        loaded = load_model_from_flags(flags["model"])
        spec = loaded.spec
        dtypes = dtype_plan(spec, flags.get("dtype"))
        seqs, tokens = c.scheduler  # the policy's defaults for this GPU and release (vllm_defaults.py)
        rows = min(seqs, tokens)
        dep = Deployment(tp=c.tp, max_num_seqs=seqs, max_num_batched_tokens=tokens)
        if log.cuda_graph_gib is not None and log.cuda_graph_basis == "estimate":
            graphs.append(log.cuda_graph_gib * GiB / (spec.num_layers * cuda_graph_count(spec, dep, loaded.config)))
        if log.activation_gib * GiB > forward_peak_bytes(spec, dep, dtypes.act_elem_bytes):
            sampler.append(log.activation_gib * GiB / (rows * spec.vocab_size) - dtypes.act_elem_bytes)
    for c in fit:
        (single if c.tp == 1 else multi).append((c.family, c.logged["non-torch"]))
    return "\n".join([
        f"CUDA graph bytes per layer per graph: {statistics.mean(graphs) / 1024:.0f} KiB from {len(graphs)} logs "
        f"(code: {CUDA_GRAPH_BYTES_PER_LAYER_GRAPH // 1024} KiB)",
        f"sampler bytes per logit besides the compute dtype: {statistics.mean(sampler):.2f} from {len(sampler)} "
        f"logs (code: {SAMPLER_FP32_BYTES})",
        "non-torch, one GPU: " + ", ".join(f"{f}: {v:.2f} GiB" for f, v in single),
        "non-torch, tp > 1: " + ", ".join(f"{f}: {v:.2f} GiB" for f, v in multi)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="print the constants the FIT logs imply")
    parser.add_argument("--write", help="write the markdown tables into this file between the marker lines")
    args = parser.parse_args()
    cases = [c for p in sorted(LOGS.glob("*.log")) if (c := predict(p)) is not None]
    if args.fit:
        print(fit_constants(cases))
        return
    table = render(cases)
    if args.write:
        path = Path(args.write)
        text = path.read_text()
        start, end = "<!-- vllm_log_errors:start -->", "<!-- vllm_log_errors:end -->"
        head, rest = text.split(start)
        _, tail = rest.split(end)
        path.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    else:
        print(table)


if __name__ == "__main__":
    main()
