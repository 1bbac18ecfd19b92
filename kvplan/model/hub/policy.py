"""When kvplan may ask the Hub: HF_HUB_OFFLINE first, then --online/--offline, then the user config."""

import os

from .names import valid_repo_id

_TRUE = {"1", "ON", "YES", "TRUE"}


def is_repo_id(ref: str) -> bool:
    """A name the Hub could have (`org/name`), and not a file name the user meant as a path."""
    return valid_repo_id(ref) and not ref.endswith((".json", ".yaml", ".yml"))


def offline_forced() -> str | None:
    """The environment variable that forbids the Hub, if one is set (huggingface_hub's rule)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in _TRUE:
            return name
    return None


def online_enabled(flag: bool | None) -> bool:
    """HF_HUB_OFFLINE wins, then --online/--offline, then `online:` in the user config."""
    if offline_forced():
        return False
    if flag is not None:
        return flag
    from ...userconfig import setting

    return setting("online", False)
