"""`kvplan profile`: run the real paged-KV engine and compare what it measures with the estimate.

Phases (a CUDA OOM in any of them becomes a finding with everything measured before it):

  1. estimate   the plan for this device: `--device cuda:N` uses the attached GPU's memory unless
                --gpu/--gpu-memory say otherwise; on CPU the budget must come from --gpu,
                --gpu-memory or --kv-cache-memory (a CPU run checks the accounting, not GPU memory)
  2. load       weights (checkpoint offline, or random from the config) -> measured weight bytes
  3. warm-up    a dummy prefill of --max-num-batched-tokens tokens over --max-num-seqs sequences
                plus sampling: activation peak; NVML used - torch reserved = non-torch memory
  4. pool       KV budget from the measured terms through the engine policy's own formula,
                blocks from the budget, the pool allocated: its bytes and block count
  5. run        the workload with continuous batching; every step sampled (engine.replay)
  6. compare    predicted vs measured, term by term; `--compare contiguous` reruns the workload
                with max_model_len reserved per request

"Predicted" is the estimate (weights, overhead terms, pool, blocks, users at the workload's
longest request) plus, for the dynamic figures (utilization, fragmentation, preemptions), the
paging simulator run on the estimate's pool: the same allocator and scheduler without tensors.
torch and transformers are imported only when a profile runs.
"""

from dataclasses import asdict, dataclass, field, replace

from .errors import FindingError, InputError, KvplanError
from .plan import Deployment, estimate
from .plan.policies import get_policy
from .plan.overhead import Term
from .model import LoadedModel

CPU_NOTE = ("CPU run: this validates the accounting (pool bytes, blocks, users, paging), not GPU memory; "
            "activation, non-torch and allocator figures need CUDA")
METRICS = ("weights_bytes", "activation_peak_bytes", "non_torch_bytes", "kv_pool_bytes", "num_blocks",
           "max_concurrent_users", "memory_utilization", "internal_fragmentation", "allocator_fragmentation_bytes",
           "peak_allocated_bytes", "preemptions", "decode_tokens_per_s")


@dataclass
class ProfileResult:
    model: str
    model_source: str
    device: str
    device_name: str
    on_cpu: bool
    dtype: str
    kv_dtype: str
    random_weights: bool | None
    deployment: dict
    workload: dict
    estimate: dict | None = None
    predicted: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)  # measured - predicted, in the metric's unit
    relative_error: dict = field(default_factory=dict)  # (measured - predicted) / predicted
    simulated: dict | None = None  # the paging simulator on the predicted pool
    run: dict | None = None
    contiguous: dict | None = None
    samples: list[dict] = field(default_factory=list)
    phase: str = "estimate"  # last phase reached; "done" when complete
    finding: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str | None) -> "torch.device":  # noqa: F821
    import torch

    if name is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available here (use --device cpu)")
        if (device.index or 0) >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise InputError(f"--device {name}: the engine runs on cpu or cuda")
    return device


