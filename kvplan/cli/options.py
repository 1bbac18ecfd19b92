"""Flags shared by estimate, simulate, profile and sweep, and the builders behind them.

Commands declare these Annotated types as parameters, then call `load_model_from_flags` and
`deployment_from_flags`, so every command reads a model and a deployment the same way.
"""

from typing import Annotated, Optional

import typer

from ..errors import InputError
from ..hardware import GPU, detect_gpu, find_gpu
from ..plan import Deployment
from ..model import LoadedModel, load_model
from ..model.loaders import spec_from_numbers
from ..units import parse_count, parse_size

MODEL_PANEL = "Model"
DEPLOY_PANEL = "Deployment"
BUDGET_PANEL = "Budget overrides"

ModelArg = Annotated[Optional[str], typer.Argument(
    help="Bundled spec (`kvplan models`), HF id (local cache; the Hub with --online), config.json or model directory. "
         "Default: llama-3.1-8b", show_default=False)]
LayersOpt = Annotated[Optional[int], typer.Option("--layers", help="Raw model: number of layers", rich_help_panel=MODEL_PANEL)]
KVHeadsOpt = Annotated[Optional[int], typer.Option("--kv-heads", help="Raw model: KV heads", rich_help_panel=MODEL_PANEL)]
HeadDimOpt = Annotated[Optional[int], typer.Option("--head-dim", help="Raw model: head dimension", rich_help_panel=MODEL_PANEL)]
HeadsOpt = Annotated[Optional[int], typer.Option("--heads", help="Raw model: attention (query) heads", rich_help_panel=MODEL_PANEL)]
HiddenOpt = Annotated[Optional[int], typer.Option("--hidden-size", help="Raw model: hidden size", rich_help_panel=MODEL_PANEL)]
AllowUnknownOpt = Annotated[bool, typer.Option("--allow-unknown-arch", help="Size an unknown model_type as standard attention", rich_help_panel=MODEL_PANEL)]
OnlineOpt = Annotated[Optional[bool], typer.Option("--online/--offline", help="Fetch an HF id's config and safetensors headers from the Hub when not cached (default: `online:` in ~/.config/kvplan/config.yaml, else offline; HF_HUB_OFFLINE=1 always wins)", show_default=False, rich_help_panel=MODEL_PANEL)]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Hub branch, tag or commit of an HF id (default: main)", rich_help_panel=MODEL_PANEL)]

GpuOpt = Annotated[Optional[str], typer.Option("--gpu", help="GPU name (H100, A100-80GB, L40S, ...) or `auto` (NVML)", rich_help_panel=DEPLOY_PANEL)]
GpuMemoryOpt = Annotated[Optional[str], typer.Option("--gpu-memory", help="GPU memory instead of --gpu: 80GiB, 24GB, 81559MiB", rich_help_panel=DEPLOY_PANEL)]
TpOpt = Annotated[int, typer.Option("--tp", help="Tensor-parallel size", rich_help_panel=DEPLOY_PANEL)]
PpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel size", rich_help_panel=DEPLOY_PANEL)]
DtypeOpt = Annotated[Optional[str], typer.Option("--dtype", help="Weights: bf16 fp16 fp32 fp8 int8 int4 awq gptq mxfp4 nvfp4 (default: checkpoint)", rich_help_panel=DEPLOY_PANEL)]
KVDtypeOpt = Annotated[str, typer.Option("--kv-dtype", help="KV cache: auto fp32 bf16 fp16 fp8 fp8_e4m3 fp8_e5m2 int8 int4 nvfp4 mxfp4", rich_help_panel=DEPLOY_PANEL)]
ContextOpt = Annotated[Optional[str], typer.Option("--context", help="Tokens per request (default: max_model_len); 32k = 32768", rich_help_panel=DEPLOY_PANEL)]
BatchOpt = Annotated[int, typer.Option("--batch", help="Concurrent requests to plan for", rich_help_panel=DEPLOY_PANEL)]
MaxModelLenOpt = Annotated[Optional[str], typer.Option("--max-model-len", help="Longest request the engine accepts (default: the model's max)", rich_help_panel=DEPLOY_PANEL)]
UtilOpt = Annotated[float, typer.Option("--gpu-memory-utilization", help="Fraction of total GPU memory the engine may use", rich_help_panel=DEPLOY_PANEL)]
BlockSizeOpt = Annotated[int, typer.Option("--block-size", help="Tokens per KV block", rich_help_panel=DEPLOY_PANEL)]
BatchedTokensOpt = Annotated[int, typer.Option("--max-num-batched-tokens", help="Tokens per scheduler step (sizes the activation peak)", rich_help_panel=DEPLOY_PANEL)]
MaxSeqsOpt = Annotated[int, typer.Option("--max-num-seqs", help="Most requests in one step", rich_help_panel=DEPLOY_PANEL)]
EngineOpt = Annotated[str, typer.Option("--engine", help="Budget semantics: generic vllm sglang trtllm transformers", rich_help_panel=DEPLOY_PANEL)]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="Weight size of the whole model, e.g. 16GB", rich_help_panel=BUDGET_PANEL)]
OverheadOpt = Annotated[Optional[str], typer.Option("--overhead", help="Replace the overhead model (per GPU)", rich_help_panel=BUDGET_PANEL)]
ActivationOpt = Annotated[Optional[str], typer.Option("--activation-memory", help="Activation peak per GPU", rich_help_panel=BUDGET_PANEL)]
NonTorchOpt = Annotated[Optional[str], typer.Option("--non-torch-memory", help="CUDA context / NCCL memory per GPU", rich_help_panel=BUDGET_PANEL)]
GraphOpt = Annotated[Optional[str], typer.Option("--cuda-graph-memory", help="CUDA graph memory per GPU", rich_help_panel=BUDGET_PANEL)]
KVMemoryOpt = Annotated[Optional[str], typer.Option("--kv-cache-memory", help="KV budget per GPU, given directly (vLLM --kv-cache-memory-bytes)", rich_help_panel=BUDGET_PANEL)]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json, csv or markdown")]

