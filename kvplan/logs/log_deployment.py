"""The deployment a start-up log describes: its settings, with the user's flags winning."""

from dataclasses import replace

from ..errors import InputError
from ..hardware import GPU, GPUS, catalog_match
from ..plan.deployment import Deployment
from ..units import GiB
from .rows import LOG_QUANTUM_GIB
from .startup import StartupLog

FROM_THE_LOG = "from the log: "  # GPU.note prefix of a GPU inferred from a log's printed total


def gpu_from_log(log: StartupLog) -> GPU | None:
    """The GPU a log names (a MoE config path, collect_env); else the catalog GPU whose CUDA-visible total is the
    one the log printed, when exactly one is; else an unnamed GPU of that total. Both inferences carry a note
    (GPU.note) saying so, and how to name the GPU: the scheduler defaults depend on it (an A100 80GB prints
    79.15 GiB, over 70 GiB, yet takes vLLM's small-GPU row)."""
    known = catalog_match(log.gpu_name) if log.gpu_name else None
    if known is not None:
        return known
    if log.total_gpu_gib is None:
        return None
    printed = f"{log.total_gpu_gib:.2f} GiB"
    fits = [g for g in GPUS if g.cuda_total_bytes
            and abs(g.cuda_total_bytes / GiB - log.total_gpu_gib) <= LOG_QUANTUM_GIB + 1e-9]
    if len(fits) == 1:
        return replace(fits[0], note=f"{FROM_THE_LOG}the log names no GPU; its {printed} total is the "
                                     f"CUDA-visible total of {fits[0].name}, taken as the GPU (pass --gpu NAME if "
                                     "it is another)")
    total = round(log.total_gpu_gib * GiB)
    candidates = f" ({', '.join(g.name for g in fits)} print it)" if fits else ""
    return GPU(log.gpu_name or f"the log's GPU ({printed})", total, None, None,
               note=f"{FROM_THE_LOG}the log names no GPU and its {printed} total matches no single catalog "
                    f"GPU{candidates}: scheduler defaults assume it is not an A100; pass --gpu NAME",
               cuda_total_bytes=total, cuda_total_basis="as the log printed it")


def deployment_for_log(log: StartupLog, spec, flags: dict, version: str | None, gpu) -> tuple[Deployment, int]:
    """The deployment the log describes; `flags` (kvplan names) win over what the log says."""
    from ..units import parse_count, parse_size

    st = log.settings
    sglang = log.engine == "sglang"
    gpu = gpu if gpu is not None else gpu_from_log(log)

    def pick(flag: str, *keys: str, default=None):
        if flags.get(flag) is not None:
            return flags[flag]
        for key in keys:
            if st.get(key) not in (None, "None", ""):
                return st[key]
        return default

    max_model_len = pick("max_model_len", "max_model_len", "context_length", "max_seq_len")
    if max_model_len is None:
        max_model_len = (log.concurrency_max_model_len or (log.refusal or {}).get("max_model_len")
                         or log.sglang.get("context_len") or spec.max_position_embeddings)
    if max_model_len is None:
        raise InputError("the log gives no max_model_len and the model has none: pass --max-model-len")
    max_model_len = parse_count(max_model_len, "--max-model-len")
    block_size = flags.get("block_size") or log.forced_block_size or st.get("block_size")  # None: the engine's
    kv_dtype = str(pick("kv_dtype", "kv_cache_dtype", default="auto")).lower()
    offline = log.usage_context == "offline"
    engine = "sglang" if sglang else ("vllm-offline" if offline else "vllm") + (f"@{version}" if version else "")
    kv_cache_memory = flags.get("kv_cache_memory")
    # Settings the log does not state are left to the engine's policy (its defaults for the GPU and release).
    tokens = pick("max_num_batched_tokens", "max_num_batched_tokens", "chunked_prefill_size")
    seqs = pick("max_num_seqs", "max_num_seqs", "max_running_requests")
    utilization = pick("gpu_memory_utilization", "mem_fraction_static" if sglang else "gpu_memory_utilization")
    if sglang and flags.get("gpu_memory_utilization") is not None and "mem_fraction_static" in log.missing:
        log.settings["mem_fraction_static"] = float(flags["gpu_memory_utilization"])
        log.missing.remove("mem_fraction_static")
    if flags.get("model") and "model" in log.missing:  # named by the user: not a figure the log lacks
        log.missing.remove("model")
    dep = Deployment(
        gpu=gpu, tp=int(pick("tp", "tp_size" if sglang else "tensor_parallel_size", default=1)),
        pp=int(pick("pp", "pp_size" if sglang else "pipeline_parallel_size", default=1)),
        weight_dtype=flags.get("dtype"), kv_dtype=_KV_NAMES.get(kv_dtype, kv_dtype),
        max_model_len=max_model_len, block_size=None if block_size is None else int(block_size),
        max_num_batched_tokens=None if tokens is None else int(tokens), max_num_seqs=None if seqs is None else int(seqs),
        **({} if utilization is None else {"gpu_memory_utilization": float(utilization)}),
        weights_bytes=parse_size(flags["weights"], "--weights") if flags.get("weights") else None,
        kv_cache_memory_bytes=parse_size(kv_cache_memory, "--kv-cache-memory") if kv_cache_memory else None,
        engine=engine)
    return dep, max_model_len


_KV_NAMES = {"fp8_e4m3fn": "fp8_e4m3", "torch.bfloat16": "bf16", "torch.float16": "fp16", "bfloat16": "bf16",
             "float16": "fp16"}


def require_model(log: StartupLog, model: str | None) -> str:
    name = model or log.model
    if not name:
        raise InputError("the log names no model: pass --model NAME (a bundled spec, HF id or config.json)")
    return name
