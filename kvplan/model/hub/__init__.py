"""`--online`: size a Hugging Face Hub model without downloading its weights, then remember it offline.

Only reached when online access is allowed (`--online`, `online: true` in the user config; never
with HF_HUB_OFFLINE=1). One mechanism per module:

    policy.py   whether the Hub may be asked
    names.py    what repo ids, revisions, commits, file names and blob names may be
    client.py   bounded HTTP: a byte cap and a deadline on every request, one HubError per failure
    fetch.py    which requests sizing needs (listing, config, index, safetensors headers by range)
    cache.py    the HF cache layout on disk, every path confined under the cache root; our sidecar

The cache layout is what hf_hub_download would leave, so transformers and `hf cache` see it too.
A safetensors header is not a whole file, so it cannot live in snapshots/; the sidecar keeps the
headers verbatim (format SIDECAR_FORMAT, documented in docs/online.md).
"""

from ...errors import HubError
from .cache import SIDECAR_FORMAT, cache_dir, cached_checkpoint, cached_snapshot, has_sidecar, sidecar_path
from .names import check_revision, is_commit
from .policy import is_repo_id, offline_forced, online_enabled

__all__ = ["HubError", "SIDECAR_FORMAT", "cache_dir", "cached_checkpoint", "cached_snapshot", "check_revision",
           "fetch_snapshot", "has_sidecar", "is_commit", "is_repo_id", "offline_forced", "online_enabled", "sidecar_path"]


def fetch_snapshot(repo_id: str, revision: str | None, cache_root):
    """fetch.fetch_snapshot, imported on first use: offline runs never load the HTTP side."""
    from .fetch import fetch_snapshot as fetch

    return fetch(repo_id, revision, cache_root)
