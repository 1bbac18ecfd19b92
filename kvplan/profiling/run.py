"""`run_profile`: check the inputs, predict, measure on the device, compare."""

from ..errors import FindingError, InputError
from ..model import LoadedModel
from ..plan import Deployment, estimate
from ..plan.estimate import settings_used
from ..plan.policies import get_policy
from .device import device_deployment, preflight, resolve_device
from .measurement import DevicePhases
from .prediction import ListedWorkload, predict
from .result import ProfileResult, compare_figures


def run_profile(loaded: LoadedModel, dep: Deployment, workload, *, device: str | None = None,
                random_weights: bool | None = None, compare: str | None = None, seed: int = 0,
                warn=print, progress=None, checkpoint=None) -> ProfileResult:
    """Profile `loaded` on `device` with `workload` (WorkItems; `describe()` when it has one). Never
    raises on OOM: the result carries the finding (the CLI turns it into exit code 1). `warn(text)`
    gets what must be said before the work starts; `progress(phase, tokens)` sampled tokens per step.
    `compare="contiguous"` reruns the workload reserving max_model_len per request; `checkpoint(result)`,
    when given, gets the result of the paged run before that rerun starts (a report written then
    survives a rerun that never ends)."""
    import torch

    from ..plan.dtype_plan import dtype_plan
    from ..runtime.memory import DeviceMemory
    from ..runtime.model_loader import check_supported, engine_dtype

    spec = loaded.spec
    check_supported(spec)
    if compare not in (None, "contiguous"):
        raise InputError(f"--compare {compare!r}: only 'contiguous' is supported")
    if dep.tp != 1 or dep.pp != 1:
        raise InputError("profile runs the engine on one device: --tp 1 --pp 1")
    dev = resolve_device(device)
    memory = DeviceMemory(dev)

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
    dep = device_deployment(dep, dev, memory, dtype_name, random or dtype_name != spec.weight_dtype, longest)
    notes = preflight(dev, memory, warn)  # after every check of the input: a refusal stays one line
    if random and spec.weight_dtype not in ("bf16", "fp16", "fp32"):
        notes.append(f"random weights are built in {dtype_name}; the checkpoint's {spec.weight_dtype} storage is not "
                     f"reproduced (weights are predicted in {dtype_name} too)")
    description = workload.describe() if hasattr(workload, "describe") else {"requests": len(items)}
    result = ProfileResult(
        model=spec.name, model_source=spec.source, device=str(dev), device_name=memory.name(), on_cpu=dev.type == "cpu",
        dtype=dtype_name, kv_dtype=dep.kv_dtype, random_weights=random, deployment=_deployment_dict(dep),
        workload=description, notes=notes)

    est = estimate(loaded, dep)
    dep = settings_used(dep, est)
    result.deployment = _deployment_dict(dep)  # with the settings the engine's defaults filled in
    result.estimate = est.to_dict()
    if est.num_blocks is None:
        raise InputError("profile needs a KV budget: give --gpu NAME, --gpu-memory SIZE or --kv-cache-memory SIZE "
                         f"({'; '.join(est.notes) or est.verdict})")
    if longest > est.max_model_len:
        raise InputError(f"the workload's longest request ({longest:,} tokens) exceeds max_model_len "
                         f"{est.max_model_len:,}")
    terms = get_policy(dep.engine).bind(spec).overhead(spec, dep, 4 if dtype_name == "fp32" else 2)
    predict(result, loaded, est, dep, terms, ListedWorkload(tuple(items), description), compare == "contiguous",
            memory.total_bytes())

    phases = DevicePhases(result, loaded, dep, dev, memory, dtype, random=random, seed=seed, terms=terms,
                          items=items, progress=progress)
    try:
        phases.load()
        phases.warm_up()
        phases.pool()
        phases.run()
        if compare == "contiguous":
            if checkpoint is not None:
                result.phase = "contiguous"
                phases.record_peaks()
                compare_figures(result)
                checkpoint(result)
            phases.contiguous()
        result.phase = "done"
    except FindingError as exc:
        result.finding = str(exc)
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _host_out_of_memory(exc):
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else "out of memory"
        result.finding = f"out of memory during {result.phase}: {phases.what} did not fit ({first_line})"
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        phases.finish()
    if result.interrupted:
        result.notes.append(f"interrupted (Ctrl-C) during {result.phase}: partial measurements")
    compare_figures(result)
    return result


def _host_out_of_memory(exc: RuntimeError) -> bool:
    """torch's CPU allocator reports a failed allocation as a plain RuntimeError."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(exc)


def _deployment_dict(dep: Deployment) -> dict:
    from dataclasses import asdict

    d = asdict(dep)
    d["gpu"] = dep.gpu.name if dep.gpu else None
    return d
