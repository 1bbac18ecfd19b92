"""The HF cache on disk, in huggingface_hub's layout, and kvplan's sidecar beside it.

    models--{org}--{name}/blobs/{digest}                       config.json, index (digest: names.blob_name)
    models--{org}--{name}/kvplan/{commit}.json                 our sidecar: the shard headers
    models--{org}--{name}/snapshots/{commit}/{file} -> ../../blobs/{digest}
    models--{org}--{name}/refs/{revision}                      holds {commit}; written last

Every path is built from validated names (names.py) and, resolved, must stay under the cache root:
a symlink planted in the cache cannot send a write elsewhere. What is read back (refs, sidecars)
goes through kvplan.inputs' bounds, and a ref must hold a 40-hex commit.
"""

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from ...atomic import symlink_atomic, write_bytes_atomic
from ...errors import HubError, InputError
from ...inputs import HEADERS_SIDECAR, HF_CACHE_REF, printable, read_json, read_text
from ..safetensors import CheckpointBytes, summarize_headers
from .names import blob_name, check_revision, is_commit, valid_repo_id

SIDECAR_FORMAT = "kvplan-safetensors-headers/1"
INDEX_FILE = "model.safetensors.index.json"
_SNAPSHOT_FILES = ("config.json", INDEX_FILE)  # whole files kvplan caches; headers go to the sidecar


def cache_dir() -> Path:
    """huggingface_hub's cache root: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def _repo_dir(root: Path, repo_id: str) -> Path:
    return root / ("models--" + repo_id.replace("/", "--"))


def _inside(root: Path, path: Path) -> Path:
    """`path`, if it resolves (symlinks followed) under `root`; else the write is refused."""
    try:
        real_root, real = root.resolve(), path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise HubError(f"hub: refusing to write {printable(path)}: it does not resolve ({exc})") from None
    if real != real_root and real_root not in real.parents:
        raise HubError(f"hub: refusing to write {printable(path)}: it resolves to {printable(real)}, outside the HF "
                       f"cache at {printable(root)}")
    return path


# --- reading what an earlier fetch (or huggingface_hub) left ----------------------------------------

def cached_snapshot(model_id: str, revision: str | None = None) -> Path | None:
    """`org/name` -> the snapshot directory for `revision` (a commit, or a ref; default main).

    Without an explicit revision or any refs, falls back to the newest snapshot that has a config.json.
    """
    if not valid_repo_id(model_id):
        return None
    repo = _repo_dir(cache_dir(), model_id)
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    if revision and is_commit(revision) and (snapshots / revision / "config.json").is_file():
        return snapshots / revision
    ref = repo / "refs" / (revision or "main")
    if ref.is_file():
        commit = read_text(ref, HF_CACHE_REF).strip()
        if not is_commit(commit):
            raise InputError(f"{printable(ref)}: an HF cache ref must hold a 40-hex commit, not {commit[:60]!r}; delete it")
        candidate = snapshots / commit
        if (candidate / "config.json").is_file():
            return candidate
    if revision or (ref.parent.is_dir() and any(ref.parent.iterdir())):
        return None  # the refs say what each name points to; do not guess past them
    with_config = sorted((p for p in snapshots.iterdir() if (p / "config.json").is_file()),
                         key=lambda p: p.stat().st_mtime)
    return with_config[-1] if with_config else None


def sidecar_path(snapshot_dir: Path) -> Path | None:
    if snapshot_dir.parent.name != "snapshots":
        return None
    return snapshot_dir.parent.parent / "kvplan" / f"{snapshot_dir.name}.json"


def has_sidecar(snapshot_dir: Path) -> bool:
    path = sidecar_path(snapshot_dir)
    return path is not None and path.is_file()


def cached_checkpoint(snapshot_dir: Path, tied_embeddings: bool = False) -> CheckpointBytes | None:
    """Weight bytes from the headers an earlier fetch stored for this snapshot; None without any."""
    path = sidecar_path(snapshot_dir)
    if path is None or not path.is_file():
        return None
    unreadable = InputError(f"{printable(path)}: not a readable {SIDECAR_FORMAT} file (delete it to fetch again with --online)")
    try:
        data = read_json(path, HEADERS_SIDECAR)
    except InputError as exc:
        raise InputError(f"{exc} (delete it to fetch again with --online)") from None
    if not isinstance(data, dict):
        raise unreadable
    files = data.get("files")
    if data.get("format") != SIDECAR_FORMAT or not isinstance(files, dict) or not all(
            isinstance(f, dict) and isinstance(f.get("header"), dict) for f in files.values()):
        raise unreadable
    if not files:
        return None
    return summarize_headers(((name, f["header"]) for name, f in sorted(files.items())),
                             source=f"safetensors headers via hub@{snapshot_dir.name[:12]}",
                             tied_embeddings=tied_embeddings)


# --- committing a fetch ----------------------------------------------------------------------------

def commit_snapshot(root: Path, repo_id: str, revision: str, commit: str, files: dict[str, tuple[str | None, bytes]],
                    headers: dict[str, dict], endpoint: str) -> Path:
    """Write in an order where an interruption leaves nothing a later run would mistake for complete.

    `files` maps a file name to (the server's ETag, its bytes). The loader needs
    snapshots/{commit}/config.json; it is linked only after its blob and the sidecar exist, and
    refs/{revision} comes last.
    """
    if not (valid_repo_id(repo_id) and is_commit(commit) and all(n in _SNAPSHOT_FILES for n in files)):
        raise HubError(f"hub: refusing to cache {repo_id}@{commit}: an invalid repo id, commit or file name")
    check_revision(revision)
    repo_dir = _repo_dir(root, repo_id)
    snapshot = repo_dir / "snapshots" / commit
    try:
        blobs = {}
        for name, (etag, body) in files.items():
            blobs[name] = _inside(root, repo_dir / "blobs" / blob_name(body, etag))
            if not blobs[name].is_file():
                write_bytes_atomic(blobs[name], body)
        sidecar = {"format": SIDECAR_FORMAT, "repo_id": repo_id, "revision": revision, "commit": commit,
                   "endpoint": endpoint, "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "files": headers}
        write_bytes_atomic(_inside(root, repo_dir / "kvplan" / f"{commit}.json"),
                           json.dumps(sidecar, separators=(",", ":")).encode())
        for name in sorted(files, key=lambda n: n == "config.json"):  # config.json last
            link = snapshot / name
            _inside(root, link.parent)  # the link itself is replaced, never followed
            symlink_atomic(link, blobs[name])
        if revision != commit:
            write_bytes_atomic(_inside(root, repo_dir / "refs" / revision), commit.encode())
    except OSError as exc:
        raise HubError(f"hub: cannot write the HF cache at {printable(root)} ({exc.strerror or exc})") from None
    except HubError:
        raise
    except InputError as exc:
        raise HubError(f"hub: cannot write the HF cache at {printable(root)}: {exc}") from None
    return snapshot