def run_profile(loaded: LoadedModel, dep: Deployment, workload, *, device: str | None = None,
                random_weights: bool | None = None, compare: str | None = None, seed: int = 0,
                warn=print, progress=None) -> ProfileResult:
    """Profile `loaded` on `device` with `workload` (an iterable of WorkItems). Never raises on OOM:
    the result carries the finding (the CLI turns it into exit code 1). `warn(text)` gets what must
    be said before the work starts; `progress(phase, tokens)` gets sampled tokens per step."""
    import torch

    from .runtime.memory import DeviceMemory
    from .runtime.model_loader import check_supported, engine_dtype

    spec = loaded.spec
    check_supported(spec)
    if compare not in (None, "contiguous"):
        raise InputError(f"--compare {compare!r}: only 'contiguous' is supported")
    if dep.tp != 1 or dep.pp != 1:
        raise InputError("profile runs the engine on one device: --tp 1 --pp 1")
    dev = resolve_device(device)
    memory = DeviceMemory(dev)
    notes: list[str] = []
    if dev.type == "cpu":
        notes.append(CPU_NOTE)
        warn(f"kvplan profile: {CPU_NOTE}")
    else:
        others = memory.other_processes()
        if others:
            held = sum(p.used_bytes or 0 for p in others)
            msg = (f"GPU {dev} is already in use by {len(others)} other process(es) (pid "
                   f"{', '.join(str(p.pid) for p in others[:5])}) holding {held / 2**30:.2f} GiB: "
                   "measured memory and the budget include their effect")
            notes.append(msg)
            warn(f"kvplan profile: warning: {msg}")

    from .plan.dtype_plan import dtype_plan

    dtype = engine_dtype(dtype_plan(spec, dep.weight_dtype).compute)
    dtype_name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    has_checkpoint = loaded.model_dir is not None and loaded.checkpoint is not None
    random = (not has_checkpoint) if random_weights is None else random_weights
    if not random and not has_checkpoint:
        raise InputError(f"{spec.name}: no local checkpoint to load; use --random-weights")
    items = list(workload)
    if not items:
        raise InputError("the workload has no requests")
    longest = max(it.num_prompt_tokens + it.output_len for it in items)
    dep = _device_deployment(dep, dev, memory, dtype_name, random or dtype_name != spec.weight_dtype, longest)
    if random and spec.weight_dtype not in ("bf16", "fp16", "fp32"):
        notes.append(f"random weights are built in {dtype_name}; the checkpoint's {spec.weight_dtype} storage is not "
                     f"reproduced (weights are predicted in {dtype_name} too)")
    result = ProfileResult(
        model=spec.name, model_source=spec.source, device=str(dev), device_name=memory.name(), on_cpu=dev.type == "cpu",
        dtype=dtype_name, kv_dtype=dep.kv_dtype, random_weights=random, deployment=_deployment_dict(dep),
        workload=workload.describe() if hasattr(workload, "describe") else {"requests": len(items)}, notes=notes)

    est = estimate(loaded, dep)
    result.estimate = est.to_dict()
    if est.num_blocks is None:
        raise InputError("profile needs a KV budget: give --gpu NAME, --gpu-memory SIZE or --kv-cache-memory SIZE "
                         f"({'; '.join(est.notes) or est.verdict})")
    if longest > est.max_model_len:
        raise InputError(f"the workload's longest request ({longest:,} tokens) exceeds max_model_len "
                         f"{est.max_model_len:,}")
    policy = get_policy(dep.engine).bind(spec)
    terms = policy.overhead(spec, dep, 4 if dtype_name == "fp32" else 2)
    _fill_predicted(result, est, spec, dep, terms, items)

    measured = result.measured
    measured.update(dict.fromkeys(METRICS))
    state = {}
    try:
        _profile_phases(result, state, loaded, dep, dev, memory, dtype, random, seed, terms, items, compare, progress)
        result.phase = "done"
    except FindingError as exc:
        result.finding = str(exc)
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "CUDA out of memory"
        result.finding = f"out of memory during {result.phase}: {state.get('what', result.phase)} did not fit ({first_line})"
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        state.clear()
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated(dev)  # since the last phase's reset: what an OOM reached
            measured["peak_allocated_bytes"] = max(peak, measured["peak_allocated_bytes"] or 0)
            torch.cuda.empty_cache()
    if result.interrupted:
        result.notes.append(f"interrupted (Ctrl-C) during {result.phase}: partial measurements")
    _compare(result)
    return result


