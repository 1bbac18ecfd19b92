"""Deployment files: the YAML `kvplan check` reads, validated field by field, errors at file:line.

A file is one of:
  - one deployment: a mapping with `model`, `vllm_args` or `manifest`;
  - many: `deployments: [...]`, with `defaults:` merged into each (the entry's own keys win);
  - a Kubernetes manifest or a docker-compose file: each container/service that runs
    `vllm serve` is one deployment with the default requirement (it must fit).
Settings from a `vllm serve` command line (`vllm_args`, or read from a `manifest`) override
`defaults`; a key the entry writes itself must agree with them, so a file and the command
that really runs cannot drift apart unnoticed. The same field table generates
docs/deployment.schema.json (`json_schema()`).
"""

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .dtypes import KV_DTYPE_ALIASES, KV_FORMATS, WEIGHT_DTYPE_ALIASES, WEIGHT_FORMATS, kv_format, weight_format
from .errors import InputError, KvplanError
from .hardware import GPU, find_gpu
from .plan import Deployment
from .units import parse_count, parse_size
from .yamlnodes import Y, display_path, read_yaml

FORMAT_VERSION = 1


@dataclass(frozen=True)
class UsersTarget:
    users: int
    context_tokens: int | None  # None: at max_model_len
    line: int


@dataclass(frozen=True)
class Requirements:
    must_fit: bool = True
    min_concurrent_users: tuple[UsersTarget, ...] = ()
    min_context_tokens: int | None = None
    max_kv_budget_fraction: float | None = None
    headroom_fraction: float = 0.0  # of the KV budget per GPU
    headroom_bytes: int = 0  # per GPU
    lines: dict = field(default_factory=dict, compare=False)  # requirement key -> line


@dataclass(frozen=True)
class DeploymentEntry:
    name: str
    file: str  # as shown to the user (relative to the working directory when under it)
    line: int
    model: str
    deployment: Deployment
    requirements: Requirements
    gpu_count: int | None = None  # GPUs a manifest requests (Kubernetes limits, compose devices)
    ignored_flags: tuple[str, ...] = ()  # `vllm serve` flags that do not change memory
    lines: dict = field(default_factory=dict, compare=False)  # key -> line where it was set

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)

    def error(self, key: str | None, message: str) -> InputError:
        where = f"deployment {self.name!r}" + (f": {key}" if key else "")
        return InputError(f"{self.file}:{self.line_of(key) if key else self.line}: {where}: {message}")


class _Bad(Exception):
    """A field value is wrong; the caller adds file:line and the field's name."""


# --- field parsers: value -> parsed, or _Bad ---------------------------------------------------

def _int(value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected an integer, got {_shown(value)}")
    if value < minimum:
        raise _Bad(f"must be at least {minimum}, got {value}")
    return value


def _tokens(value) -> int:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, str)):
        raise _Bad(f"expected a token count (an integer or like 32k), got {_shown(value)}")
    try:
        return parse_count(value, "value")
    except InputError as exc:
        raise _Bad(str(exc).removeprefix("value: ")) from None


def _size(value) -> int:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, str)):
        raise _Bad(f"expected a size (bytes, or like 80GiB / 24GB), got {_shown(value)}")
    try:
        return parse_size(value, "value")
    except InputError as exc:
        raise _Bad(str(exc).removeprefix("value: ")) from None


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"expected a number, got {_shown(value)}")
    return float(value)


def _unit_fraction(value) -> float:
    x = _number(value)
    if not 0.0 < x <= 1.0:
        raise _Bad(f"must be in (0, 1], got {value}")
    return x


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected a non-empty string, got {_shown(value)}")
    return value.strip()


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_shown(value)}")
    return value


def _gpu(value) -> GPU:
    try:
        return find_gpu(_text(value))
    except InputError as exc:
        raise _Bad(str(exc).replace("unknown --gpu", "unknown GPU").split(" (known:")[0]
                   + " (`kvplan estimate --help` lists the catalog; or give gpu_memory)") from None


def _gpu_memory(value) -> GPU:
    size = _size(value)
    if size <= 0:
        raise _Bad("must be positive")
    return GPU(f"custom {value}", size, None, None)


