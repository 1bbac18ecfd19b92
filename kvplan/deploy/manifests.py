"""The `vllm serve` command of Kubernetes workloads and docker-compose services, from the file alone.

No cluster and no shell are consulted: `$(VAR)` (Kubernetes) resolves from the container's
literal `env` values, `${VAR:-default}` (compose) to its default; anything else unresolved is an
error naming the line. The GPU type comes from the node selector `nvidia.com/gpu.product`
(GPU feature discovery labels) or an annotation / label `kvplan.dev/gpu`; the GPU count from
`nvidia.com/gpu` limits or compose device reservations.
"""

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..hardware import GPU, find_gpu
from ..inputs import MAX_COMMAND_CHARS, check_command, expand
from ..yamlnodes import Y, display_path, read_yaml

GPU_ANNOTATION = "kvplan.dev/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
_SHELLS = {"sh", "bash", "dash", "ash", "zsh"}
_SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
_K8S_VAR = re.compile(r"\$?\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_SHELL_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_COMPOSE_VAR = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?::?-([^}]*))?\}|\$([A-Za-z_]\w*)")
_POD_PATHS = (("spec", "template", "spec"), ("spec", "jobTemplate", "spec", "template", "spec"), ("spec",))


@dataclass(frozen=True)
class Settings:
    """What a `vllm serve` command line sets, as Deployment keyword arguments."""

    model: str | None
    kwargs: dict
    ignored: tuple[str, ...]  # flags that do not change memory, kept for the report


@dataclass(frozen=True)
class Launch:
    kind: str  # "container" (Kubernetes) or "service" (compose)
    name: str  # workload/container, or the service name
    line: int
    settings: Settings
    gpu: GPU | None
    gpu_line: int
    gpu_count: int | None


def settings_from_argv(argv: list[str]) -> Settings:
    """A `vllm serve` command as a token list, with or without `vllm serve` (or a shell) in front."""
    from .vllm_args import parse_vllm_argv

    args = serve_args(argv)
    return _settings_of(parse_vllm_argv(argv if args is None else args))


def settings_from_command(text: str) -> Settings:
    """A `vllm serve` command line or shell script, as written."""
    from .vllm_args import parse_vllm_command

    return _settings_of(parse_vllm_command(text))


def _settings_of(parsed) -> Settings:
    """kvplan.deploy.vllm_args' reading -> Deployment keyword arguments (the one place it is wired in)."""
    from ..dtypes import KV_DTYPE_ALIASES, kv_format, weight_format
    from ..units import parse_count, parse_size

    flags = parsed.estimate_flags()
    kwargs: dict = {}
    for flag, kwarg in (("tp", "tp"), ("pp", "pp"), ("block_size", "block_size"), ("max_num_seqs", "max_num_seqs"),
                        ("max_num_batched_tokens", "max_num_batched_tokens"),
                        ("gpu_memory_utilization", "gpu_memory_utilization")):
        if flag in flags:
            kwargs[kwarg] = flags[flag]
    if "max_model_len" in flags:
        kwargs["max_model_len"] = parse_count(flags["max_model_len"], "--max-model-len")
    if "kv_cache_memory" in flags:
        kwargs["kv_cache_memory_bytes"] = parse_size(flags["kv_cache_memory"], "--kv-cache-memory-bytes")
    if "kv_dtype" in flags:
        name = str(flags["kv_dtype"]).lower()
        kv_format(name)  # refuses an unknown one
        kwargs["kv_dtype"] = KV_DTYPE_ALIASES.get(name, name)
    if "dtype" in flags:
        kwargs["weight_dtype"] = weight_format(flags["dtype"]).name
    return Settings(flags.get("model"), kwargs, tuple(parsed.ignored))


