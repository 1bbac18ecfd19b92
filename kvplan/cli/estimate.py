"""`kvplan estimate`: bytes, budget and users for a model on a deployment."""

from typing import Annotated, Optional

import typer

from ..errors import InputError
from ..plan import estimate as run_estimate
from ..report.common import FORMATS
from . import options as o

VllmArgsOpt = Annotated[Optional[str], typer.Option(
    "--vllm-args", help="A `vllm serve` command line to read model and flags from (flags given here win)",
    rich_help_panel=o.DEPLOY_PANEL)]
FromOpt = Annotated[Optional[str], typer.Option(
    "--from", help="A shell script holding a `vllm serve` command (as --vllm-args; flags given here win)",
    rich_help_panel=o.DEPLOY_PANEL)]
FormatOpt = o.format_option(FORMATS)


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


@o.deployment_flags()
def estimate_command(
    *, model: o.ModelArg = None,
    layers: o.LayersOpt = None, kv_heads: o.KVHeadsOpt = None, head_dim: o.HeadDimOpt = None,
    heads: o.HeadsOpt = None, hidden_size: o.HiddenOpt = None, allow_unknown_arch: o.AllowUnknownOpt = False,
    online: o.OnlineOpt = None, revision: o.RevisionOpt = None,
    flags: dict,
    vllm_args: VllmArgsOpt = None, from_file: FromOpt = None,
    fmt: FormatOpt = "table",
) -> None:
    from ..report.estimate import render_estimate

    raw_model = any(v is not None for v in (layers, kv_heads, head_dim))
    vllm_notes: list[str] = []
    if vllm_args is not None or from_file is not None:
        command_model, flags = _with_vllm_command(vllm_args, from_file, flags, vllm_notes)
        if model is None and not raw_model:
            if command_model is None:
                raise InputError("the `vllm serve` command names no model: give MODEL, or the model after `vllm serve`")
            model = command_model
    demo_model = model is None and not raw_model
    demo_gpu = demo_model and not {"gpu", "gpu_memory"} & flags.keys()
    loaded = o.load_model_from_flags(model, layers, kv_heads, head_dim, heads, hidden_size, allow_unknown_arch,
                                     online=online, revision=revision)
    dep = o.deployment_from_flags(flags, default_gpu=o.DEFAULT_GPU if demo_gpu else None)
    result = run_estimate(loaded, dep)
    result.notes.extend(vllm_notes)
    if demo_gpu:
        result.notes.insert(0, f"no model or GPU given: showing the bundled default {loaded.spec.name} on one "
                               f"{o.DEFAULT_GPU} (pass MODEL and --gpu for your deployment)")
    elif demo_model:
        result.notes.insert(0, f"no model given: showing the bundled default {loaded.spec.name} (pass MODEL)")
    render_estimate(result, fmt)


def _with_vllm_command(text: str | None, path: str | None, flags: dict, notes: list[str]) -> tuple[str | None, dict]:
    """(the command's model, the flags with its settings added): flags given to kvplan win.

    The engine becomes `vllm` unless --engine was given: the flags are vLLM's, so are the semantics.
    """
    from ..deploy.vllm_args import parse_vllm_command, read_vllm_command_file

    if text is not None and path is not None:
        raise InputError("give --vllm-args or --from, not both")
    parsed = read_vllm_command_file(path) if path is not None else parse_vllm_command(text)
    values = parsed.estimate_flags()
    command_model = values.pop("model", None)
    notes += parsed.notes()
    overridden = sorted(values.keys() & flags.keys())
    if overridden:
        notes.append("from the command line instead of the vllm args: " + ", ".join(overridden))
    return command_model, {"engine": "vllm", **values, **flags}
