"""`simulate`: a workload through the paged allocator and scheduler, on the pool the estimate predicts.

The pool is exactly the estimate's: `estimate(model, deployment)` gives num_blocks and
block_size, and blocks are page_layout pages (block_size tokens x G layers) of the most
constrained pipeline stage. The same workload then runs under contiguous reservations
(`paging.contiguous`, the baseline `profile --compare contiguous` runs too) over the same memory.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InputError
from .clock import CostModel, StepClock
from ..paging.contiguous import reservation_blocks
from ..paging.scheduler import SchedulerConfig
from .simulator import PoolTooSmall, Simulator
from ..plan import Deployment, estimate, pp_partition
from ..plan.dtype_plan import dtype_plan
from ..plan.estimate import settings_used
from ..plan.policies import get_policy
from ..model import LoadedModel
from ..model.grouping import page_layout

CONTIGUOUS_KEYS = ("memory_utilization", "internal_fragmentation", "peak_concurrency", "mean_concurrency",
                   "preemptions", "completed_requests", "queueing_delay", "steps", "simulated_time", "latency")


@dataclass
class SimulationReport:
    inputs: dict
    paged: dict
    contiguous: dict | None
    timeline: list[tuple]  # paged: (step, time, running, allocated slots, filled slots)
    contiguous_timeline: list[tuple]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.inputs, **self.paged, "contiguous": self.contiguous, "notes": self.notes}


def _stage_layout(model: LoadedModel, dep: Deployment, block_size: int, context: int):
    spec = model.spec
    kv = dtype_plan(spec, dep.weight_dtype).kv(dep.kv_dtype)
    stages = [spec.restricted_to(set(r)) for r in pp_partition(spec.num_layers, dep.pp)]
    stage = max(stages, key=lambda s: s.bytes_per_request(context, kv, dep.tp, block_size))
    return page_layout(stage, kv, dep.tp)


def _clock(choice: str, model: LoadedModel, dep: Deployment, est, notes: list[str]):
    if choice not in ("auto", "cost", "steps"):
        raise InputError(f"--clock {choice!r}: choose auto, cost or steps")
    if choice == "steps":
        return StepClock()
    gpu, params = dep.gpu, model.spec.params
    missing = [what for what, value in (
        ("GPU bandwidth", gpu and gpu.bandwidth_bytes_per_s), ("GPU FLOP/s", gpu and gpu.bf16_dense_flops),
        ("weight bytes", est.weights_bytes_per_gpu), ("parameter count", params)) if not value]
    if missing:
        if choice == "cost":
            raise InputError(f"--clock cost needs {', '.join(missing)}; use --gpu NAME or --clock steps")
        notes.append(f"time counted in scheduler steps ({', '.join(missing)} unknown); arrival rates are per step")
        return StepClock()
    active = params.active or params.total
    # A step passes through every pipeline stage in turn: pp stages of per-GPU work.
    return CostModel(weights_bytes=est.weights_bytes_per_gpu * dep.pp,
                     kv_bytes_per_token=est.kv_bytes_per_token_per_gpu * dep.pp, flops_per_token=2.0 * active / dep.tp,
                     bandwidth_bytes_per_s=gpu.bandwidth_bytes_per_s, peak_flops=gpu.bf16_dense_flops)


def simulate(model: LoadedModel, dep: Deployment, workload, *, mode: str = "event", clock: str = "auto",
             prefix_caching: bool = True, chunked_prefill: bool = True, compare_contiguous: bool = True,
             slo_ttft: float | None = None, slo_tpot: float | None = None,
             progress: Callable[[str, int], None] | None = None) -> SimulationReport:
    """Run `workload` (an iterable of WorkItems, re-iterable for the contiguous run) on the estimate's pool;
    `slo_ttft`/`slo_tpot` in seconds (they need the cost clock)."""
    policy = get_policy(dep.engine)
    if not chunked_prefill and policy.always_chunks_prefill:
        raise InputError(f"--no-chunked-prefill has no equivalent in {policy.name}: {policy.always_chunks_prefill}")
    est = estimate(model, dep)
    if est.num_blocks is None:
        raise InputError("simulate needs a KV budget: give --gpu (with known weights) or --kv-cache-memory SIZE")
    if est.num_blocks < 1:
        raise InputError(f"no KV blocks fit: {est.verdict}")
    notes = list(est.notes)
    if est.engine != "generic":
        notes.append(f"pool sized by the {est.engine} policy; blocks are paged with kvplan's page layout")
    layout = _stage_layout(model, dep, est.block_size, est.context_tokens)
    dep = settings_used(dep, est)
    config = SchedulerConfig(dep.max_num_seqs, dep.max_num_batched_tokens, chunked_prefill)
    step_clock = _clock(clock, model, dep, est, notes)
    for flag, value in (("--slo-ttft", slo_ttft), ("--slo-tpot", slo_tpot)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise InputError(f"{flag} must be a positive number of seconds, got {value}")
        if value is not None and step_clock.unit != "s":
            raise InputError(f"{flag} is in seconds: it needs the cost clock (--gpu with known weights, not "
                             "--clock steps)")

    basis = (f"modelled from roofline step times of one {dep.gpu.name} per pipeline stage (clock.py), not measured"
             if step_clock.unit == "s" else "in scheduler steps (no cost model)")

    def run(contiguous: bool):
        report = (lambda done: progress("contiguous" if contiguous else "paged", done)) if progress else None
        sim = Simulator(layout, est.num_blocks, est.block_size, est.max_model_len, config, step_clock,
                        prefix_caching=prefix_caching, contiguous=contiguous, mode=mode, progress=report)
        metrics = sim.run(workload)
        summary = metrics.summary(config.max_num_seqs, slo_ttft, slo_tpot)
        summary["latency"]["basis"] = basis
        summary["simulated_time"] = sim.now
        return sim, metrics, summary

    sim, metrics, paged = run(False)
    contiguous, cont_timeline = None, []
    if compare_contiguous:
        reservation = reservation_blocks(layout, est.max_model_len, est.block_size, config.max_num_batched_tokens)
        contiguous = {"reservation_slots": reservation * est.block_size, "max_concurrency": est.num_blocks // reservation}
        try:
            _, cont_metrics, cont = run(True)
            contiguous.update({k: cont[k] for k in CONTIGUOUS_KEYS})
            cont_timeline = cont_metrics.timeline
        except PoolTooSmall as e:
            contiguous.update({k: None for k in CONTIGUOUS_KEYS})
            contiguous.update(memory_utilization=0.0, peak_concurrency=0, completed_requests=0)
            notes.append(f"contiguous: {e}")

    inputs = {
        "model": est.model, "gpu": est.gpu, "engine": est.engine, "tp": dep.tp, "pp": dep.pp, "kv_dtype": est.kv_dtype,
        "num_blocks": est.num_blocks, "block_size": est.block_size, "layers_per_block": layout.layers_per_page,
        "page_groups": len(layout.groups), "kv_cache_tokens": est.kv_cache_tokens, "max_model_len": est.max_model_len,
        "max_num_seqs": config.max_num_seqs, "max_num_batched_tokens": config.max_num_batched_tokens,
        "chunked_prefill": chunked_prefill, "prefix_caching": sim.kv.enable_prefix_caching, "mode": mode,
        "time_unit": step_clock.unit, "clock": step_clock.describe(), "workload": workload.describe(),
    }
    notes += workload.notes() if hasattr(workload, "notes") else []
    if metrics.truncated_requests:  # real traces hold prompts longer than many models' context
        notes.append(f"{metrics.truncated_requests:,} requests longer than max_model_len {est.max_model_len:,} "
                     "cut to it (prompt to at most max_model_len - 1 tokens, then output)")
    return SimulationReport(inputs, paged, contiguous, metrics.timeline, cont_timeline, notes)
