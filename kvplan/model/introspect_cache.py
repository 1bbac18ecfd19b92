"""The user cache of introspection records: one JSON file per config digest.

`$KVPLAN_CACHE_DIR` when set, else `$XDG_CACHE_HOME/kvplan`, else `~/.cache/kvplan`; records live
under `introspect/<sha256>.json`. The digest covers the config exactly as given (canonical JSON)
and the record format, so any changed field is a new entry. Files are written atomically; a file
that does not parse or does not look like a record is ignored and rewritten, never trusted.
Reading a record needs neither torch nor transformers.
"""

import hashlib
import json
import os
from pathlib import Path

from ..atomic import write_text_atomic
from ..errors import InputError
from ..inputs import INTROSPECTION_RECORD, read_json
from .introspect import RECORD_FORMAT


def cache_dir() -> Path:
    explicit = os.environ.get("KVPLAN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kvplan"


def config_digest(config: dict) -> str:
    canonical = json.dumps({"format": RECORD_FORMAT, "config": config}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_path(digest: str) -> Path:
    return cache_dir() / "introspect" / f"{digest}.json"


def load_record(digest: str) -> dict | None:
    try:
        record = read_json(record_path(digest), INTROSPECTION_RECORD)
    except InputError:  # missing, too large, not a regular file or not JSON: introspect afresh
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not isinstance(record.get("layers"), list):
        return None
    return record


def store_record(digest: str, record: dict) -> None:
    """Best effort: a read-only or full cache directory costs the next run a fresh introspection."""
    try:
        write_text_atomic(record_path(digest), json.dumps(record, sort_keys=True))
    except OSError:
        pass
