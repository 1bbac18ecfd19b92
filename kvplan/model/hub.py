"""Size a Hugging Face Hub model without downloading its weights, then remember it offline.

Only reached when online access is allowed (`--online`, `online: true` in the user config; never
with HF_HUB_OFFLINE=1). Requests, all through huggingface_hub's session, token and endpoint:

    GET /api/models/{repo}/revision/{rev}?blobs=true   commit sha and file list (HfApi.model_info)
    GET /{repo}/resolve/{sha}/config.json              (and model.safetensors.index.json)
    GET /{repo}/resolve/{sha}/{shard}                  Range: bytes=0-7, then the header's bytes

Nothing is written until every request has succeeded. Then, in the HF cache layout (what
hf_hub_download would leave, so transformers and `hf cache` see it too), each file atomically:

    models--{org}--{name}/blobs/{etag}                         config.json, index
    models--{org}--{name}/kvplan/{sha}.json                    our sidecar: the shard headers
    models--{org}--{name}/snapshots/{sha}/{file} -> ../../blobs/{etag}
    models--{org}--{name}/refs/{revision}                      last: marks the snapshot complete

A safetensors header is not a whole file, so it cannot live in snapshots/; the sidecar keeps the
headers verbatim (format SIDECAR_FORMAT, documented in docs/online.md).
"""

import importlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_bytes_atomic
from ..errors import InputError, KvplanError
from .safetensors import CheckpointBytes, data_bytes, header_length, parse_header, summarize_headers, tensor_sizes

SIDECAR_FORMAT = "kvplan-safetensors-headers/1"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_TIMEOUT_S = 10.0  # huggingface_hub's own default; HF_HUB_DOWNLOAD_TIMEOUT overrides it
_PARALLEL_SHARDS = 8
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubError(KvplanError):
    """The Hub did not give us what sizing needs: network, auth, missing repo or file, rate limit."""


@dataclass(frozen=True)
class HubSnapshot:
    repo_id: str
    revision: str
    commit: str
    path: Path  # snapshots/{commit} in the HF cache


def is_repo_id(ref: str) -> bool:
    return bool(_REPO_ID.match(ref)) and not ref.endswith((".json", ".yaml", ".yml"))


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
    from ..userconfig import setting

    return setting("online", False)


def is_commit(revision: str) -> bool:
    return bool(_COMMIT.match(revision))


def check_revision(revision: str) -> str:
    """A branch, tag or commit; it names a file under refs/, so it may not climb out of it."""
    parts = revision.split("/")
    if not revision or revision.startswith("/") or "\\" in revision or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"--revision {revision!r} is not a branch, tag or commit name")
    return revision


# --- reading what an earlier fetch left in the cache --------------------------------------------

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
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        ok = data.get("format") == SIDECAR_FORMAT and isinstance(files, dict) and all(
            isinstance(f, dict) and isinstance(f.get("header"), dict) for f in files.values())
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise InputError(f"{path}: not a readable {SIDECAR_FORMAT} file (delete it to fetch again with --online)")
    if not files:
        return None
    return summarize_headers(((name, f["header"]) for name, f in sorted(files.items())),
                             source=f"safetensors headers via hub@{snapshot_dir.name[:12]}",
                             tied_embeddings=tied_embeddings)


# --- fetching ------------------------------------------------------------------------------------

def fetch_snapshot(repo_id: str, revision: str | None, cache_dir: Path) -> HubSnapshot:
    """Fetch config, index and shard headers of `repo_id`@`revision`, then commit them to the cache."""
    revision = revision or "main"
    client = _Client(repo_id, revision)
    commit, siblings = client.model_info()
    if "config.json" not in siblings:
        if "params.json" in siblings:
            raise HubError(f"hub: {repo_id}@{revision} has params.json but no config.json; kvplan reads HF "
                           "config.json only (use the repo's transformers-format variant)")
        raise HubError(f"hub: {repo_id}@{revision} has no config.json (not a transformers-format model repo)")
    files = {"config.json": client.get_json("config.json", commit, siblings["config.json"])}
    if INDEX_FILE in siblings:
        files[INDEX_FILE] = client.get_json(INDEX_FILE, commit, siblings[INDEX_FILE])
        shards = _index_shards(json.loads(files[INDEX_FILE][1]), repo_id)
    else:
        shards = sorted(n for n in siblings if n.endswith(".safetensors") and "/" not in n
                        and not n.startswith("consolidated"))
    missing = [s for s in shards if s not in siblings]
    if missing:
        raise HubError(f"hub: {repo_id}@{revision}: {INDEX_FILE} lists {missing[0]}, which the repo does not have")
    headers = client.read_headers(commit, shards, siblings)
    path = _commit_to_cache(cache_dir, repo_id, revision, commit, files, headers, client.endpoint)
    return HubSnapshot(repo_id, revision, commit, path)


def _index_shards(index: dict, repo_id: str) -> list[str]:
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise HubError(f"hub: {repo_id}: {INDEX_FILE} has no weight_map")
    return sorted({str(v) for v in weight_map.values()})