def _device_deployment(dep: Deployment, dev, memory, dtype_name: str, set_dtype: bool, longest: int) -> Deployment:
    from .hardware import GPU, catalog_match

    changes: dict = {}
    if set_dtype:
        changes["weight_dtype"] = dtype_name
    if dep.context_tokens is None:
        changes["context_tokens"] = longest
    if dev.type == "cuda" and dep.gpu is None:  # the attached GPU: its memory, and bandwidth for the roofline
        total = memory.total_bytes()
        name = memory.name()
        known = catalog_match(name)
        changes["gpu"] = GPU(name, total, known.bandwidth_bytes_per_s if known else None,
                             known.bf16_dense_flops if known else None, note="attached device")
    if dev.type == "cpu" and dep.gpu is None and dep.kv_cache_memory_bytes is None:
        raise InputError("on CPU the KV budget comes from --gpu NAME, --gpu-memory SIZE or --kv-cache-memory SIZE "
                         "(e.g. --kv-cache-memory 64MiB)")
    return replace(dep, **changes) if changes else dep


def _term(terms: list[Term], prefix: str) -> int | None:
    return next((t.bytes for t in terms if t.name.startswith(prefix)), None)


def _fill_predicted(result: ProfileResult, est, spec, dep: Deployment, terms: list[Term], items: list) -> None:
    from .paging.contiguous import reservation_blocks
    from .paging.scheduler import SchedulerConfig
    from .simulation.simulator import Simulator
    from .model.grouping import page_layout

    kv = _kv_format(dep, spec)
    layout = page_layout(spec, kv)
    page_bytes = layout.page_bytes(kv, 1, est.block_size)
    sequences = sum(it.num_samples for it in items)
    activation = _term(terms, "activation")
    weights = est.weights_bytes_per_gpu
    pool_bytes = est.num_blocks * page_bytes
    config = SchedulerConfig(dep.max_num_seqs, dep.max_num_batched_tokens)
    try:
        if est.num_blocks < 1:
            raise KvplanError("no KV block fits the predicted budget")
        sim = Simulator(layout, est.num_blocks, est.block_size, est.max_model_len, config).run(items)
    except KvplanError as exc:  # e.g. a request that fits no pool: the run will say the same as a finding
        result.simulated = {"error": str(exc)}
        sim = {}
    else:
        sim = sim.summary(dep.max_num_seqs)
        result.simulated = {k: v for k, v in sim.items() if k != "queueing_delay"}
    result.predicted = {
        "weights_bytes": weights,
        "activation_peak_bytes": activation,
        "non_torch_bytes": _term(terms, "non-torch"),
        "kv_pool_bytes": pool_bytes,
        "num_blocks": est.num_blocks,
        "max_concurrent_users": min(est.max_concurrent_users, sequences, dep.max_num_seqs),
        "max_concurrent_users_capacity": est.max_concurrent_users,
        "memory_utilization": sim.get("memory_utilization"),
        "internal_fragmentation": sim.get("internal_fragmentation"),
        "allocator_fragmentation_bytes": None,  # not modelled by the estimate
        "peak_allocated_bytes": (weights + pool_bytes + activation) if None not in (weights, activation) else None,
        "preemptions": sim.get("preemptions"),
        "decode_tokens_per_s": None,  # filled after the run from the measured batch (roofline), CUDA only
        "page_bytes": page_bytes,
        "kv_budget_bytes": est.kv_budget_bytes,
    }
    result.predicted["contiguous_max_concurrent_users"] = min(
        est.num_blocks // reservation_blocks(layout, est.max_model_len, est.block_size, dep.max_num_batched_tokens),
        sequences, dep.max_num_seqs)


