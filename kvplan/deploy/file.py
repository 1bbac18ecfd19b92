"""Deployment files: the YAML `kvplan check` reads, validated field by field, errors at file:line.

A file is one of:
  - one deployment: a mapping with `model`, `vllm_args` or `manifest`;
  - many: `deployments: [...]`, with `defaults:` merged into each (the entry's own keys win);
  - a Kubernetes manifest or a docker-compose file: each container/service that runs
    `vllm serve` is one deployment with the default requirement (it must fit).
Settings from a `vllm serve` command line (`vllm_args`, or read from a `manifest`) override
`defaults`; a key the entry writes itself must agree with them, so a file and the command
that really runs cannot drift apart unnoticed. The same field table generates
docs/deployment.schema.json (`kvplan.deploy.fields.json_schema()`).
"""

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, KvplanError
from ..hardware import GPU
from ..plan import Deployment
from ..yamlnodes import Y, display_path, read_yaml
from .fields import (DEPLOYMENT_FIELDS, FORMAT_VERSION, KEY_ALIASES, KWARG_TO_KEY, PER_ENTRY_KEYS,
                           REQUIREMENT_FIELDS, SOURCE_KEYS, TOP_KEYS, FieldError, int_value, near_miss_hint, shown_value,
                           tokens_value)

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
                         f"got {shown_value(doc.plain())}")
    top = doc.value
    if "deployments" not in top:
        if "defaults" in top:
            raise InputError(f"{shown}:{top['defaults'].line}: `defaults` needs a `deployments:` list beside it")
        single = {k: v for k, v in top.items() if k != "version"}
        _check_version(shown, top)
        return [_entry(path, Y(single, doc.line), {}, None)]
    for key, y in top.items():
        if key not in TOP_KEYS:
            raise InputError(f"{shown}:{y.line}: unknown top-level key {key!r}{near_miss_hint(key, TOP_KEYS)} "
                             f"(with `deployments:`, only {', '.join(TOP_KEYS)})")
    _check_version(shown, top)
    defaults = top.get("defaults")
    if defaults is not None and not isinstance(defaults.value, dict):
        raise InputError(f"{shown}:{defaults.line}: defaults: expected a mapping, got {shown_value(defaults.plain())}")
    listed = top["deployments"]
    if not isinstance(listed.value, list) or not listed.value:
        raise InputError(f"{shown}:{listed.line}: deployments: expected a non-empty list")
    default_fields = defaults.value if defaults is not None else {}
    for key, y in default_fields.items():
        if key in PER_ENTRY_KEYS:
            raise InputError(f"{shown}:{y.line}: defaults: {key!r} belongs to one deployment, not to defaults")
    return [_entry(path, item, default_fields, i) for i, item in enumerate(listed.value)]


def _check_version(shown: str, top: dict) -> None:
    version = top.get("version")
    if version is not None and (version.value != FORMAT_VERSION or isinstance(version.value, bool)):
        raise InputError(f"{shown}:{version.line}: version: this kvplan reads format {FORMAT_VERSION}, "
                         f"got {shown_value(version.value)}")


