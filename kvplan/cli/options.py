"""Flags shared by the commands, and the builders behind them.

Model flags are Annotated types the commands declare. Deployment flags are declared once, by the
Deployment's fields (`kvplan.plan.deployment.SETTINGS`: key, help, kind, bound, default):
`@deployment_flags(...)` puts them in a command's signature in place of its `flags` parameter and
passes the command those given, by key. Every flag defaults to None, "not given", so the
Deployment's default or the engine's applies and a command can tell what the user chose.
"""

import functools
import inspect
from typing import Annotated, Optional

import typer

from ..errors import InputError
from ..hardware import GPU, detect_gpu, find_gpu, require_nvml
from ..model import LoadedModel, load_model
from ..model.loaders import spec_from_numbers
from ..plan import Deployment
from ..plan.deployment import DEPLOY_PANEL, SETTINGS, Setting
from ..units import parse_count, parse_size

MODEL_PANEL = "Model"
DEFAULT_GPU = "H100-SXM"

_MODEL_HELP = ("Bundled spec (`kvplan models`), HF id ({hub}), config.json or model directory. "
               "Default: llama-3.1-8b")
ModelArg = Annotated[Optional[str], typer.Argument(
    help=_MODEL_HELP.format(hub="local cache; the Hub with --online"), show_default=False)]
LocalModelArg = Annotated[Optional[str], typer.Argument(  # for commands without --online
    help=_MODEL_HELP.format(hub="in the local HF cache"), show_default=False)]
LayersOpt = Annotated[Optional[int], typer.Option("--layers", help="Raw model: number of layers", rich_help_panel=MODEL_PANEL)]
KVHeadsOpt = Annotated[Optional[int], typer.Option("--kv-heads", help="Raw model: KV heads", rich_help_panel=MODEL_PANEL)]
HeadDimOpt = Annotated[Optional[int], typer.Option("--head-dim", help="Raw model: head dimension", rich_help_panel=MODEL_PANEL)]
HeadsOpt = Annotated[Optional[int], typer.Option("--heads", help="Raw model: attention (query) heads", rich_help_panel=MODEL_PANEL)]
HiddenOpt = Annotated[Optional[int], typer.Option("--hidden-size", help="Raw model: hidden size", rich_help_panel=MODEL_PANEL)]
AllowUnknownOpt = Annotated[bool, typer.Option("--allow-unknown-arch", help="Size an unknown model_type as standard attention", rich_help_panel=MODEL_PANEL)]
OnlineOpt = Annotated[Optional[bool], typer.Option("--online/--offline", help="Fetch an HF id's config and safetensors headers from the Hub when not cached (default: `online:` in ~/.config/kvplan/config.yaml, else offline; HF_HUB_OFFLINE=1 always wins)", show_default=False, rich_help_panel=MODEL_PANEL)]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Hub branch, tag or commit of an HF id (default: main)", rich_help_panel=MODEL_PANEL)]


def format_option(formats: tuple[str, ...]):
    """--format offering exactly the formats the command renders."""
    return Annotated[str, typer.Option("--format", "-f", help=", ".join(formats[:-1]) + " or " + formats[-1])]


# --- deployment flags --------------------------------------------------------------------------------

# How a flag's text is read, per Setting.kind; counts and fractions arrive typed by click.
_TYPES = {"count": Optional[int], "tokens": Optional[str], "fraction": Optional[float], "size": Optional[str],
          "text": Optional[str], "gpu": Optional[str]}
_METAVARS = {"tokens": "TOKENS", "size": "SIZE"}
GPU_MEMORY = Setting("gpu_memory", "GPU memory instead of --gpu: 80GiB, 24GB, 81559MiB", "size", name="gpu")
_DECLARED = [x for s in SETTINGS.values() for x in ((s, GPU_MEMORY) if s.kind == "gpu" else (s,))]  # in help order


def deployment_flags(only: tuple[str, ...] = (), exclude: tuple[str, ...] = (), default_help: dict | None = None):
    """Decorator: the command's `flags` parameter becomes the deployment flags (keys `only`, else all but `exclude`).

    The command receives `flags`: {key: value} for the flags given. `default_help` replaces the
    stated default of some keys (explain-log: "from the log"). With gpu_memory_utilization come
    the engines' own names for it (`--mem-fraction-static`, ...); `fold_fraction_aliases` reads them.
    """
    chosen = [s for s in _DECLARED if (s.key in only or not only) and s.key not in exclude]
    if any(s.key == "gpu_memory_utilization" for s in chosen):
        chosen += [Setting(alias, f"{engine}'s name for --gpu-memory-utilization: its {alias}, a fraction of "
                                  f"{of_what} ({engine} only)", "fraction")
                   for alias, (engine, of_what) in fraction_aliases().items()]
    names = [s.key for s in chosen]

    def decorate(command):
        signature = inspect.signature(command)
        params = []
        for p in signature.parameters.values():
            if p.name == "flags":
                params += [inspect.Parameter(s.key, inspect.Parameter.KEYWORD_ONLY, default=None,
                                             annotation=_annotation(s, (default_help or {}).get(s.key)))
                           for s in chosen]
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def run(**kwargs):
            given = {k: kwargs.pop(k) for k in names if kwargs.get(k) is not None}
            for k in names:
                kwargs.pop(k, None)
            if str(given.get("gpu", "")).strip().lower() == "auto":
                require_nvml()  # before the model is loaded or anything fetched
            return command(**kwargs, flags=given)

        run.__signature__ = signature.replace(parameters=params)
        return run

    return decorate