class _Client:
    """The few Hub requests sizing needs, each turning every failure into one HubError line."""

    def __init__(self, repo_id: str, revision: str):
        try:
            from huggingface_hub.utils import build_hf_headers
        except ImportError:
            raise HubError("hub access needs huggingface_hub: pip install 'kvplan[hub]'") from None
        from .. import __version__

        self.repo_id, self.revision = repo_id, revision
        self.endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.timeout_s = _timeout_s()
        self.headers = build_hf_headers(library_name="kvplan", library_version=__version__)
        self.headers["Accept-Encoding"] = "identity"  # byte ranges must address the stored file

    def model_info(self) -> tuple[str, dict[str, dict]]:
        """The commit `revision` points to and the repo's files (name -> size, blob id)."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        api = HfApi(endpoint=self.endpoint, library_name="kvplan")
        try:
            with self._transport_errors("the repo listing"):
                info = api.model_info(self.repo_id, revision=self.revision, files_metadata=True,
                                      timeout=self.timeout_s)
        except HfHubHTTPError as exc:
            raise self._status_error(exc.response, "the repo listing") from None
        if not info.sha or not is_commit(info.sha):
            raise HubError(f"hub: {self.endpoint} returned no commit sha for {self.repo_id}@{self.revision}")
        siblings = {s.rfilename: {"size": s.size, "blob_id": s.blob_id} for s in info.siblings or ()}
        return info.sha, siblings

    def get_json(self, name: str, commit: str, sibling: dict) -> tuple[str, bytes]:
        """(etag, bytes) of a small JSON file, checked to parse as an object before anything is cached."""
        body, headers, _ = self._get(name, commit)
        try:
            ok = isinstance(json.loads(body), dict)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise HubError(f"hub: {self.repo_id}@{commit[:12]}/{name} is not a JSON object")
        etag = headers.get("x-linked-etag") or headers.get("etag") or sibling.get("blob_id") or _git_blob_sha(body)
        return _normalize_etag(etag), body

    def read_headers(self, commit: str, shards: list[str], siblings: dict) -> dict[str, dict]:
        from concurrent.futures import ThreadPoolExecutor  # here and below: only the fetch path pays for it

        if not shards:
            return {}
        with ThreadPoolExecutor(max_workers=min(_PARALLEL_SHARDS, len(shards))) as pool:
            futures = [pool.submit(self._read_header, commit, s, siblings[s].get("size")) for s in shards]
            try:
                return {s: f.result() for s, f in zip(shards, futures)}
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _read_header(self, commit: str, shard: str, listed_size: int | None) -> dict:
        where = f"hub:{self.repo_id}@{commit[:12]}/{shard}"
        prefix, _, total = self._get(shard, commit, first=0, last=7)
        length = header_length(prefix, where)
        raw, _, _ = self._get(shard, commit, first=8, last=8 + length - 1)
        header = parse_header(raw, length, where)
        tensor_sizes(header, where)  # malformed entries fail here, before anything is cached
        file_bytes = total if total is not None else listed_size
        described = 8 + length + data_bytes(header)
        if file_bytes is not None and file_bytes != described:
            raise HubError(f"{where}: header describes {described:,} bytes but the file has {file_bytes:,}")
        return {"size_bytes": file_bytes, "header": header}

    def _get(self, name: str, commit: str, first: int | None = None,
             last: int | None = None) -> tuple[bytes, dict, int | None]:
        """GET one file, or bytes first..last of it. Returns (body, headers, whole-file size if known).

        Streams, so a server that ignores Range costs only the bytes we read before closing.
        """
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import get_session

        url = hf_hub_url(self.repo_id, name, revision=commit, endpoint=self.endpoint)
        headers = dict(self.headers)
        if first is not None:
            headers["Range"] = f"bytes={first}-{last}"
        what = name if first is None else f"the header of {name}"
        with self._transport_errors(what):
            with get_session().stream("GET", url, headers=headers, timeout=self.timeout_s,
                                      follow_redirects=True) as response:
                if response.status_code >= 400:
                    raise self._status_error(response, what)
                # 200 to a range request: the server sent the whole file from byte 0.
                skip = first if first is not None and response.status_code == 200 else 0
                stop = None if first is None else skip + last - first + 1
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if stop is not None and len(body) >= stop:
                        break
                total = _range_total(response.headers.get("content-range"))
                if total is None and response.status_code == 200 and first is not None:
                    total = _int_or_none(response.headers.get("content-length"))
                return bytes(body[skip:stop]), response.headers, total

    @contextmanager
    def _transport_errors(self, what: str):
        """Timeouts, refused or dropped connections and offline mode -> one HubError line."""
        from huggingface_hub.errors import OfflineModeIsEnabled
        from huggingface_hub.utils import get_session

        # The session's HTTP library (httpx in huggingface_hub 1.x, httpx2 in 2.x) defines the exceptions.
        http = importlib.import_module(type(get_session()).__module__.split(".")[0])
        try:
            yield
        except http.TimeoutException:
            raise HubError(f"hub: timed out after {self.timeout_s:g} s fetching {what} of {self.repo_id} from "
                           f"{self.endpoint} (HF_HUB_DOWNLOAD_TIMEOUT sets the limit)") from None
        except OfflineModeIsEnabled:
            raise HubError("hub: huggingface_hub is in offline mode (HF_HUB_OFFLINE); unset it to fetch") from None
        except http.TransportError as exc:
            detail = str(exc).splitlines()[0] if str(exc) else "no detail"
            raise HubError(f"hub: connection to {self.endpoint} failed fetching {what} of {self.repo_id}: "
                           f"{type(exc).__name__}: {detail}") from None

    def _status_error(self, response, what: str) -> HubError:
        code = response.status_code
        error = response.headers.get("x-error-code", "")
        repo, rev, site = self.repo_id, self.revision, f"{self.endpoint}/{self.repo_id}"
        has_token = "authorization" in self.headers
        login = "set HF_TOKEN or run `hf auth login`"
        if error == "GatedRepo":
            who = "the account of your token" if has_token else f"an account, then {login}"
            return HubError(f"hub: {repo} is gated ({code}): accept its terms at {site} with {who}")
        if error == "RevisionNotFound":
            return HubError(f"hub: {repo} has no revision {rev!r} (404)")
        if error == "EntryNotFound":
            return HubError(f"hub: {repo}@{rev}: {what} not found (404)")
        if error == "RepoNotFound" or code == 404:
            hint = "or your token cannot read it" if has_token else f"or it is private: {login}"
            return HubError(f"hub: {repo} not found at {self.endpoint} ({code}), {hint}")
        if code == 401:
            return HubError(f"hub: {repo}: 401 Unauthorized fetching {what} ({'token rejected' if has_token else login})")
        if code == 403:
            return HubError(f"hub: {repo}: 403 Forbidden fetching {what}; your token lacks read access to it")
        if code == 429:
            wait = _retry_after_s(response.headers)
            after = f"retry after {wait} s" if wait is not None else "retry later"
            return HubError(f"hub: rate limited (429) fetching {what} of {repo}; {after}"
                            + ("" if has_token else f", or {login} for a higher limit"))
        if code >= 500:
            return HubError(f"hub: {self.endpoint} failed with {code} fetching {what} of {repo}; try again later")
        return HubError(f"hub: HTTP {code} fetching {what} of {repo}")


def _timeout_s() -> float:
    text = os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InputError(f"HF_HUB_DOWNLOAD_TIMEOUT={text!r} must be a positive number of seconds")
    return value


def _retry_after_s(headers) -> int | None:
    """Seconds to wait, from `Retry-After: 7` or the Hub's `RateLimit: "api";r=0;t=7`."""
    value = (headers.get("retry-after") or "").strip()
    if value.isdigit():
        return int(value)
    match = re.search(r";\s*t=(\d+)", headers.get("ratelimit") or "")
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    """The whole-file size from `Content-Range: bytes 0-7/12345`."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _normalize_etag(etag: str) -> str:
    return etag.removeprefix("W/").strip('"')


def _git_blob_sha(body: bytes) -> str:
    """The id git (and so the Hub's ETag) gives a small file."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


# --- committing to the cache -----------------------------------------------------------------------

def _commit_to_cache(cache_dir: Path, repo_id: str, revision: str, commit: str, files: dict[str, tuple[str, bytes]],
                     headers: dict[str, dict], endpoint: str) -> Path:
    """Write in an order where an interruption leaves nothing a later run would mistake for complete.

    The loader needs snapshots/{sha}/config.json; it is linked only after its blob and the sidecar
    exist, and refs/{revision} comes last.
    """
    from datetime import datetime, timezone

    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    try:
        for etag, body in files.values():
            blob = repo_dir / "blobs" / etag
            if not blob.is_file():
                write_bytes_atomic(blob, body)
        sidecar = {"format": SIDECAR_FORMAT, "repo_id": repo_id, "revision": revision, "commit": commit,
                   "endpoint": endpoint, "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "files": headers}
        write_bytes_atomic(repo_dir / "kvplan" / f"{commit}.json", json.dumps(sidecar, separators=(",", ":")).encode())
        for name in sorted(files, key=lambda n: n == "config.json"):  # config.json last
            _atomic_link(snapshot / name, repo_dir / "blobs" / files[name][0])
        if revision != commit:
            write_bytes_atomic(repo_dir / "refs" / revision, commit.encode())
    except OSError as exc:
        raise HubError(f"hub: cannot write the HF cache at {cache_dir} ({exc.strerror or exc})") from None
    except InputError as exc:
        raise HubError(f"hub: cannot write the HF cache at {cache_dir}: {exc}") from None
    return snapshot


def _atomic_link(path: Path, blob: Path) -> None:
    """A relative symlink to the blob, as huggingface_hub makes; a copy where symlinks are not allowed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(os.path.relpath(blob, path.parent), tmp)
    except OSError:
        import shutil

        shutil.copyfile(blob, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