def _profile_phases(result, state, loaded, dep, dev, memory, dtype, random, seed, terms, items, compare, progress):
    import gc

    import torch

    from .runtime.engine import EngineConfig, LLMEngine
    from .runtime.model_loader import load_engine_model
    from .runtime.replay import replay
    from .runtime.runner import warmup_forward
    from .runtime.sampler import GREEDY, Sampler

    spec, measured, predicted = loaded.spec, result.measured, result.predicted
    cuda = dev.type == "cuda"

    result.phase, state["what"] = "load", f"the weights ({_gib(predicted['weights_bytes'])} predicted)"
    if cuda:  # the CUDA context exists from here on: what NVML sees beyond torch is its baseline
        torch.zeros(1, device=dev)
        start = memory.sample()
        if start.nvml_used_bytes is not None:
            measured["non_torch_baseline_bytes"] = start.nvml_used_bytes - start.reserved_bytes
    memory.reset_peak()
    before = memory.sample().allocated_bytes
    model = load_engine_model(loaded, device=dev, dtype=dtype, random_weights=random, seed=seed)
    state["model"] = model
    measured["weights_bytes"] = (memory.sample().allocated_bytes - before) if cuda else model.weights_bytes
    measured["weights_tensor_bytes"] = model.weights_bytes

    result.phase = "warm-up"
    state["what"] = (f"the warm-up forward of {dep.max_num_batched_tokens:,} tokens "
                     f"({_gib(predicted['activation_peak_bytes'])} activations predicted)")
    memory.synchronize()
    memory.reset_peak()
    base = memory.sample().allocated_bytes
    vocab = model.hf_config.vocab_size
    logits = warmup_forward(model.model, dev, dep.max_num_batched_tokens, dep.max_num_seqs, vocab)
    Sampler(dev).sample(logits, [str(i) for i in range(logits.shape[0])], [GREEDY] * logits.shape[0])
    memory.synchronize()
    after = memory.sample()
    if cuda:
        measured["activation_peak_bytes"] = after.peak_allocated_bytes - base
        measured["peak_allocated_bytes"] = after.peak_allocated_bytes
        if after.nvml_used_bytes is not None:
            measured["non_torch_bytes"] = after.nvml_used_bytes - after.reserved_bytes
            if "non_torch_baseline_bytes" in measured:  # vLLM counts only this growth after start-up
                measured["non_torch_increase_bytes"] = measured["non_torch_bytes"] - measured["non_torch_baseline_bytes"]
    del logits
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    result.phase = "pool"
    policy = get_policy(dep.engine).bind(spec)
    if cuda and dep.kv_cache_memory_bytes is None and dep.overhead_bytes is None:
        terms = [Term("activation peak", measured["activation_peak_bytes"], "measured"),
                 Term("non-torch", measured.get("non_torch_bytes", _term(terms, "non-torch")), "measured (NVML)"),
                 *[t for t in terms if t.name.startswith("CUDA graphs")]]
    budget = policy.kv_budget(dep.gpu.memory_bytes if dep.gpu else 0, measured["weights_bytes"], terms, dep)
    pool = policy.pool(spec, budget, _kv_format(dep, spec), dep)
    measured["kv_budget_bytes"] = budget
    if pool.num_blocks < 1:
        raise FindingError(f"no KV block fits: the measured budget is {_gib(budget)} after weights and overhead "
                           f"(one block is {_gib(pool.page_bytes)})")
    state["what"] = f"the KV pool of {pool.num_blocks:,} blocks ({_gib(pool.usable_bytes)})"
    before = memory.sample().allocated_bytes
    config = EngineConfig(num_blocks=pool.num_blocks, block_size=pool.block_size, kv_dtype=dep.kv_dtype,
                          max_model_len=result.estimate["max_model_len"], max_num_seqs=dep.max_num_seqs,
                          max_num_batched_tokens=dep.max_num_batched_tokens)
    engine = LLMEngine(model, spec, config)
    state["engine"] = engine
    measured["num_blocks"] = pool.num_blocks
    measured["kv_pool_bytes"] = engine.pool.nbytes
    if cuda:
        measured["kv_pool_allocated_bytes"] = memory.sample().allocated_bytes - before

    result.phase, state["what"] = "run", "the workload"
    memory.reset_peak()
    before = memory.sample().allocated_bytes
    run = replay(engine, items, memory, vocab_size=vocab, on_progress=_bind(progress, "paged"))
    result.run = run.summary()
    result.samples = [asdict(s) for s in run.samples]
    measured.update(max_concurrent_users=run.max_concurrent_users, memory_utilization=run.memory_utilization,
                    internal_fragmentation=run.internal_fragmentation, preemptions=run.preemptions,
                    allocator_fragmentation_bytes=run.allocator_fragmentation_bytes,
                    decode_tokens_per_s=run.decode_tokens_per_s, blocks_leaked=run.blocks_leaked)
    _roofline(result, run, dep)
    if cuda:
        peak = torch.cuda.max_memory_allocated(dev)
        measured["run_activation_peak_bytes"] = peak - before  # above weights + pool, while serving
        measured["peak_allocated_bytes"] = max(peak, measured["peak_allocated_bytes"] or 0)
    if run.interrupted:
        raise KeyboardInterrupt
    if run.out_of_memory:
        raise FindingError(f"out of memory during the run at {run.out_of_memory}")
    if run.blocks_leaked:
        result.notes.append(f"{run.blocks_leaked} blocks were not returned to the pool after the run")

    if compare == "contiguous":
        result.phase = "contiguous"
        state.pop("engine")
        del engine
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        need = _blocks_for(spec, dep, result)
        if need > pool.num_blocks:
            result.contiguous = {"mode": "contiguous", "note": f"one max_model_len reservation needs {need:,} blocks; "
                                                               f"the pool has {pool.num_blocks:,}: nothing runs"}
            return
        state["what"] = "the contiguous run"
        engine = LLMEngine(model, spec, replace(config, contiguous=True))
        state["engine"] = engine
        base_run = replay(engine, items, memory, vocab_size=vocab, mode="contiguous",
                          on_progress=_bind(progress, "contiguous"))
        result.contiguous = base_run.summary()
        result.contiguous["predicted_max_concurrent_users"] = predicted["contiguous_max_concurrent_users"]
        if base_run.interrupted:
            raise KeyboardInterrupt
        if base_run.out_of_memory:
            raise FindingError(f"out of memory during the contiguous run at {base_run.out_of_memory}")


