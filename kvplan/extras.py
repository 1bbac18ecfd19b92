"""Optional dependencies: check that an extra is installed before any work, and name the install line."""

import importlib.util
import sys

from .errors import InputError


def require_extra(extra: str, *modules: str, what: str, or_else: str | None = None) -> None:
    """InputError (exit 2) with `pip install 'kvplan[extra]'` unless every top-level module can be imported;
    `or_else` names a way to do without it.

    Looks the modules up without importing them, so a check costs nothing when they are there.
    """
    missing = [m for m in modules if not _installed(m)]
    if missing:
        instead = f" (or {or_else})" if or_else else ""
        raise InputError(f"{what} needs {' and '.join(missing)}, which kvplan's {extra!r} extra installs: "
                         f"{install_line(extra)}{instead}")


def install_line(extra: str) -> str:
    """The command that installs an extra, quoted for every shell (zsh globs an unquoted `[...]`)."""
    return f"pip install 'kvplan[{extra}]'"


def _installed(module: str) -> bool:
    if module in sys.modules:  # imported already (None: blocked); find_spec would want its __spec__
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None
