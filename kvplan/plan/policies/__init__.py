"""Engine budget policies: how each serving engine turns GPU memory into a KV pool."""

import functools

from ...errors import InputError
from .base import EnginePolicy, EngineReport, Pool
from .generic import GenericPolicy

_POLICIES: dict[str, type[EnginePolicy]] = {"generic": GenericPolicy}


def register(cls: type[EnginePolicy]) -> type[EnginePolicy]:
    _POLICIES[cls.name] = cls
    return cls


def get_policy(name: str) -> EnginePolicy:
    """`name` or `name@version` (e.g. `vllm@0.8.5`): the version picks the semantics the policy models."""
    _load_builtin()
    key, _, version = (name or "generic").strip().lower().partition("@")
    if key not in _POLICIES:
        raise InputError(f"unknown --engine {name!r}; choose one of {', '.join(sorted(_POLICIES))}")
    return _POLICIES[key](version.strip() or None)


def engine_names() -> list[str]:
    _load_builtin()
    return sorted(_POLICIES)


@functools.cache  # once: listing the package on every get_policy costs more than the lookup
def _load_builtin() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "generic"):
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["EnginePolicy", "EngineReport", "Pool", "get_policy", "engine_names", "register"]