DEFAULT_GPU = "H100-SXM"


def load_model_from_flags(model: str | None, layers: int | None = None, kv_heads: int | None = None,
                          head_dim: int | None = None, heads: int | None = None, hidden_size: int | None = None,
                          allow_unknown: bool = False, online: bool | None = None,
                          revision: str | None = None) -> LoadedModel:
    """MODEL alone loads it; raw numbers alone build a uniform model; both: numbers override the config."""
    raw = {"num_hidden_layers": layers, "num_key_value_heads": kv_heads, "head_dim": head_dim,
           "num_attention_heads": heads, "hidden_size": hidden_size}
    given = {k: v for k, v in raw.items() if v is not None}
    if model is None and given:
        missing = [flag for flag, key in (("--layers", "num_hidden_layers"), ("--kv-heads", "num_key_value_heads"),
                                          ("--head-dim", "head_dim")) if key not in given]
        if missing:
            raise InputError(f"raw model needs {', '.join(missing)} (or name a MODEL)")
        return LoadedModel(spec_from_numbers(layers, kv_heads, head_dim, heads, hidden_size))
    for key, value in given.items():
        if value <= 0:
            raise InputError(f"{key} override must be positive, got {value}")
    return load_model(model, allow_unknown=allow_unknown, overrides=given or None, online=online, revision=revision)


def resolve_gpu(gpu: str | None, gpu_memory: str | None, default: str | None = DEFAULT_GPU) -> GPU | None:
    if gpu and gpu_memory:
        raise InputError("give --gpu or --gpu-memory, not both")
    if gpu_memory:
        size = parse_size(gpu_memory, "--gpu-memory")
        if size <= 0:
            raise InputError("--gpu-memory must be positive")
        return GPU(f"custom {gpu_memory}", size, None, None)
    if gpu is None:
        return find_gpu(default) if default else None
    if gpu.strip().lower() == "auto":
        return detect_gpu()
    return find_gpu(gpu)


def optional_size(text: str | None, what: str) -> int | None:
    return None if text is None else parse_size(text, what)


def optional_count(text: str | None, what: str) -> int | None:
    return None if text is None else parse_count(text, what)


DEPLOYMENT_FLAGS = ("tp", "pp", "dtype", "kv_dtype", "context", "batch", "max_model_len", "gpu_memory_utilization",
                    "block_size", "max_num_batched_tokens", "max_num_seqs", "engine", "weights", "overhead",
                    "activation_memory", "non_torch_memory", "cuda_graph_memory", "kv_cache_memory")


def deployment_from_params(params: dict, gpu: GPU | None) -> Deployment:
    """The Deployment from a command's parameters (pass `locals()`): the deployment flags it declares."""
    return deployment_from_flags(gpu=gpu, **{k: params[k] for k in DEPLOYMENT_FLAGS if k in params})


def deployment_from_flags(*, gpu: GPU | None, tp: int = 1, pp: int = 1, dtype: str | None = None,
                          kv_dtype: str = "auto", context: str | None = None, batch: int = 1,
                          max_model_len: str | None = None, gpu_memory_utilization: float = 0.9,
                          block_size: int = 16, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256,
                          engine: str = "generic", weights: str | None = None, overhead: str | None = None,
                          activation_memory: str | None = None, non_torch_memory: str | None = None,
                          cuda_graph_memory: str | None = None, kv_cache_memory: str | None = None) -> Deployment:
    return Deployment(
        gpu=gpu, tp=tp, pp=pp, weight_dtype=dtype, kv_dtype=kv_dtype,
        max_model_len=optional_count(max_model_len, "--max-model-len"),
        context_tokens=optional_count(context, "--context"), batch=batch,
        gpu_memory_utilization=gpu_memory_utilization, block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
        weights_bytes=optional_size(weights, "--weights"), overhead_bytes=optional_size(overhead, "--overhead"),
        activation_bytes=optional_size(activation_memory, "--activation-memory"),
        non_torch_bytes=optional_size(non_torch_memory, "--non-torch-memory"),
        cuda_graph_bytes=optional_size(cuda_graph_memory, "--cuda-graph-memory"),
        kv_cache_memory_bytes=optional_size(kv_cache_memory, "--kv-cache-memory"), engine=engine,
    )