def _annotation(s: Setting, default_help: str | None):
    if default_help is not None:
        stated = f" (default: {default_help})"
    elif s.engine_default:
        stated = f" (default: the engine's: {engine_defaults_text(s.name)})"
    elif s.default is not None:
        stated = f" (default: {s.default})"
    else:
        stated = ""
    auto = " or `auto` (the attached GPU, via NVML)" if s.kind == "gpu" else ""
    option = typer.Option(s.flag, help=s.help + auto + stated, metavar=_METAVARS.get(s.kind), show_default=False,
                          rich_help_panel=s.panel)
    return Annotated[_TYPES[s.kind], option]


def engine_defaults_text(name: str) -> str:
    """`8192 for every engine`, else `generic 16, sglang 1, vllm 256 or 1024 by GPU, ...`: each engine's default."""
    values = {engine: _defaults_over_gpus(engine, name) for engine in _engine_names()}
    if len({v for v in values.values()}) == 1 and len(next(iter(values.values()))) == 1:
        return f"{next(iter(next(iter(values.values()))))} for every engine"
    return ", ".join(f"{engine} {' or '.join(str(v) for v in sorted(vs))}{' by GPU' if len(vs) > 1 else ''}"
                     for engine, vs in values.items())


@functools.cache
def _engine_names() -> tuple[str, ...]:
    from ..plan.policies import engine_names

    return tuple(engine_names())


@functools.cache
def _defaults_over_gpus(engine: str, name: str) -> frozenset:
    """What `engine` fills in for setting `name` with no GPU and on the catalog's largest and smallest kinds."""
    from ..plan.policies import get_policy

    policy = get_policy(engine)
    gpus = (None, find_gpu("H100"), find_gpu("L4"))
    return frozenset(policy.engine_defaults(Deployment(gpu=gpu, engine=engine), 131072)[0][name] for gpu in gpus)


@functools.cache
def fraction_aliases() -> dict[str, tuple[str, str]]:
    """Engine's own name for the memory fraction -> (engine, what it is a fraction of), where it differs from vLLM's."""
    from ..plan.policies import engine_names, get_policy

    out = {}
    for engine in engine_names():
        name, of_what = get_policy(engine).memory_fraction
        if name != "gpu_memory_utilization":
            out[name] = (engine, of_what)
    return out


def deployment_from_flags(flags: dict, default_gpu: str | None = None) -> Deployment:
    """The Deployment from the flags given (by key); what is not given keeps the Deployment's default."""
    gpu = resolve_gpu(flags.get("gpu"), flags.get("gpu_memory"), default=default_gpu)
    return Deployment(gpu=gpu, **deployment_kwargs(flags))


def deployment_kwargs(flags: dict) -> dict:
    """Deployment keyword arguments (but `gpu`) from the flags given, the engines' names for the fraction folded in."""
    flags = fold_fraction_aliases(flags, flags.get("engine") or SETTINGS["engine"].default)
    return {s.name: parse_flag(s, flags[s.key]) for s in SETTINGS.values() if s.kind != "gpu" and s.key in flags}


def fold_fraction_aliases(flags: dict, engine: str) -> dict:
    """`--mem-fraction-static 0.8` read as --gpu-memory-utilization, when `engine` is the one that names it so."""
    engine = engine.strip().lower().partition("@")[0]
    flags = dict(flags)
    for alias, (owner, _) in fraction_aliases().items():
        if alias not in flags:
            continue
        flag = "--" + alias.replace("_", "-")
        if "gpu_memory_utilization" in flags:
            raise InputError(f"give --gpu-memory-utilization or {flag}, not both")
        if engine != owner:
            raise InputError(f"{flag} is {owner}'s memory fraction: add --engine {owner} "
                             f"(with --engine {engine}, give --gpu-memory-utilization)")
        flags["gpu_memory_utilization"] = flags.pop(alias)
    return flags


def parse_flags(flags: dict) -> dict:
    """The flags (by key) with counts, token lengths and sizes read as numbers; other values as given."""
    return {k: parse_flag(_BY_KEY[k], v) if k in _BY_KEY else v for k, v in flags.items()}


def parse_flag(s: Setting, value):
    """A flag's value as the Deployment field holds it (bounds stated in the message)."""
    if s.kind in ("count", "tokens"):
        return parse_count(value, s.flag, maximum=s.maximum)
    if s.kind == "size":
        return parse_size(value, s.flag)
    return value


_BY_KEY = {s.key: s for s in SETTINGS.values()}


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

