"""What a profile predicts before anything runs, in two ways.

- static: the estimate alone (weights, overhead terms, pool, blocks, and the users that fit at the
  workload's longest request);
- simulated: `kvplan simulate` over the same workload on the estimate's pool, i.e. the same
  KVCacheManager and Scheduler the engine drives, without tensors. It predicts the run's dynamics
  (users reached, utilization, preemptions), which the static figure cannot: with a workload of
  mixed lengths the static users differ from what a run reaches.

The prediction of record for a metric is the simulated one where the simulator has it (DYNAMIC),
the static one otherwise.
"""

from dataclasses import dataclass

from ..errors import KvplanError
from ..plan import Deployment
from ..plan.overhead import Term
from .result import DYNAMIC, ProfileResult


@dataclass(frozen=True)
class ListedWorkload:
    """Workload items already read, re-iterable, for `simulate`."""

    items: tuple
    description: dict

    def __iter__(self):
        return iter(self.items)

    def describe(self) -> dict:
        return self.description


def kv_format(dep: Deployment, spec):
    from ..plan.dtype_plan import dtype_plan

    return dtype_plan(spec, dep.weight_dtype).kv(dep.kv_dtype)


def term_bytes(terms: list[Term], prefix: str) -> int | None:
    return next((t.bytes for t in terms if t.name.startswith(prefix)), None)


def static_prediction(est, spec, dep: Deployment, terms: list[Term], sequences: int) -> dict:
    from ..model.grouping import page_layout
    from ..paging.contiguous import reservation_blocks

    layout = page_layout(spec, kv_format(dep, spec))
    page_bytes = layout.page_bytes(kv_format(dep, spec), 1, est.block_size)
    weights, pool = est.weights_bytes_per_gpu, est.num_blocks * page_bytes
    activation, non_torch = term_bytes(terms, "activation"), term_bytes(terms, "non-torch")
    graphs = term_bytes(terms, "CUDA graphs") or 0
    parts = (weights, activation, non_torch)
    return {
        "weights_bytes": weights,
        "activation_peak_bytes": activation,
        "non_torch_bytes": non_torch,
        "kv_pool_bytes": pool,
        # What the budget covers; the CUDA context is in no term, and the measured total leaves it out too.
        "total_memory_bytes": sum(parts) + pool + graphs if None not in parts else None,
        "num_blocks": est.num_blocks,
        "max_concurrent_users": min(est.max_concurrent_users, sequences, dep.max_num_seqs),
        "max_concurrent_users_capacity": est.max_concurrent_users,
        "peak_allocated_bytes": weights + pool + activation if None not in (weights, activation) else None,
        "page_bytes": page_bytes,
        "kv_budget_bytes": est.kv_budget_bytes,
        "contiguous_max_concurrent_users": min(
            est.num_blocks // reservation_blocks(layout, est.max_model_len, est.block_size, dep.max_num_batched_tokens),
            sequences, dep.max_num_seqs),
    }


def simulated_prediction(loaded, dep: Deployment, workload: ListedWorkload, contiguous: bool) -> tuple[dict, dict, list]:
    """(figures, the simulator's summary, notes). All arrivals at time 0: the simulator counts steps,
    as the run's per-step figures do. With arrival times the simulator's clock is modelled (GPU
    bandwidth and FLOP/s, or steps), while the run's is the wall clock: dynamics agree only as far
    as the clocks do, and the notes say so."""
    from ..simulation.run import simulate

    timed = any(item.arrival_time > 0 for item in workload)
    try:
        report = simulate(loaded, dep, workload, clock="auto" if timed else "steps", compare_contiguous=contiguous)
    except KvplanError as exc:  # e.g. a request that fits no pool: the run says the same as a finding
        return {}, {"error": str(exc)}, []
    s = report.paged
    figures = {"max_concurrent_users": s["peak_concurrency"], "memory_utilization": s["memory_utilization"],
               "internal_fragmentation": s["internal_fragmentation"], "preemptions": s["preemptions"],
               "num_blocks": report.inputs["num_blocks"]}
    if report.contiguous:
        figures["contiguous_max_concurrent_users"] = report.contiguous.get("peak_concurrency")
    notes = []
    if timed:
        notes.append(f"arrival times: the simulator's clock is {report.inputs['clock']}, the run's is the wall clock; "
                     "simulated dynamics agree with the run only as far as the two clocks do")
    return figures, {k: v for k, v in s.items() if k != "queueing_delay"}, notes


def predict(result: ProfileResult, loaded, est, dep: Deployment, terms: list[Term], workload: ListedWorkload,
            contiguous: bool, device_bytes: int | None) -> None:
    """`device_bytes`: the device's memory; a predicted pool beyond it is not simulated (the
    simulator's tables grow with the blocks, and the allocation will fail for real)."""
    sequences = sum(item.num_samples for item in workload)
    static = static_prediction(est, loaded.spec, dep, terms, sequences)
    if device_bytes is not None and static["kv_pool_bytes"] > device_bytes:
        simulated, summary = {}, {"error": f"not simulated: the predicted pool ({static['kv_pool_bytes']:,} B) "
                                           f"exceeds the device's memory ({device_bytes:,} B)"}
        notes = [summary["error"]]
    else:
        simulated, summary, notes = simulated_prediction(loaded, dep, workload, contiguous)
    result.predicted_static, result.predicted_simulated, result.simulated = static, simulated, summary
    result.notes.extend(notes)
    result.predicted = dict(static)
    for key in static:
        result.predicted_basis[key] = "static"
    for key in DYNAMIC:
        result.predicted[key] = simulated.get(key)
        result.predicted_basis[key] = "simulated"
    result.predicted["decode_tokens_per_s"] = None  # the roofline needs the run's decode batches


def roofline(result: ProfileResult, run, dep: Deployment) -> None:
    """Decode tokens/s a memory-bound step would reach at the measured decode batches (CUDA only):
    each step reads the weights once and the KV of every attended token."""
    bandwidth = dep.gpu.bandwidth_bytes_per_s if dep.gpu else None
    weights = result.measured.get("weights_bytes")
    if result.on_cpu or not bandwidth or not run.decode_steps or weights is None:
        return
    per_token = result.estimate["kv_bytes_per_token_per_gpu"]
    seconds = (run.decode_steps * weights + per_token * run.decode_context_tokens) / bandwidth
    result.predicted["decode_tokens_per_s"] = run.decode_tokens / seconds
    result.predicted_basis["decode_tokens_per_s"] = "static"
