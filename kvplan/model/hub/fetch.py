"""Fetch what sizing a Hub model needs: its config, its index and each shard's safetensors header.

    GET /api/models/{repo}/revision/{rev}?blobs=true   commit sha and file list
    GET /{repo}/resolve/{sha}/config.json              (and model.safetensors.index.json)
    GET /{repo}/resolve/{sha}/{shard}                  Range: the first HEADER_FIRST_BYTES, holding the
                                                       8-byte length and most headers; the rest if not

Nothing is written until every request has succeeded and every answer has been checked; then
cache.commit_snapshot writes it all. Weights are never downloaded.
"""

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from ...errors import HubError
from ...inputs import CONFIG_JSON, KiB, MiB, SAFETENSORS_INDEX, parse_json
from ..safetensors import data_bytes, header_length, parse_header, tensor_sizes
from .cache import INDEX_FILE, commit_snapshot
from .client import Abandoned, HubClient
from .names import check_revision, valid_repo_file, valid_repo_id

PARALLEL_SHARDS = 8
HEADERS_MAX_BYTES = 48 * MiB  # all headers of one fetch (they go into one sidecar); real ones: under 20 MiB
# Shard files whose headers one fetch reads: the most-sharded published checkpoints have ~200
# (Llama-3.1-405B 191, DeepSeek-V3 163). Each costs a range request and its redirect; a hostile
# listing of 3,000 took 25.8 s on the loaded 2-core machine, past the 20 s any input may cost.
MAX_SHARDS = 1024
# One range request reads the 8-byte length and a header of up to this less 8 (a 500-tensor MoE
# shard's is ~70 KB); a longer header takes a second request for the rest. Like huggingface_hub's
# get_safetensors_metadata: half the round trips of asking for the length first, ~64 KiB read per shard.
HEADER_FIRST_BYTES = 64 * KiB


@dataclass(frozen=True)
class HubSnapshot:
    repo_id: str
    revision: str
    commit: str
    path: Path  # snapshots/{commit} in the HF cache


def fetch_snapshot(repo_id: str, revision: str | None, cache_root: Path) -> HubSnapshot:
    """Fetch config, index and shard headers of `repo_id`@`revision`, then commit them to the cache."""
    if not valid_repo_id(repo_id):
        raise HubError(f"hub: {repo_id!r} is not a Hugging Face repo id (org/name)")
    revision = check_revision(revision or "main")
    client = HubClient(repo_id, revision)
    try:
        commit, siblings = client.listing()
        if "config.json" not in siblings:
            if "params.json" in siblings:
                raise HubError(f"hub: {repo_id}@{revision} has params.json but no config.json; kvplan reads HF "
                               "config.json only (use the repo's transformers-format variant)")
            raise HubError(f"hub: {repo_id}@{revision} has no config.json (not a transformers-format model repo)")
        files = {"config.json": _json_file(client, "config.json", commit, CONFIG_JSON.max_bytes)[0]}
        if INDEX_FILE in siblings:
            files[INDEX_FILE], index = _json_file(client, INDEX_FILE, commit, SAFETENSORS_INDEX.max_bytes)
            shards = _index_shards(index, repo_id)
        else:
            shards = sorted(n for n in siblings if n.endswith(".safetensors") and "/" not in n
                            and not n.startswith("consolidated"))
        if len(shards) > MAX_SHARDS:
            raise HubError(f"hub: {repo_id}@{revision} has {len(shards):,} safetensors shards, over kvplan's limit of "
                           f"{MAX_SHARDS:,} (the most-sharded published checkpoints have ~200); size it from a "
                           "local directory instead")
        missing = [s for s in shards if s not in siblings]
        if missing:
            raise HubError(f"hub: {repo_id}@{revision}: {INDEX_FILE} lists {missing[0]}, which the repo does not have")
        headers = _read_headers(client, commit, shards, siblings)
    except BaseException:
        client.stopped.set()  # requests still running stop at their next read
        raise
    path = commit_snapshot(cache_root, repo_id, revision, commit, files, headers, client.endpoint)
    return HubSnapshot(repo_id, revision, commit, path)


def _json_file(client: HubClient, name: str, commit: str, max_bytes: int) -> tuple[tuple[str | None, bytes], dict]:
    """((ETag, bytes), parsed) of a small JSON file, checked to be an object before anything is cached."""
    body = client.file(name, commit, max_bytes)
    where = f"hub:{client.repo_id}@{commit[:12]}/{name}"
    value = parse_json(body.data, where)
    if not isinstance(value, dict):
        raise HubError(f"hub: {client.repo_id}@{commit[:12]}/{name} is not a JSON object")
    return (body.headers.get("x-linked-etag") or body.headers.get("etag"), body.data), value


def _index_shards(index: dict, repo_id: str) -> list[str]:
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise HubError(f"hub: {repo_id}: {INDEX_FILE} has no weight_map")
    shards = set()
    for shard in weight_map.values():  # hundreds of thousands of tensors name a few hundred files
        if not (isinstance(shard, str) and (shard in shards or valid_repo_file(shard))):
            shown = repr(shard)[:80] if isinstance(shard, str) else f"a {type(shard).__name__}"
            raise HubError(f"hub: {repo_id}: {INDEX_FILE} names shard {shown}, not a relative file name in the repo")
        shards.add(shard)
    return sorted(shards)


def _read_headers(client: HubClient, commit: str, shards: list[str], siblings: dict) -> dict[str, dict]:
    if not shards:
        return {}
    budget = _Budget(HEADERS_MAX_BYTES, client.repo_id)
    pool = ThreadPoolExecutor(max_workers=min(PARALLEL_SHARDS, len(shards)))
    futures = [pool.submit(_read_header, client, commit, s, siblings[s], budget) for s in shards]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception()]
        if failed:  # the first real failure, not a request abandoned because of it
            raise next((e for e in failed if not isinstance(e, Abandoned)), failed[0])
        return {s: f.result() for s, f in zip(shards, futures)}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _read_header(client: HubClient, commit: str, shard: str, listed_size: int | None, budget: "_Budget") -> dict:
    where = f"hub:{client.repo_id}@{commit[:12]}/{shard}"
    prefix = client.file_range(shard, commit, 0, HEADER_FIRST_BYTES - 1)
    length = header_length(prefix.data[:8], where)
    budget.take(length, where)
    raw = prefix.data[8:8 + length]
    if len(raw) < length:
        raw += client.file_range(shard, commit, 8 + len(raw), 8 + length - 1).data
    header = parse_header(raw, length, where)
    tensor_sizes(header, where)  # malformed entries fail here, before anything is cached
    file_bytes = prefix.total_bytes if prefix.total_bytes is not None else listed_size
    described = 8 + length + data_bytes(header, where)
    if file_bytes is not None and file_bytes != described:
        raise HubError(f"{where}: header describes {described:,} bytes but the file has {file_bytes:,}")
    return {"size_bytes": file_bytes, "header": header}


class _Budget:
    """Header bytes left for this fetch, shared by the threads reading shards."""

    def __init__(self, max_bytes: int, repo_id: str):
        self.left, self.max_bytes, self.repo_id = max_bytes, max_bytes, repo_id
        self.lock = threading.Lock()

    def take(self, length: int, where: str) -> None:
        with self.lock:
            if length > self.left:
                raise HubError(f"{where}: the safetensors headers of {self.repo_id} come to over kvplan's "
                               f"{self.max_bytes // MiB} MiB limit for one fetch")
            self.left -= length