def serve_args(argv: list[str], env: dict[str, str] | None = None) -> list[str] | None:
    """The arguments after `vllm serve` (or the OpenAI server module) in a command, else None.

    `sh -c SCRIPT` (also `bash -lc`, `sh -ec`, ...) is split as a shell would: comments dropped,
    line continuations joined, `;`/`&&`/`|` separated, `$VAR`/`${VAR}` from the container's env."""
    script = _shell_script(argv)
    if script is not None:
        try:
            return serve_args(_shell_words(script, env or {}))
        except ValueError as exc:
            raise InputError(f"cannot split the shell command ({exc})") from None
    for i, arg in enumerate(argv[:-1]):
        if (os.path.basename(arg) == "vllm" and argv[i + 1] == "serve") or \
                (arg == "-m" and argv[i + 1] == "vllm.entrypoints.openai.api_server"):
            rest = argv[i + 2:]
            cut = next((j for j, a in enumerate(rest) if a in _SHELL_OPERATORS), len(rest))
            return rest[:cut]
    return None


def _shell_script(argv: list[str]) -> str | None:
    if len(argv) < 3 or os.path.basename(argv[0]) not in _SHELLS:
        return None
    for i, arg in enumerate(argv[1:-1], 1):
        if re.fullmatch(r"-[a-z]*c[a-z]*", arg):  # -c, -lc, -ec, -euc ...
            return argv[i + 1]
    return None


def _shell_words(script: str, env: dict[str, str]) -> list[str]:
    script = script.replace("\\\n", " ")
    script = expand(_SHELL_VAR, lambda m: env.get(m.group(1) or m.group(2), m.group(0)), script, "shell command")
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def is_vllm_server_image(image: str) -> bool:
    """The official server image (`vllm/vllm-openai[:tag|@digest]`, any registry), whose entrypoint
    is `vllm serve`; other images merely named after vLLM (routers, operators) are not."""
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]  # drop digest, registry/path and tag
    return name == "vllm-openai"


def is_manifest(docs: list[Y]) -> bool:
    return any(isinstance(d.value, dict) and (("apiVersion" in d.value and "kind" in d.value) or "services" in d.value)
               for d in docs)


def vllm_launches(path: Path, docs: list[Y]) -> list[Launch]:
    """Every container / service in the file that runs `vllm serve`."""
    shown = display_path(path)
    launches: list[Launch] = []
    for doc in docs:
        if not isinstance(doc.value, dict):
            continue
        if "services" in doc.value:
            launches += _compose(shown, doc.value["services"])
        elif "kind" in doc.value:
            launches += _kubernetes(shown, doc)
    if not launches:
        raise InputError(f"{shown}: no container or service in it runs `vllm serve`")
    return launches


def select_launch(path: Path, container: str | None, fail) -> Launch:
    """The launch a deployment entry points at; `fail(message)` builds the error to raise."""
    try:
        launches = vllm_launches(path, read_yaml(path))
    except InputError as exc:
        raise fail(str(exc)) from None
    if container is not None:
        chosen = [la for la in launches if container in (la.name, la.name.rsplit("/", 1)[-1])]
        if not chosen:
            raise fail(f"no `vllm serve` container named {container!r} in it "
                       f"(found: {', '.join(la.name for la in launches)})")
        launches = chosen
    if len(launches) > 1:
        raise fail(f"several `vllm serve` containers in it ({', '.join(la.name for la in launches)}): "
                   "add `container: NAME`")
    return launches[0]


def gpu_from_product(label: str) -> GPU | None:
    """A GPU feature discovery product label (NVIDIA-H100-80GB-HBM3) -> catalog GPU, exact or None."""
    key = label.strip().lower().replace("_", "-").replace(" ", "-")
    for prefix in ("nvidia-", "tesla-"):
        key = key.removeprefix(prefix)
    for candidate in (key, re.sub(r"-(hbm3e?|hbm2e?)$", "", key)):
        try:
            return find_gpu(candidate)
        except InputError:
            continue
    return None


# --- Kubernetes -----------------------------------------------------------------------------

