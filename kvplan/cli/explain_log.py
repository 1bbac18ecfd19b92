"""`kvplan explain-log`: set an engine's start-up log beside kvplan's prediction for the same settings."""

from typing import Annotated, Optional

import typer

from . import options as o

ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model when the log names none or a local path "
                                                 "(bundled spec, HF id, config.json)", rich_help_panel=o.MODEL_PANEL)]
EngineVersionOpt = Annotated[Optional[str], typer.Option(
    "--engine-version", help="Engine version whose semantics to use (default: the one the log prints)",
    rich_help_panel=o.DEPLOY_PANEL)]
LogFile = Annotated[str, typer.Argument(help="Start-up log of vLLM (V0 or V1) or SGLang", show_default=False)]

# Flags a log's `# kvplan:` header may set, as (name, type).
_HEADER_FLAGS = {"--model": "model", "--gpu": "gpu", "--gpu-memory": "gpu_memory", "--tp": "tp", "--pp": "pp",
                 "--max-model-len": "max_model_len", "--kv-dtype": "kv_dtype", "--block-size": "block_size",
                 "--max-num-batched-tokens": "max_num_batched_tokens", "--engine-version": "engine_version",
                 "--dtype": "dtype", "--layers": "layers", "--kv-heads": "kv_heads", "--head-dim": "head_dim",
                 "--heads": "heads", "--gpu-memory-utilization": "gpu_memory_utilization",
                 "--kv-cache-memory": "kv_cache_memory", "--weights": "weights"}
# The deployment flags explain-log takes, and those whose default the log supplies.
_FLAGS = ("gpu", "gpu_memory", "tp", "pp", "dtype", "kv_dtype", "max_model_len", "block_size",
          "max_num_batched_tokens", "gpu_memory_utilization", "kv_cache_memory", "weights")
_FROM_LOG = ("tp", "pp", "kv_dtype", "max_model_len", "block_size", "max_num_batched_tokens", "gpu_memory_utilization")
FormatOpt = o.format_option(("table", "json", "markdown"))


def register(app: typer.Typer) -> None:
    app.command(
        "explain-log",
        help=("Compare a vLLM or SGLang start-up log with kvplan's prediction for the same settings.\n\n"
              "Reads the model, settings and the reported weights, available KV memory, tokens, blocks,\n"
              "concurrency and refusals; predicts them from the logged available memory (+/- its 0.01 GiB\n"
              "rounding); prints both side by side with the difference. Lines the log lacks are named.\n\n"
              "Examples:\n\n"
              "  kvplan explain-log examples/vllm-startup.log\n\n"
              "  kvplan explain-log tests/data/sglang_logs/qwen3-30b-a3b-sglang18263.log --model qwen3-30b-a3b -f json"),
    )(explain_log_command)


@o.deployment_flags(only=_FLAGS, default_help=dict.fromkeys(_FROM_LOG, "from the log"))
def explain_log_command(
    *, path: LogFile,
    model: ModelOpt = None,
    layers: o.LayersOpt = None, kv_heads: o.KVHeadsOpt = None, head_dim: o.HeadDimOpt = None,
    heads: o.HeadsOpt = None,
    flags: dict,
    engine_version: EngineVersionOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    from ..logs.explain import explain_log, vllm_version_for
    from ..logs.log_deployment import deployment_for_log, require_model
    from ..logs.startup import read_startup_log
    from ..report.explain_log import render_explanation

    log = read_startup_log(path)
    given = {"model": model, "layers": layers, "kv_heads": kv_heads, "head_dim": head_dim, "heads": heads,
             "engine_version": engine_version}
    flags = o.fold_fraction_aliases(flags, log.engine)
    flags = o.parse_flags(_merge_header(log.kvplan_args) | {k: v for k, v in given.items() if v is not None} | flags)
    raw = [flags.get(k) for k in ("layers", "kv_heads", "head_dim", "heads")]
    if any(v is not None for v in raw[:3]):
        loaded = o.load_model_from_flags(None, *[None if v is None else int(v) for v in raw])
    else:
        loaded = o.load_model_from_flags(require_model(log, flags.get("model")))
    version = flags.get("engine_version") or (vllm_version_for(log) if log.engine == "vllm" else None)
    gpu_choice = o.resolve_gpu(flags.get("gpu"), flags.get("gpu_memory"), default=None)
    dep, mml = deployment_for_log(log, loaded.spec, flags, version, gpu_choice)
    render_explanation(explain_log(log, loaded, dep, mml), fmt)


def _merge_header(header: list[str]) -> dict:
    """Flags from the log's `# kvplan:` lines (those given on the command line win over them)."""
    from ..errors import InputError

    flags: dict = {}
    i = 0
    while i < len(header):
        name, _, inline = header[i].partition("=")
        if name not in _HEADER_FLAGS:
            raise InputError(f"`# kvplan:` line: unknown flag {name!r}")
        if inline:
            flags[_HEADER_FLAGS[name]], i = inline, i + 1
        elif i + 1 < len(header):
            flags[_HEADER_FLAGS[name]], i = header[i + 1], i + 2
        else:
            raise InputError(f"`# kvplan:` line: {name} needs a value")
    return flags
