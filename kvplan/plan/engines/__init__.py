"""Engine budget policies: how each serving engine turns GPU memory into a KV pool."""

from ...errors import InputError
from .base import EnginePolicy, Pool
from .generic import GenericPolicy

_POLICIES: dict[str, type[EnginePolicy]] = {"generic": GenericPolicy}


def register(cls: type[EnginePolicy]) -> type[EnginePolicy]:
    _POLICIES[cls.name] = cls
    return cls


def get_policy(name: str) -> EnginePolicy:
    _load_builtin()
    key = (name or "generic").strip().lower()
    if key not in _POLICIES:
        raise InputError(f"unknown --engine {name!r}; choose one of {', '.join(sorted(_POLICIES))}")
    return _POLICIES[key]()


def engine_names() -> list[str]:
    _load_builtin()
    return sorted(_POLICIES)


def _load_builtin() -> None:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "generic"):
            importlib.import_module(f"{__name__}.{info.name}")


__all__ = ["EnginePolicy", "Pool", "get_policy", "engine_names", "register"]