def _weight_dtype(value) -> str:
    try:
        return weight_format(_text(value)).name
    except InputError:
        raise _Bad(f"unknown weight dtype {_shown(value)}; choose one of {', '.join(WEIGHT_FORMATS)}") from None


def _kv_dtype(value) -> str:
    text = _text(value).lower()
    try:
        kv_format(text)
    except InputError:
        raise _Bad(f"unknown kv_dtype {_shown(value)}; choose one of auto, {', '.join(KV_FORMATS)}") from None
    return KV_DTYPE_ALIASES.get(text, text)


def _engine(value) -> str:
    from .plan.engines import engine_names

    name, known = _text(value).lower(), engine_names()
    if name not in known:
        raise _Bad(f"unknown engine {_shown(value)}{_hint(name, known)}; choose one of {', '.join(known)}")
    return name


def _command(value) -> str | list[str]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return [str(v) for v in value]
    raise _Bad(f"expected a `vllm serve` command line (a string or a list of strings), got {_shown(value)}")


def _headroom(value) -> tuple[float, int]:
    """(fraction of the KV budget, bytes per GPU): 0.1, "10%" or "2GiB"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            value = float(value.strip()[:-1]) / 100
        except ValueError:
            raise _Bad(f"cannot read {value!r} as a percentage") from None
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        if not 0.0 <= value < 1.0:
            raise _Bad(f"a fraction of the KV budget must be in [0, 1), got {value:g}")
        return float(value), 0
    if isinstance(value, str):
        return 0.0, _size(value)
    raise _Bad(f"expected a fraction below 1 (0.1), a percentage (10%) or a size (2GiB), got {_shown(value)}")


def _shown(value) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def _hint(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- the field table ------------------------------------------------------------------------

_POSINT = {"type": "integer", "minimum": 1}
_TOKENS = {"oneOf": [_POSINT, {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?([eE][+]?[0-9]+)?\s*[kKmM]?\s*$"}]}
_SIZE = {"oneOf": [{"type": "integer", "minimum": 0},
                   {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?\s*[A-Za-z]*\s*$"}]}
_FRACTION = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
_STRING = {"type": "string", "minLength": 1}
_ARGS = {"oneOf": [_STRING, {"type": "array", "items": {"type": ["string", "number"]}}]}


@dataclass(frozen=True)
class _Field:
    parse: Callable
    schema: dict
    doc: str
    kwarg: str | None = None  # the Deployment field it sets


def _enum(names) -> dict:
    return {"type": "string", "enum": sorted(names)}


DEPLOYMENT_FIELDS: dict[str, _Field] = {
    "name": _Field(_text, _STRING, "Unique name within the file (default: the model)"),
    "model": _Field(_text, _STRING, "Bundled spec (`kvplan models`), HF id in the local cache, config.json or "
                                    "model directory (relative to this file)"),
    "gpu": _Field(_gpu, _STRING, "GPU from the catalog: H100, A100-80GB, L40S, L4, ...", "gpu"),
    "gpu_memory": _Field(_gpu_memory, _SIZE, "GPU memory instead of `gpu`: 80GiB, 24GB", "gpu"),
    "tp": _Field(_int, _POSINT, "Tensor-parallel size", "tp"),
    "pp": _Field(_int, _POSINT, "Pipeline-parallel size", "pp"),
    "dtype": _Field(_weight_dtype, _enum(set(WEIGHT_FORMATS) | {k for k, v in WEIGHT_DTYPE_ALIASES.items() if v}),
                    "Weight storage format (default: the checkpoint's)", "weight_dtype"),
    "kv_dtype": _Field(_kv_dtype, _enum(set(KV_FORMATS) | set(KV_DTYPE_ALIASES) | {"auto"}),
                       "KV cache format (auto: the weights' compute dtype)", "kv_dtype"),
    "max_model_len": _Field(_tokens, _TOKENS, "Longest request the engine accepts (default: the model's max)",
                            "max_model_len"),
    "gpu_memory_utilization": _Field(_unit_fraction, _FRACTION, "Fraction of GPU memory the engine may use",
                                     "gpu_memory_utilization"),
    "block_size": _Field(_int, _POSINT, "Tokens per KV block", "block_size"),
    "max_num_batched_tokens": _Field(_tokens, _TOKENS, "Tokens per scheduler step (sizes the activation peak)",
                                     "max_num_batched_tokens"),
    "max_num_seqs": _Field(_int, _POSINT, "Most requests in one step", "max_num_seqs"),
    "engine": _Field(_engine, _STRING, "Budget semantics (`kvplan estimate --help`: generic, vllm, ...)", "engine"),
    "weights": _Field(_size, _SIZE, "Weight size of the whole model, overriding the parameter count",
                      "weights_bytes"),
    "overhead": _Field(_size, _SIZE, "Replace the overhead model (per GPU)", "overhead_bytes"),
    "activation_memory": _Field(_size, _SIZE, "Activation peak per GPU", "activation_bytes"),
    "non_torch_memory": _Field(_size, _SIZE, "CUDA context / NCCL memory per GPU", "non_torch_bytes"),
    "cuda_graph_memory": _Field(_size, _SIZE, "CUDA graph memory per GPU", "cuda_graph_bytes"),
    "kv_cache_memory": _Field(_size, _SIZE, "KV budget per GPU given directly (vLLM --kv-cache-memory-bytes)",
                              "kv_cache_memory_bytes"),
    "vllm_args": _Field(_command, _ARGS, "The `vllm serve` command line this deployment is launched with"),
    "manifest": _Field(_text, _STRING, "Kubernetes manifest or docker-compose file (relative to this file) "
                                       "whose `vllm serve` container this entry checks"),
    "container": _Field(_text, _STRING, "Container (Kubernetes) or service (compose) name inside `manifest`"),
    "requirements": _Field(None, {"$ref": "#/$defs/requirements"}, "Rules `kvplan check` enforces"),
}

_USERS_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["users"],
                 "properties": {"users": _POSINT, "context_tokens": _TOKENS}}

REQUIREMENT_FIELDS: dict[str, _Field] = {
    "must_fit": _Field(_flag, {"type": "boolean"}, "Weights fit and one request of max_model_len fits "
                                                   "(what the engine needs to start); default true"),
    "min_concurrent_users": _Field(None, {"oneOf": [_USERS_SCHEMA, {"type": "array", "items": _USERS_SCHEMA}]},
                                   "{users: N, context_tokens: C}: N requests of C tokens fit at once "
                                   "(C defaults to max_model_len); or a list of such"),
    "min_context_tokens": _Field(_tokens, _TOKENS, "max_model_len and the longest request that fits are at "
                                                   "least this"),
    "max_kv_budget_fraction": _Field(_unit_fraction, _FRACTION, "The load (min_concurrent_users, else one "
                                     "max_model_len request) uses at most this fraction of the KV budget"),
    "headroom": _Field(_headroom, {"oneOf": [{"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                             {"type": "string"}]},
                       "Safety margin taken off the KV budget before every rule: 0.1 / 10% of it, or 2GiB per GPU"),
}

_KWARG_TO_KEY = {f.kwarg: k for k, f in DEPLOYMENT_FIELDS.items() if f.kwarg and k != "gpu_memory"}
_ALIASES = {"tensor_parallel_size": "tp", "pipeline_parallel_size": "pp", "kv_cache_dtype": "kv_dtype",
            "quantization": "dtype", "weight_dtype": "dtype"}
_TOP_KEYS = ("version", "defaults", "deployments")
_SOURCE_KEYS = ("model", "vllm_args", "manifest")
_PER_ENTRY_KEYS = ("name", "vllm_args", "manifest", "container")  # not allowed in `defaults`


def json_schema() -> dict:
    """JSON Schema (2020-12) of the deployment file; docs/deployment.schema.json is this, verbatim."""
    props = {k: dict(f.schema, description=f.doc) for k, f in DEPLOYMENT_FIELDS.items()}
    deployment = {"type": "object", "additionalProperties": False, "properties": props,
                  "anyOf": [{"required": [k]} for k in _SOURCE_KEYS]}
    defaults = {"type": "object", "additionalProperties": False,
                "properties": {k: v for k, v in props.items() if k not in _PER_ENTRY_KEYS}}
    multi = {"type": "object", "additionalProperties": False, "required": ["deployments"],
             "properties": {"version": {"const": FORMAT_VERSION}, "defaults": defaults,
                            "deployments": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/deployment"}}}}
    single = {"allOf": [{"$ref": "#/$defs/deployment"}], "not": {"required": ["deployments"]}}
    requirements = {"type": "object", "additionalProperties": False,
                    "properties": {k: dict(f.schema, description=f.doc) for k, f in REQUIREMENT_FIELDS.items()}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kvplan.dev/deployment.schema.json",
        "title": "kvplan deployment file",
        "description": "One deployment, or `deployments:` with optional `defaults:`. See docs/ci.md.",
        "oneOf": [multi, single],
        "$defs": {"deployment": deployment, "requirements": requirements},
    }


# --- loading --------------------------------------------------------------------------------

def load_deployments(paths: list[str | Path]) -> list[DeploymentEntry]:
    """Every deployment of every file, validated. Raises InputError (file:line: what) on the first problem."""
    if not paths:
        raise InputError("no deployment file given")
    entries: list[DeploymentEntry] = []
    for p in paths:
        entries += load_file(Path(p))
    return entries


def load_file(path: Path) -> list[DeploymentEntry]:
    shown = display_path(path)
    docs = read_yaml(path)
    if not docs:
        raise InputError(f"{shown}: empty file: no deployment in it")
    from . import manifests

    if manifests.is_manifest(docs):
        return [_entry_from_launch(path, launch) for launch in manifests.vllm_launches(path, docs)]
    if len(docs) > 1:
        raise InputError(f"{shown}:{docs[1].line}: a deployment file holds one YAML document "
                         "(list several under `deployments:`)")
    entries = _entries(path, docs[0])
    seen: dict[str, int] = {}
    for e in entries:
        if e.name in seen:
            raise InputError(f"{shown}:{e.line}: two deployments named {e.name!r} (the other on line "
                             f"{seen[e.name]}): give each a unique `name`")
        seen[e.name] = e.line
    return entries


def _entries(path: Path, doc: Y) -> list[DeploymentEntry]:
    shown = display_path(path)
    if not isinstance(doc.value, dict):
        raise InputError(f"{shown}:{doc.line}: expected a mapping (a deployment, or `deployments:`), "
                         f"got {_shown(doc.plain())}")
    top = doc.value
    if "deployments" not in top:
        if "defaults" in top:
            raise InputError(f"{shown}:{top['defaults'].line}: `defaults` needs a `deployments:` list beside it")
        single = {k: v for k, v in top.items() if k != "version"}
        _check_version(shown, top)
        return [_entry(path, Y(single, doc.line), {}, None)]
    for key, y in top.items():
        if key not in _TOP_KEYS:
            raise InputError(f"{shown}:{y.line}: unknown top-level key {key!r}{_hint(key, _TOP_KEYS)} "
                             f"(with `deployments:`, only {', '.join(_TOP_KEYS)})")
    _check_version(shown, top)
    defaults = top.get("defaults")
    if defaults is not None and not isinstance(defaults.value, dict):
        raise InputError(f"{shown}:{defaults.line}: defaults: expected a mapping, got {_shown(defaults.plain())}")
    listed = top["deployments"]
    if not isinstance(listed.value, list) or not listed.value:
        raise InputError(f"{shown}:{listed.line}: deployments: expected a non-empty list")
    default_fields = defaults.value if defaults is not None else {}
    for key, y in default_fields.items():
        if key in _PER_ENTRY_KEYS:
            raise InputError(f"{shown}:{y.line}: defaults: {key!r} belongs to one deployment, not to defaults")
    return [_entry(path, item, default_fields, i) for i, item in enumerate(listed.value)]


def _check_version(shown: str, top: dict) -> None:
    version = top.get("version")
    if version is not None and (version.value != FORMAT_VERSION or isinstance(version.value, bool)):
        raise InputError(f"{shown}:{version.line}: version: this kvplan reads format {FORMAT_VERSION}, "
                         f"got {_shown(version.value)}")


def _entry(path: Path, item: Y, defaults: dict[str, Y], index: int | None) -> DeploymentEntry:
    """One deployment (`index` None: the file is this one deployment)."""
    shown = display_path(path)
    if not isinstance(item.value, dict):
        raise InputError(f"{shown}:{item.line}: deployments[{index}]: expected a mapping, got {_shown(item.plain())}")
    own: dict[str, Y] = item.value
    name_y = own.get("name")
    label = f"deployment {name_y.value!r}" if name_y is not None and isinstance(name_y.value, str) \
        else "deployment" if index is None else f"deployments[{index}]"

    def fail(y: Y, key: str, message: str) -> InputError:
        return InputError(f"{shown}:{y.line}: {label}: {key}: {message}")

    parsed: dict[str, object] = {}
    lines: dict[str, int] = {}
    for origin in (defaults, own):
        for key, y in origin.items():
            if key not in DEPLOYMENT_FIELDS:
                guess = _ALIASES.get(key)
                hint = f" (did you mean {guess!r}?)" if guess else _hint(key, [*DEPLOYMENT_FIELDS, *_TOP_KEYS])
                raise fail(y, key, f"unknown key{hint}")
            if key == "requirements":
                continue
            try:
                parsed[key] = DEPLOYMENT_FIELDS[key].parse(y.plain())
            except _Bad as exc:
                raise fail(y, key, str(exc)) from None
            lines[key] = y.line
    for origin in (own, defaults):  # the entry's choice replaces a default of the other kind
        if "gpu" in origin and "gpu_memory" in origin:
            raise fail(origin["gpu_memory"], "gpu_memory", "give `gpu` or `gpu_memory`, not both")
    if "gpu" in own or "gpu_memory" in own:
        parsed.pop("gpu_memory" if "gpu" in own else "gpu", None)
    if "vllm_args" in own and "manifest" in own:
        raise fail(own["manifest"], "manifest", "give `vllm_args` or `manifest`, not both")
    if not any(k in parsed for k in _SOURCE_KEYS):
        raise InputError(f"{shown}:{item.line}: {label}: needs `model` (or `vllm_args` / `manifest` naming one)")

    requirements = _requirements(shown, label, defaults.get("requirements"), own.get("requirements"))
    command_model, command, ignored, gpu_count, command_lines = _command_settings(path, parsed, own, fail)
    kwargs = {DEPLOYMENT_FIELDS[k].kwarg: v for k, v in parsed.items() if DEPLOYMENT_FIELDS[k].kwarg}
    own_key = {DEPLOYMENT_FIELDS[k].kwarg: k for k in own if k in parsed and DEPLOYMENT_FIELDS[k].kwarg}
    source = "vllm_args" if "vllm_args" in own else "the manifest"
    for kwarg, value in command.items():
        if kwarg in own_key:
            if kwargs[kwarg] != value:
                key = own_key[kwarg]
                raise fail(own[key], key, f"{_shown(own[key].value)} here, but {source} (line "
                                          f"{command_lines[kwarg]}) say {_shown(_plain_setting(value))}: keep one")
        else:
            kwargs[kwarg] = value
            lines[_KWARG_TO_KEY.get(kwarg, kwarg)] = command_lines[kwarg]
    model = parsed.get("model") or command_model
    if model is None:
        raise InputError(f"{shown}:{item.line}: {label}: the command line names no model: add `model`")
    if "gpu" not in kwargs:
        raise InputError(f"{shown}:{item.line}: {label}: no GPU: add `gpu` (e.g. H100) or `gpu_memory`")
    name = parsed.get("name") or str(model)
    try:
        dep = Deployment(**kwargs)
    except KvplanError as exc:
        raise InputError(f"{shown}:{item.line}: {label}: {exc}") from None
    return DeploymentEntry(name=name, file=shown, line=item.line, model=_model_ref(path, str(model)),
                           deployment=dep, requirements=requirements, gpu_count=gpu_count,
                           ignored_flags=tuple(ignored), lines=lines)


def _command_settings(path: Path, parsed: dict, own: dict[str, Y], fail):
    """(model, Deployment kwargs, ignored flags, GPU count, kwarg -> line) from `vllm_args` or `manifest`."""
    from . import manifests

    if "vllm_args" in parsed:
        y = own["vllm_args"]
        try:
            command = parsed["vllm_args"]
            settings = manifests.settings_from_command(command) if isinstance(command, str) else \
                manifests.settings_from_argv(command)
        except InputError as exc:
            raise fail(y, "vllm_args", str(exc)) from None
        return settings.model, settings.kwargs, settings.ignored, None, {k: y.line for k in settings.kwargs}
    if "manifest" in parsed:
        y = own["manifest"]
        target = path.parent / str(parsed["manifest"])
        if not target.is_file():
            raise fail(y, "manifest", f"no such file {display_path(target)}")
        launch = manifests.select_launch(target, parsed.get("container"), lambda m: fail(y, "manifest", m))
        kwargs = dict(launch.settings.kwargs)
        lines = {k: launch.line for k in kwargs}
        if launch.gpu is not None:
            kwargs["gpu"] = launch.gpu
            lines["gpu"] = launch.gpu_line
        return launch.settings.model, kwargs, launch.settings.ignored, launch.gpu_count, lines
    if "container" in parsed:
        raise fail(own["container"], "container", "only meaningful with `manifest`")
    return None, {}, (), None, {}


def _plain_setting(value):
    return value.name if isinstance(value, GPU) else value


def _entry_from_launch(path: Path, launch) -> DeploymentEntry:
    """A container/service of a manifest checked directly: must fit, GPU from its hints."""
    shown = display_path(path)
    kwargs = dict(launch.settings.kwargs)
    model = launch.settings.model
    where = f"{shown}:{launch.line}: {launch.kind} {launch.name!r}"
    if model is None:
        raise InputError(f"{where}: the `vllm serve` command names no model")
    if launch.gpu is None:
        raise InputError(f"{where}: GPU type unknown: add the node selector nvidia.com/gpu.product or the "
                         "annotation/label kvplan.dev/gpu (e.g. H100)")
    try:
        dep = Deployment(gpu=launch.gpu, **kwargs)
    except KvplanError as exc:
        raise InputError(f"{where}: {exc}") from None
    lines = {_KWARG_TO_KEY.get(k, k): launch.line for k in kwargs} | {"gpu": launch.gpu_line}
    return DeploymentEntry(name=launch.name, file=shown, line=launch.line, model=_model_ref(path, str(model)),
                           deployment=dep, requirements=Requirements(), gpu_count=launch.gpu_count,
                           ignored_flags=tuple(launch.settings.ignored), lines=lines)


def _model_ref(path: Path, model: str) -> str:
    """A model path is relative to the file that names it."""
    candidate = path.parent / model
    if not Path(model).is_absolute() and ("/" in model or model.startswith(".")) and candidate.exists():
        return str(candidate)
    return model


def _requirements(shown: str, label: str, defaults: Y | None, own: Y | None) -> Requirements:
    merged: dict[str, Y] = {}
    for y in (defaults, own):
        if y is None:
            continue
        if not isinstance(y.value, dict):
            raise InputError(f"{shown}:{y.line}: {label}: requirements: expected a mapping, got {_shown(y.plain())}")
        merged.update(y.value)
    values: dict[str, object] = {}
    for key, y in merged.items():
        if key not in REQUIREMENT_FIELDS:
            raise InputError(f"{shown}:{y.line}: {label}: requirements: unknown key {key!r}"
                             f"{_hint(key, REQUIREMENT_FIELDS)}")
        try:
            values[key] = _users_targets(y) if key == "min_concurrent_users" else REQUIREMENT_FIELDS[key].parse(y.plain())
        except _Bad as exc:
            raise InputError(f"{shown}:{y.line}: {label}: requirements.{key}: {exc}") from None
    headroom_fraction, headroom_bytes = values.pop("headroom", (0.0, 0))
    return Requirements(**values, headroom_fraction=headroom_fraction, headroom_bytes=headroom_bytes,
                        lines={k: y.line for k, y in merged.items()})


def _users_targets(y: Y) -> tuple[UsersTarget, ...]:
    items = y.value if isinstance(y.value, list) else [y]
    if not items:
        raise _Bad("expected {users: N, context_tokens: C} or a non-empty list of them")
    targets = []
    for item in items:
        if not isinstance(item.value, dict):
            raise _Bad(f"expected {{users: N, context_tokens: C}}, got {_shown(item.plain())}")
        for key in item.value:
            if key not in ("users", "context_tokens"):
                raise _Bad(f"unknown key {key!r}{_hint(key, ('users', 'context_tokens'))} (line {item.value[key].line})")
        if "users" not in item.value:
            raise _Bad(f"`users` missing (line {item.line})")
        context = item.value.get("context_tokens")
        targets.append(UsersTarget(_int(item.value["users"].value),
                                   _tokens(context.value) if context is not None else None, item.line))
    return tuple(targets)
