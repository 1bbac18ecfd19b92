"""The `vllm serve` services of a docker-compose file.

`${VAR:-default}` resolves to its default; any other variable is an error naming the line (the
environment compose would read is not consulted). The GPU type comes from a label `kvplan.dev/gpu`;
the GPU count from the service's device reservations.
"""

import re
import shlex

from ..errors import InputError
from ..hardware import GPU
from ..inputs import check_command, expand
from ..yamlnodes import Y
from .launch import (GPU_ANNOTATION, CommandWords, Launch, annotated_gpu, dig, launch_settings, mappings,
                     server_args, strings)

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?::?-([^}]*))?\}|\$([A-Za-z_]\w*)")


def compose_launches(shown: str, services: Y) -> list[Launch]:
    """Every service under `services:` that runs `vllm serve`."""
    if not isinstance(services.value, dict):
        raise InputError(f"{shown}:{services.line}: services: expected a mapping")
    launches = []
    for name, svc in services.value.items():
        if not isinstance(svc.value, dict):
            continue
        words, line = CommandWords(), svc.line
        for key in ("entrypoint", "command"):
            y = svc.get(key)
            if y is None:
                continue
            if isinstance(y.value, str):
                try:
                    for word in shlex.split(check_command(y.value, f"{shown}:{y.line}")):
                        words.add(_expand(shown, y.line, word), f"{shown}:{y.line}")
                except ValueError as exc:
                    raise InputError(f"{shown}:{y.line}: {key}: cannot split ({exc})") from None
            else:
                for v in strings(shown, y, key):
                    words.add(_expand(shown, y.line, v.value), f"{shown}:{v.line}")
            line = y.line
        args = server_args(words, {}, svc.get("image"), entrypoint=svc.get("entrypoint"))
        if args is None:
            continue
        gpu, gpu_line = _gpu(shown, svc)
        launches.append(Launch("service", name, line, launch_settings(shown, line, args), gpu, gpu_line,
                               _gpu_count(svc)))
    return launches


def _gpu(shown: str, svc: Y) -> tuple[GPU | None, int]:
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
    return annotated_gpu(shown, value, line), line


def _gpu_count(svc: Y) -> int | None:
    devices = dig(svc, ("deploy", "resources", "reservations", "devices"))
    total = None
    for d in mappings(devices):
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


def _expand(shown: str, line: int, text) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        if m.group(2) is not None:  # ${VAR:-default} / ${VAR-default}
            return m.group(2)
        raise InputError(f"{shown}:{line}: cannot resolve {m.group(0)} without the environment: write the value")

    return expand(_VAR, sub, str(text), f"{shown}:{line}")
