"""`kvplan estimate`: bytes, budget and users for a model on a deployment."""

from typing import Annotated, Optional

import typer

from ..plan import estimate as run_estimate
from . import options as o

VllmArgsOpt = Annotated[Optional[str], typer.Option(
    "--vllm-args", help="A `vllm serve` command line to read model and flags from (flags given here win)",
    rich_help_panel=o.DEPLOY_PANEL)]
FromOpt = Annotated[Optional[str], typer.Option(
    "--from", help="A shell script holding a `vllm serve` command (as --vllm-args; flags given here win)",
    rich_help_panel=o.DEPLOY_PANEL)]


def register(app: typer.Typer) -> None:
    app.command(
        "estimate",
        help=("KV bytes per token and request, weights, KV budget and max concurrent users.\n\n"
              "Examples:\n\n"
              "  kvplan estimate                                   # Llama-3.1-8B, one H100 (defaults)\n\n"
              "  kvplan estimate llama-3.1-70b --gpu H100 --tp 4 --context 32k --batch 64\n\n"
              "  kvplan estimate --layers 80 --kv-heads 8 --head-dim 128 --context 4096 --kv-dtype fp16\n\n"
              "  kvplan estimate --from vllm-serve.sh --gpu H100              # read a vllm serve command\n\n"
              "  kvplan estimate ./config.json --gpu L4 --kv-dtype fp8 --format json\n\n"
              "  kvplan estimate Qwen/Qwen3-8B --online --gpu L40S          # config + safetensors headers from the Hub"),
    )(estimate_command)


def estimate_command(
    ctx: typer.Context,
    model: o.ModelArg = None,
    layers: o.LayersOpt = None, kv_heads: o.KVHeadsOpt = None, head_dim: o.HeadDimOpt = None,
    heads: o.HeadsOpt = None, hidden_size: o.HiddenOpt = None, allow_unknown_arch: o.AllowUnknownOpt = False,
    online: o.OnlineOpt = None, revision: o.RevisionOpt = None,
    gpu: o.GpuOpt = None, gpu_memory: o.GpuMemoryOpt = None, tp: o.TpOpt = 1, pp: o.PpOpt = 1,
    dtype: o.DtypeOpt = None, kv_dtype: o.KVDtypeOpt = "auto", context: o.ContextOpt = None, batch: o.BatchOpt = 1,
    max_model_len: o.MaxModelLenOpt = None, gpu_memory_utilization: o.UtilOpt = 0.9, block_size: o.BlockSizeOpt = 16,
    max_num_batched_tokens: o.BatchedTokensOpt = 8192, max_num_seqs: o.MaxSeqsOpt = 256,
    engine: o.EngineOpt = "generic",
    weights: o.WeightsOpt = None, overhead: o.OverheadOpt = None, activation_memory: o.ActivationOpt = None,
    non_torch_memory: o.NonTorchOpt = None, cuda_graph_memory: o.GraphOpt = None, kv_cache_memory: o.KVMemoryOpt = None,
    vllm_args: VllmArgsOpt = None, from_file: FromOpt = None,
    fmt: o.FormatOpt = "table",
) -> None:
    from ..report.estimate import render_estimate

    vllm_notes: list[str] = []
    if vllm_args is not None or from_file is not None:
        read = _read_vllm_command(ctx, vllm_args, from_file, vllm_notes)
        model, tp, pp, max_model_len = read.get("model", model), read.get("tp", tp), read.get("pp", pp), \
            read.get("max_model_len", max_model_len)
        gpu_memory_utilization, kv_dtype = read.get("gpu_memory_utilization", gpu_memory_utilization), \
            read.get("kv_dtype", kv_dtype)
        block_size, max_num_seqs = read.get("block_size", block_size), read.get("max_num_seqs", max_num_seqs)
        max_num_batched_tokens = read.get("max_num_batched_tokens", max_num_batched_tokens)
        kv_cache_memory, dtype, engine = read.get("kv_cache_memory", kv_cache_memory), read.get("dtype", dtype), \
            read.get("engine", engine)

    raw_model = any(v is not None for v in (layers, kv_heads, head_dim))
    demo = model is None and not raw_model
    loaded = o.load_model_from_flags(model, layers, kv_heads, head_dim, heads, hidden_size, allow_unknown_arch,
                                     online=online, revision=revision)
    dep = o.deployment_from_params(locals(), gpu=o.resolve_gpu(gpu, gpu_memory, default=o.DEFAULT_GPU if demo else None))
    result = run_estimate(loaded, dep)
    result.notes.extend(vllm_notes)
    if demo:
        result.notes.insert(0, f"no model or GPU given: showing the bundled default {loaded.spec.name} on one "
                               f"{o.DEFAULT_GPU} (pass MODEL and --gpu for your deployment)")
    render_estimate(result, fmt)


def _read_vllm_command(ctx: typer.Context, text: str | None, path: str | None, notes: list[str]) -> dict:
    """Settings from a vllm serve command, minus those given explicitly on kvplan's command line.

    The engine becomes `vllm` unless --engine was given: the flags are vLLM's, so are the semantics.
    """
    from ..errors import InputError
    from ..deploy.vllm_args import parse_vllm_command, read_vllm_command_file

    if text is not None and path is not None:
        raise InputError("give --vllm-args or --from, not both")
    parsed = read_vllm_command_file(path) if path is not None else parse_vllm_command(text)
    values = parsed.estimate_flags() | {"engine": "vllm"}
    kept = {k: v for k, v in values.items() if not _on_command_line(ctx, k)}
    overridden = sorted(set(values) - set(kept) - {"engine"})
    notes += parsed.notes()
    if overridden:
        notes.append("from the command line instead of the vllm args: " + ", ".join(overridden))
    return kept


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    # typer bundles its own click, so compare the source by name rather than by enum identity
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