def _entry(path: Path, item: Y, defaults: dict[str, Y], index: int | None) -> DeploymentEntry:
    """One deployment (`index` None: the file is this one deployment)."""
    shown = display_path(path)
    if not isinstance(item.value, dict):
        raise InputError(f"{shown}:{item.line}: deployments[{index}]: expected a mapping, got {shown_value(item.plain())}")
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
                guess = KEY_ALIASES.get(key)
                hint = f" (did you mean {guess!r}?)" if guess else near_miss_hint(key, [*DEPLOYMENT_FIELDS, *TOP_KEYS])
                raise fail(y, key, f"unknown key{hint}")
            if key == "requirements":
                continue
            try:
                parsed[key] = DEPLOYMENT_FIELDS[key].parse(y.plain())
            except FieldError as exc:
                raise fail(y, key, str(exc)) from None
            lines[key] = y.line
    for origin in (own, defaults):  # the entry's choice replaces a default of the other kind
        if "gpu" in origin and "gpu_memory" in origin:
            raise fail(origin["gpu_memory"], "gpu_memory", "give `gpu` or `gpu_memory`, not both")
    if "gpu" in own or "gpu_memory" in own:
        parsed.pop("gpu_memory" if "gpu" in own else "gpu", None)
    if "vllm_args" in own and "manifest" in own:
        raise fail(own["manifest"], "manifest", "give `vllm_args` or `manifest`, not both")
    if not any(k in parsed for k in SOURCE_KEYS):
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
                raise fail(own[key], key, f"{shown_value(own[key].value)} here, but {source} (line "
                                          f"{command_lines[kwarg]}) say {shown_value(_plain_setting(value))}: keep one")
        else:
            kwargs[kwarg] = value
            lines[KWARG_TO_KEY.get(kwarg, kwarg)] = command_lines[kwarg]
    if command and "engine" not in parsed:  # the deployment runs vLLM: judge it by vLLM's rules
        kwargs["engine"] = "vllm"
    if parsed.get("model") and command_model and str(parsed["model"]) != str(command_model):
        _check_same_model(path, parsed["model"], command_model, source,
                          lambda message: fail(own.get("model", item), "model", message))
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
    from .serve_command import settings_from_argv, settings_from_command

    if "vllm_args" in parsed:
        y = own["vllm_args"]
        try:
            command = parsed["vllm_args"]
            settings = settings_from_command(command) if isinstance(command, str) else settings_from_argv(command)
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
        if launch.gpu is not None:
            kwargs["gpu"] = launch.gpu
        # findings name this file, so settings read from the manifest point at its `manifest:` line
        lines = {k: y.line for k in kwargs}
        return launch.settings.model, kwargs, launch.settings.ignored, launch.gpu_count, lines
    if "container" in parsed:
        raise fail(own["container"], "container", "only meaningful with `manifest`")
    return None, {}, (), None, {}


def _check_same_model(path: Path, written: str, served: str, source: str, fail) -> None:
    """`model:` may rename what the command serves (a path inside the container), not replace it."""
    from ..model import load_model

    def resolved(ref: str) -> str | None:
        try:
            return load_model(_model_ref(path, str(ref))).spec.name
        except KvplanError:
            return None

    ours, theirs = resolved(written), resolved(served)
    if ours is not None and theirs is not None and ours != theirs:
        raise fail(f"{written!r} here, but {source} serves {served!r} ({theirs}): keep one")


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
        dep = Deployment(gpu=launch.gpu, **{"engine": "vllm", **kwargs})  # it runs vLLM: vLLM's rules
    except KvplanError as exc:
        raise InputError(f"{where}: {exc}") from None
    lines = {KWARG_TO_KEY.get(k, k): launch.line for k in kwargs} | {"gpu": launch.gpu_line}
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
            raise InputError(f"{shown}:{y.line}: {label}: requirements: expected a mapping, got {shown_value(y.plain())}")
        merged.update(y.value)
    values: dict[str, object] = {}
    for key, y in merged.items():
        if key not in REQUIREMENT_FIELDS:
            raise InputError(f"{shown}:{y.line}: {label}: requirements: unknown key {key!r}"
                             f"{near_miss_hint(key, REQUIREMENT_FIELDS)}")
        try:
            values[key] = _users_targets(y) if key == "min_concurrent_users" else REQUIREMENT_FIELDS[key].parse(y.plain())
        except FieldError as exc:
            raise InputError(f"{shown}:{y.line}: {label}: requirements.{key}: {exc}") from None
    headroom_fraction, headroom_bytes = values.pop("headroom", (0.0, 0))
    return Requirements(**values, headroom_fraction=headroom_fraction, headroom_bytes=headroom_bytes,
                        lines={k: y.line for k, y in merged.items()})


def _users_targets(y: Y) -> tuple[UsersTarget, ...]:
    items = y.value if isinstance(y.value, list) else [y]
    if not items:
        raise FieldError("expected {users: N, context_tokens: C} or a non-empty list of them")
    targets = []
    for item in items:
        if not isinstance(item.value, dict):
            raise FieldError(f"expected {{users: N, context_tokens: C}}, got {shown_value(item.plain())}")
        for key in item.value:
            if key not in ("users", "context_tokens"):
                raise FieldError(f"unknown key {key!r}{near_miss_hint(key, ('users', 'context_tokens'))} (line {item.value[key].line})")
        if "users" not in item.value:
            raise FieldError(f"`users` missing (line {item.line})")
        context = item.value.get("context_tokens")
        targets.append(UsersTarget(int_value(item.value["users"].value),
                                   tokens_value(context.value) if context is not None else None, item.line))
    return tuple(targets)