def _kubernetes(shown: str, doc: Y) -> list[Launch]:
    workload = _dig(doc, ("metadata", "name"))
    workload_name = str(workload.value) if workload is not None else str(doc.value["kind"].value)
    pod = next((p for path in _POD_PATHS if (p := _dig(doc, path)) is not None and p.get("containers")), None)
    if pod is None:
        return []
    gpu, gpu_line = _k8s_gpu(shown, doc, pod)
    containers = pod.get("containers")
    launches = []
    for c in containers.value if isinstance(containers.value, list) else []:
        if not isinstance(c.value, dict):
            continue
        name = c.get("name")
        cname = f"{workload_name}/{name.value if name is not None else '?'}"
        env = {str(e.get("name").value): str(e.get("value").value) for e in _items(c.get("env"))
               if e.get("name") is not None and e.get("value") is not None}
        argv, line = _Argv(), c.line
        for key in ("command", "args"):
            y = c.get(key)
            if y is not None:
                for v in _strings(shown, y, key):
                    argv.add(_k8s_expand(shown, v, env), f"{shown}:{v.line}")
                line = y.line
        args = serve_args(argv, env)
        image = c.get("image")
        if args is None and not c.get("command") and image is not None and is_vllm_server_image(str(image.value)):
            args = argv  # the vllm/vllm-openai image's entrypoint is the server itself
        if args is None:
            continue
        launches.append(Launch("container", cname, line, _settings(shown, line, args), gpu, gpu_line,
                               _k8s_gpu_count(shown, c)))
    return launches


def _k8s_gpu(shown: str, doc: Y, pod: Y) -> tuple[GPU | None, int]:
    for meta in (_dig(doc, ("metadata", "annotations")), _dig(doc, ("spec", "template", "metadata", "annotations"))):
        y = meta.get(GPU_ANNOTATION) if meta is not None else None
        if y is not None:
            try:
                return find_gpu(str(y.value)), y.line
            except InputError as exc:
                raise InputError(f"{shown}:{y.line}: {GPU_ANNOTATION}: {str(exc).split(' (known:')[0]}") from None
    product = _dig(pod, ("nodeSelector", GPU_PRODUCT_LABEL))
    if product is not None:
        gpu = gpu_from_product(str(product.value))
        if gpu is None:
            raise InputError(f"{shown}:{product.line}: {GPU_PRODUCT_LABEL} {product.value!r} is not in the GPU "
                             f"catalog: add the annotation {GPU_ANNOTATION}: NAME (or gpu_memory in a kvplan file)")
        return gpu, product.line
    return None, 0


def _k8s_gpu_count(shown: str, container: Y) -> int | None:
    for section in ("limits", "requests"):
        y = _dig(container, ("resources", section, GPU_RESOURCE))
        if y is not None:
            try:
                count = int(str(y.value))
            except ValueError:
                raise InputError(f"{shown}:{y.line}: {GPU_RESOURCE}: expected a GPU count, got {y.value!r}") from None
            return count
    return None


def _k8s_expand(shown: str, y: Y, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0).startswith("$$"):
            return m.group(0)[1:]
        if m.group(1) not in env:
            raise InputError(f"{shown}:{y.line}: cannot resolve $({m.group(1)}) from the manifest "
                             "(only literal `env` values are read): write the value")
        return env[m.group(1)]

    return expand(_K8S_VAR, sub, str(y.value), f"{shown}:{y.line}")


# --- docker-compose -------------------------------------------------------------------------