def _bind(progress, phase: str):
    return None if progress is None else (lambda tokens: progress(phase, tokens))


def _blocks_for(spec, dep, result) -> int:
    from .paging.contiguous import reservation_blocks
    from .model.grouping import page_layout

    layout = page_layout(spec, _kv_format(dep, spec))
    return reservation_blocks(layout, result.estimate["max_model_len"], result.estimate["block_size"],
                              dep.max_num_batched_tokens)


def _kv_format(dep: Deployment, spec):
    from .plan.dtype_plan import dtype_plan

    return dtype_plan(spec, dep.weight_dtype).kv(dep.kv_dtype)


def _roofline(result: ProfileResult, run, dep: Deployment) -> None:
    """Decode tokens/s a memory-bound step would reach at the measured decode batches (CUDA only):
    each step reads the weights once and the KV of every attended token."""
    bandwidth = dep.gpu.bandwidth_bytes_per_s if dep.gpu else None
    steps = run.decode_steps
    if result.on_cpu or not bandwidth or not steps or result.measured.get("weights_bytes") is None:
        return
    per_token = result.estimate["kv_bytes_per_token_per_gpu"]
    seconds = (steps * result.measured["weights_bytes"] + per_token * run.decode_context_tokens) / bandwidth
    result.predicted["decode_tokens_per_s"] = run.decode_tokens / seconds


def _compare(result: ProfileResult) -> None:
    for key in METRICS:
        p, m = result.predicted.get(key), result.measured.get(key)
        if p is None or m is None:
            result.error[key] = result.relative_error[key] = None
            continue
        result.error[key] = m - p
        result.relative_error[key] = (m - p) / p if p else (0.0 if m == p else None)


def _deployment_dict(dep: Deployment) -> dict:
    d = asdict(dep)
    d["gpu"] = dep.gpu.name if dep.gpu else None
    return d


def _gib(num_bytes) -> str:
    from .units import fmt_gib

    return fmt_gib(num_bytes) if num_bytes is not None else "?"


def raise_for_finding(result: ProfileResult) -> None:
    if result.finding:
        raise FindingError(f"profile finding: {result.finding}")
