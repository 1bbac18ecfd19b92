"""The device a profile runs on: which one, what the estimate is told about it, what to say first."""

from dataclasses import replace

from ..errors import InputError
from ..plan import Deployment

CPU_NOTE = ("CPU run: this validates the accounting (pool bytes, blocks, users, paging), not GPU memory; "
            "activation, non-torch and allocator figures need CUDA")


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


def preflight(dev, memory, warn) -> list[str]:
    """What must be said before any work: a CPU run's limits (and its thread count), or other
    processes already holding the GPU. Returns the notes for the report."""
    notes = []
    if dev.type == "cpu":
        from ..runtime.threads import limit_torch_threads

        notes.append(CPU_NOTE)
        notes.append(f"torch runs {limit_torch_threads()} CPU thread(s): the cores this process may use")
        warn(f"kvplan profile: {CPU_NOTE}")
        return notes
    others = memory.other_processes()
    if others:
        held = sum(p.used_bytes or 0 for p in others)
        msg = (f"GPU {dev} is already in use by {len(others)} other process(es) (pid "
               f"{', '.join(str(p.pid) for p in others[:5])}) holding {held / 2**30:.2f} GiB: "
               "measured memory and the budget include their effect")
        notes.append(msg)
        warn(f"kvplan profile: warning: {msg}")
    return notes


def device_deployment(dep: Deployment, dev, memory, dtype_name: str, set_dtype: bool, longest: int) -> Deployment:
    """The deployment the estimate sees: the engine dtype, the workload's longest request as the
    context, and on CUDA the attached GPU (its reported memory; bandwidth and FLOP/s from the catalog)."""
    from ..hardware import GPU, catalog_match

    changes: dict = {}
    if set_dtype:
        changes["weight_dtype"] = dtype_name
    if dep.context_tokens is None:
        changes["context_tokens"] = longest
    if dev.type == "cuda" and dep.gpu is None:
        name = memory.name()
        known = catalog_match(name)
        changes["gpu"] = GPU(name, memory.total_bytes(), known.bandwidth_bytes_per_s if known else None,
                             known.bf16_dense_flops if known else None, note="attached device")
    if dev.type == "cpu" and dep.gpu is None and dep.kv_cache_memory_bytes is None:
        raise InputError("on CPU the KV budget comes from --gpu NAME, --gpu-memory SIZE or --kv-cache-memory SIZE "
                         "(e.g. --kv-cache-memory 64MiB)")
    return replace(dep, **changes) if changes else dep