def _compose(shown: str, services: Y) -> list[Launch]:
    if not isinstance(services.value, dict):
        raise InputError(f"{shown}:{services.line}: services: expected a mapping")
    launches = []
    for name, svc in services.value.items():
        if not isinstance(svc.value, dict):
            continue
        argv, line = _Argv(), svc.line
        for key in ("entrypoint", "command"):
            y = svc.get(key)
            if y is None:
                continue
            if isinstance(y.value, str):
                try:
                    for word in shlex.split(check_command(y.value, f"{shown}:{y.line}")):
                        argv.add(_compose_expand(shown, y.line, word), f"{shown}:{y.line}")
                except ValueError as exc:
                    raise InputError(f"{shown}:{y.line}: {key}: cannot split ({exc})") from None
            else:
                for v in _strings(shown, y, key):
                    argv.add(_compose_expand(shown, y.line, v.value), f"{shown}:{v.line}")
            line = y.line
        args = serve_args(argv)
        image = svc.get("image")
        if args is None and svc.get("entrypoint") is None and image is not None and is_vllm_server_image(str(image.value)):
            args = argv
        if args is None:
            continue
        gpu, gpu_line = _compose_gpu(shown, svc)
        launches.append(Launch("service", name, line, _settings(shown, line, args), gpu, gpu_line,
                               _compose_gpu_count(svc)))
    return launches


def _compose_gpu(shown: str, svc: Y) -> tuple[GPU | None, int]:
    labels = svc.get("labels")
    if labels is None:
        return None, 0
    if isinstance(labels.value, list):
        pairs = {str(i.value).split("=", 1)[0]: (str(i.value).split("=", 1)[-1], i.line) for i in labels.value}
    elif isinstance(labels.value, dict):
        pairs = {k: (str(v.value), v.line) for k, v in labels.value.items()}
    else:
        return None, 0
    if GPU_ANNOTATION not in pairs:
        return None, 0
    value, line = pairs[GPU_ANNOTATION]
    try:
        return find_gpu(value), line
    except InputError as exc:
        raise InputError(f"{shown}:{line}: {GPU_ANNOTATION}: {str(exc).split(' (known:')[0]}") from None


def _compose_gpu_count(svc: Y) -> int | None:
    devices = _dig(svc, ("deploy", "resources", "reservations", "devices"))
    total = None
    for d in _items(devices):
        caps = str(d.plain().get("capabilities", ""))
        if "gpu" not in caps and str(d.plain().get("driver", "")) != "nvidia":
            continue
        count, ids = d.get("count"), d.get("device_ids")
        if ids is not None and isinstance(ids.value, list):
            total = (total or 0) + len(ids.value)
        elif count is not None and isinstance(count.value, int) and not isinstance(count.value, bool):
            total = (total or 0) + count.value
        else:  # count: all, or nothing said: the host decides
            return None
    return total


def _compose_expand(shown: str, line: int, text) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(2) is not None:  # ${VAR:-default} / ${VAR-default}
            return m.group(2)
        raise InputError(f"{shown}:{line}: cannot resolve {m.group(0)} without the environment: write the value")

    return expand(_COMPOSE_VAR, sub, str(text), f"{shown}:{line}")


# --- shared ---------------------------------------------------------------------------------

def _settings(shown: str, line: int, args: list[str]) -> Settings:
    try:
        return settings_from_argv(args)
    except InputError as exc:
        raise InputError(f"{shown}:{line}: {exc}") from None


class _Argv(list):
    """A command's words, refused as soon as they outgrow one command line (an alias can repeat a long one)."""

    chars = 0

    def add(self, word: str, where: str) -> None:
        self.chars += len(word) + 1
        if self.chars > MAX_COMMAND_CHARS:
            raise InputError(f"{where}: the command's words come to over kvplan's {MAX_COMMAND_CHARS:,}-character "
                             "limit for a command line")
        self.append(word)


def _dig(y: Y | None, path: tuple[str, ...]) -> Y | None:
    for key in path:
        if y is None:
            return None
        y = y.get(key)
    return y


def _items(y: Y | None) -> list[Y]:
    return [i for i in y.value if isinstance(i.value, dict)] if y is not None and isinstance(y.value, list) else []


def _strings(shown: str, y: Y, key: str) -> list[Y]:
    items = y.value if isinstance(y.value, list) else [y]
    for item in items:
        if isinstance(item.value, (dict, list)) or item.value is None:
            raise InputError(f"{shown}:{item.line}: {key}: expected strings")
    return items
