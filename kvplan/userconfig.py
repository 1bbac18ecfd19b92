"""The user's settings file: `$KVPLAN_CONFIG`, else `$XDG_CONFIG_HOME/kvplan/config.yaml`
(default `~/.config/kvplan/config.yaml`).

Read only when a setting is needed, so a broken file never gets in the way of commands that
do not consult it. Known settings (docs/online.md):

    online: true     # allow fetching configs and safetensors headers from the Hugging Face Hub
"""

import os
from pathlib import Path

import yaml

from .errors import InputError

_SETTINGS = {"online": bool}


def config_path() -> Path:
    explicit = os.environ.get("KVPLAN_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kvplan" / "config.yaml"


def load_user_config() -> dict:
    """The settings as a dict; {} when the default file does not exist."""
    path = config_path()
    if not path.is_file():
        if os.environ.get("KVPLAN_CONFIG"):
            raise InputError(f"KVPLAN_CONFIG={path}: no such file")
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}: malformed YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    for key, value in data.items():
        kind = _SETTINGS.get(key)
        if kind is None:
            raise InputError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(_SETTINGS))})")
        if not isinstance(value, kind):
            raise InputError(f"{path}: {key} must be {kind.__name__}, got {value!r}")
    return data


def setting(name: str, default):
    return load_user_config().get(name, default)
