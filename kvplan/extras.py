"""Optional dependencies: check that an extra is installed before any work, and name the install line."""

import importlib.util

from .errors import InputError


def require_extra(extra: str, *modules: str, what: str) -> None:
    """InputError (exit 2) with `pip install 'kvplan[extra]'` unless every top-level module can be imported.

    Looks the modules up without importing them, so a check costs nothing when they are there.
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"{what} needs {' and '.join(missing)}, which kvplan's {extra!r} extra installs: "
                         f"pip install 'kvplan[{extra}]'")
