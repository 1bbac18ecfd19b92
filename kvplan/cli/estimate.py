"""`kvplan estimate`: bytes, budget and users for a model on a deployment."""

import typer

from ..plan import estimate as run_estimate
from . import options as o


def register(app: typer.Typer) -> None:
    app.command(
        "estimate",
        help=("KV bytes per token and request, weights, KV budget and max concurrent users.\n\n"
              "Examples:\n\n"
              "  kvplan estimate                                   # Llama-3.1-8B, one H100 (defaults)\n\n"
              "  kvplan estimate llama-3.1-70b --gpu H100 --tp 4 --context 32k --batch 64\n\n"
              "  kvplan estimate --layers 80 --kv-heads 8 --head-dim 128 --context 4096 --kv-dtype fp16\n\n"
              "  kvplan estimate ./config.json --gpu L4 --kv-dtype fp8 --format json"),
    )(estimate_command)


def estimate_command(
    model: o.ModelArg = None,
    layers: o.LayersOpt = None, kv_heads: o.KVHeadsOpt = None, head_dim: o.HeadDimOpt = None,
    heads: o.HeadsOpt = None, hidden_size: o.HiddenOpt = None, allow_unknown_arch: o.AllowUnknownOpt = False,
    gpu: o.GpuOpt = None, gpu_memory: o.GpuMemoryOpt = None, tp: o.TpOpt = 1, pp: o.PpOpt = 1,
    dtype: o.DtypeOpt = None, kv_dtype: o.KVDtypeOpt = "auto", context: o.ContextOpt = None, batch: o.BatchOpt = 1,
    max_model_len: o.MaxModelLenOpt = None, gpu_memory_utilization: o.UtilOpt = 0.9, block_size: o.BlockSizeOpt = 16,
    max_num_batched_tokens: o.BatchedTokensOpt = 8192, max_num_seqs: o.MaxSeqsOpt = 256,
    engine: o.EngineOpt = "generic",
    weights: o.WeightsOpt = None, overhead: o.OverheadOpt = None, activation_memory: o.ActivationOpt = None,
    non_torch_memory: o.NonTorchOpt = None, cuda_graph_memory: o.GraphOpt = None, kv_cache_memory: o.KVMemoryOpt = None,
    fmt: o.FormatOpt = "table",
) -> None:
    from ..report.estimate import render_estimate

    raw_model = any(v is not None for v in (layers, kv_heads, head_dim))
    demo = model is None and not raw_model
    loaded = o.load_model_from_flags(model, layers, kv_heads, head_dim, heads, hidden_size, allow_unknown_arch)
    dep = o.deployment_from_flags(
        gpu=o.resolve_gpu(gpu, gpu_memory, default=o.DEFAULT_GPU if demo else None), tp=tp, pp=pp, dtype=dtype,
        kv_dtype=kv_dtype, context=context, batch=batch, max_model_len=max_model_len,
        gpu_memory_utilization=gpu_memory_utilization, block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs, engine=engine, weights=weights,
        overhead=overhead, activation_memory=activation_memory, non_torch_memory=non_torch_memory,
        cuda_graph_memory=cuda_graph_memory, kv_cache_memory=kv_cache_memory)
    result = run_estimate(loaded, dep)
    if demo:
        result.notes.insert(0, f"no model or GPU given: showing the bundled default {loaded.spec.name} on one "
                               f"{o.DEFAULT_GPU} (pass MODEL and --gpu for your deployment)")
    render_estimate(result, fmt)
