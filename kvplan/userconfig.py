"""The user's settings file: `$KVPLAN_CONFIG`, else `$XDG_CONFIG_HOME/kvplan/config.yaml`
(default `~/.config/kvplan/config.yaml`).

Read only when a setting is needed, so a broken file never gets in the way of commands that
do not consult it. Known settings (docs/online.md):

    online: true     # allow fetching configs and safetensors headers from the Hugging Face Hub
"""

import os
from pathlib import Path

from .errors import InputError
from .inputs import USER_CONFIG_YAML
from .yamlnodes import load_yaml

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
    if not path.exists():
        if os.environ.get("KVPLAN_CONFIG"):
            raise InputError(f"KVPLAN_CONFIG={path}: no such file")
        return {}
    docs = load_yaml(path, USER_CONFIG_YAML)
    if len(docs) > 1:
        raise InputError(f"{path}: expected one YAML document of settings, got {len(docs)}")
    data = docs[0] if docs else None
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
