"""A loopback stand-in for the Hugging Face Hub endpoints kvplan uses, plus fixtures (tests only).

Endpoints, shaped like the Hub's (checked against the real huggingface_hub client in test_hub.py):

  GET  /api/models/{org}/{name}/revision/{rev}[?blobs=true]   {id, sha, private, gated, siblings}
  HEAD/GET /{org}/{name}/resolve/{rev}/{file}                 small files inline (ETag: git blob sha1);
        *.safetensors answer 302 -> {cdn_url}/cdn/{sha256} with X-Linked-Etag / X-Linked-Size, like LFS/Xet
  GET  /cdn/{sha256}   on a second port (another origin, as the Hub's CDN is): the bytes; one
                       `Range: bytes=a-b` -> 206. Clients drop the Authorization header on the way.

Errors carry the Hub's X-Error-Code: RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo.
`fault()` injects a status, a delay, a dropped connection, a truncated body or an ignored Range
on paths matching a regex; `log` records every request (method, path, Range, auth, bytes sent).
Hostile servers too: a replaced body or headers (traversal ETags, a lying Content-Length, a
gzip label on plain bytes), an endless body, a body dripped a byte at a time, a redirect loop.
"""

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

TOKEN = "hf_loopback_test_token"
_LFS_SUFFIXES = (".safetensors",)


def git_blob_sha(body: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()


@dataclass
class Repo:
    repo_id: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    private: bool = False
    gated: bool = False
    granted: set[str] = field(default_factory=set)  # tokens that accepted a gated repo's terms


@dataclass
class Fault:
    pattern: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering
    truncate: bool = False  # promise the full body, send a few bytes, close
    ignore_range: bool = False  # answer 200 with the whole file
    body: bytes | None = None  # answer with these bytes (status 200 unless `status` says otherwise)
    replace_headers: dict[str, str] = field(default_factory=dict)  # merged over a normal answer's headers
    endless: bytes = b""  # answer 200 with this, then spaces until the client hangs up
    drip_s: float = 0.0  # send a normal answer's body one byte per drip_s seconds
    redirect_loop: bool = False  # 302 to the same URL, forever


class HubServer:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> LFS content
        self.faults: list[Fault] = []
        self.log: list[dict] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self._servers = [_QuietServer(("127.0.0.1", 0), handler) for _ in ("hub", "cdn")]
        self.url, self.cdn_url = (f"http://127.0.0.1:{s.server_address[1]}" for s in self._servers)
        for server in self._servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, ref: str = "main", private: bool = False,
                 gated: bool = False) -> str:
        """Publish `files` as a new commit of `repo_id` that `ref` points to; returns the commit sha."""
        repo = self.repos.setdefault(repo_id, Repo(repo_id, private=private, gated=gated))
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs[ref] = sha
        for name, body in files.items():
            if name.endswith(_LFS_SUFFIXES):
                self.blobs[hashlib.sha256(body).hexdigest()] = body
        return sha

    def fault(self, pattern: str, **kwargs) -> None:
        self.faults.append(Fault(pattern, **kwargs))

    def requests(self, pattern: str = "") -> list[dict]:
        """Logged requests whose path matches, leaving out huggingface_hub's own user-agent lookup."""
        with self._lock:
            return [r for r in self.log if re.search(pattern, r["path"]) and r["path"] != "/api/agent-harnesses"]

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.log.append(entry)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """Clients that time out or hang up are part of the tests, not news for stderr."""


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: without it each answer waits ~40 ms for an ACK

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    # --- dispatch -----------------------------------------------------------------------------
    def _serve(self, head: bool):
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.entry = {"method": self.command, "path": path, "range": self.headers.get("Range"),
                      "auth": self.headers.get("Authorization"), "bytes_sent": 0}
        self.hub._record(self.entry)
        fault = self.fault = next((f for f in self.hub.faults if re.search(f.pattern, path)), None)
        if fault and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault and fault.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault and fault.redirect_loop:
            return self._reply(302, b"", {"Location": self.path}, head)
        if fault and fault.endless:
            return self._endless(fault.endless)
        if fault and (fault.status or fault.body is not None):
            body = fault.body if fault.body is not None else b'{"error": "injected"}'
            return self._reply(fault.status or 200, body, fault.headers, head)
        self.ignore_range = bool(fault and fault.ignore_range)
        self.truncate = bool(fault and fault.truncate)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path)
        if m:
            return self._api(m.group(1), m.group(2), "blobs" in parse_qs(url.query), head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(m.group(1), m.group(2), m.group(3), head)
        m = re.fullmatch(r"/cdn/([0-9a-f]{64})", path)
        if m and m.group(1) in self.hub.blobs:
            return self._bytes(self.hub.blobs[m.group(1)], {"ETag": f'"{m.group(1)}"'}, head)
        self._reply(404, b"not found", {}, head)

    def _access(self, repo_id: str, head: bool, for_file: bool) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        auth = self.headers.get("Authorization")
        if repo is None:
            self._reply(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
            return None
        if repo.private and auth != f"Bearer {TOKEN}":
            self._reply(401, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, head)
            return None
        if repo.gated and for_file and (auth or "").removeprefix("Bearer ") not in repo.granted:
            self._reply(401 if auth is None else 403, b'{"error": "gated"}',
                        {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted."}, head)
            return None
        return repo

    def _commit(self, repo: Repo, revision: str, head: bool) -> str | None:
        sha = revision if revision in repo.commits else repo.refs.get(revision)
        if sha is None:
            self._reply(404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}, head)
        return sha

    def _api(self, repo_id: str, revision: str, blobs: bool, head: bool):
        repo = self._access(repo_id, head, for_file=False)
        if repo is None:
            return
        sha = self._commit(repo, unquote(revision), head)
        if sha is None:
            return
        siblings = []
        for name, body in sorted(repo.commits[sha].items()):
            entry = {"rfilename": name}
            if blobs:
                entry.update(size=len(body), blobId=git_blob_sha(body))
                if name.endswith(_LFS_SUFFIXES):
                    entry["lfs"] = {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "pointerSize": 134}
            siblings.append(entry)
        info = {"_id": "0" * 24, "id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                "gated": "manual" if repo.gated else False, "disabled": False, "tags": [], "siblings": siblings}
        self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)

    def _resolve(self, repo_id: str, revision: str, name: str, head: bool):
        repo = self._access(repo_id, head, for_file=True)
        if repo is None:
            return
        sha = self._commit(repo, revision, head)
        if sha is None:
            return
        body = repo.commits[sha].get(name)
        if body is None:
            return self._reply(404, b'{"error": "Entry not found"}',
                               {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}, head)
        if name.endswith(_LFS_SUFFIXES):
            digest = hashlib.sha256(body).hexdigest()
            return self._reply(302, b"", {"Location": f"{self.hub.cdn_url}/cdn/{digest}", "X-Repo-Commit": sha,
                                          "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(body)),
                                          "ETag": f'"{git_blob_sha(body)}"'}, head)
        self._bytes(body, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(body)}"'}, head)

    # --- responses ----------------------------------------------------------------------------
    def _bytes(self, body: bytes, headers: dict, head: bool):
        headers = {**headers, "Accept-Ranges": "bytes"}
        wanted = self.headers.get("Range")
        if wanted and not self.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", wanted)
            if not m or int(m.group(1)) >= len(body):
                return self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"}, head)
            first, last = int(m.group(1)), min(int(m.group(2)), len(body) - 1)
            headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
            return self._reply(206, body[first:last + 1], headers, head)
        self._reply(200, body, headers, head)

    def _endless(self, start: bytes):
        """Headers without a length, then `start` and spaces until the client closes (at most 1 GiB)."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(start)
            chunk = b" " * 65536
            for _ in range(1 << 14):
                self.wfile.write(chunk)
                self.entry["bytes_sent"] += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _reply(self, status: int, body: bytes, headers: dict, head: bool):
        fault = self.fault
        if fault is not None:
            headers = {**headers, **fault.replace_headers}
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if head:
                return
            if fault is not None and fault.drip_s:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    self.entry["bytes_sent"] += 1
                    time.sleep(fault.drip_s)
                return
            if getattr(self, "truncate", False) and len(body) > 4:
                self.wfile.write(body[:4])
                self.entry["bytes_sent"] += 4
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)
            self.entry["bytes_sent"] += len(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts, early close)
            self.close_connection = True


# --- fixtures ---------------------------------------------------------------------------------------

_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class LeftLoopback(AssertionError):
    pass


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """A name lookup or connection beyond loopback fails the test instead of leaving the machine.

    Failures are also recorded, since a library may swallow the exception it gets.
    """
    attempts: list = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def refuse(what):
        attempts.append(what)
        raise LeftLoopback(f"test tried to reach {what!r} (only loopback is allowed)")

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            refuse(address)
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in _LOOPBACK and host is not None:
            refuse(host)
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    assert not attempts, f"left loopback: {attempts}"


@pytest.fixture
def hub_server():
    server = HubServer()
    yield server
    server.stop()


@pytest.fixture
def hub_env(hub_server, tmp_path, monkeypatch):
    """HF_ENDPOINT at the loopback server, a fresh HF cache, no token, no user config, Hub allowed."""
    constants = pytest.importorskip("huggingface_hub.constants")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE",
                 "KVPLAN_CONFIG", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    # huggingface_hub reads these once at import; the test process imported it under conftest's offline mode
    # and the default endpoint, which its user-agent helper would query for an "agent harness" list.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub_server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    return hub_server


# --- checkpoints: real safetensors files, with their expected byte counts -------------------------

TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64, "intermediate_size": 128,
              "vocab_size": 256, "max_position_embeddings": 2048, "torch_dtype": "bfloat16",
              "tie_word_embeddings": False}


def _linears(cfg: dict) -> dict[str, tuple[int, int]]:
    """Per-layer matmul name -> (out_features, in_features) of a Llama block."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    return {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, h), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
            "mlp.down_proj": (h, inter)}


def llama_tensors(cfg: dict = TINY_LLAMA, prefix: str = "model.", linear=None, dtype=None) -> dict:
    """A Llama checkpoint's tensors; `linear(name, out, in)` may replace each matmul by quantized tensors."""
    import torch

    dtype = dtype or torch.bfloat16
    h, vocab = cfg["hidden_size"], cfg["vocab_size"]
    tensors = {f"{prefix}embed_tokens.weight": torch.zeros(vocab, h, dtype=dtype)}
    for i in range(cfg["num_hidden_layers"]):
        for name, (out, inp) in _linears(cfg).items():
            full = f"{prefix}layers.{i}.{name}"
            tensors.update(linear(full, out, inp) if linear else {f"{full}.weight": torch.zeros(out, inp, dtype=dtype)})
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}layers.{i}.{norm}.weight"] = torch.zeros(h, dtype=dtype)
    tensors[f"{prefix}norm.weight"] = torch.zeros(h, dtype=dtype)
    if not cfg.get("tie_word_embeddings"):
        tensors["lm_head.weight"] = torch.zeros(vocab, h, dtype=dtype)
    return tensors


def gptq_linear(name: str, out: int, inp: int, group: int = 32) -> dict:
    """GPTQ 4-bit: packed int32 weights, int32 zero points, fp16 scales, int32 g_idx."""
    import torch

    return {f"{name}.qweight": torch.zeros(inp // 8, out, dtype=torch.int32),
            f"{name}.qzeros": torch.zeros(inp // group, out // 8, dtype=torch.int32),
            f"{name}.scales": torch.zeros(inp // group, out, dtype=torch.float16),
            f"{name}.g_idx": torch.zeros(inp, dtype=torch.int32)}


def fp8_linear(name: str, out: int, inp: int, block: int = 32) -> dict:
    """Block-scaled FP8 (DeepSeek-V3 / Qwen3-FP8 layout): e4m3 weights, fp32 inverse scale per block."""
    import torch

    return {f"{name}.weight": torch.zeros(out, inp, dtype=torch.float8_e4m3fn),
            f"{name}.weight_scale_inv": torch.zeros(-(-out // block), -(-inp // block), dtype=torch.float32)}


def nbytes(tensors: dict) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def sharded(tensors: dict, shards: int, extra: dict | None = None) -> dict[str, bytes]:
    """Split into `shards` files plus model.safetensors.index.json; `extra` maps shard number -> more tensors."""
    names = list(tensors)
    files, weight_map = {}, {}
    for k in range(shards):
        part = {n: tensors[n] for n in names[k::shards]}
        part.update((extra or {}).get(k, {}))
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        files[fname] = safetensors_bytes(part)
        weight_map.update({n: fname for n in part})
    index = {"metadata": {"total_size": nbytes(tensors)}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return files


def config_bytes(cfg: dict) -> bytes:
    return json.dumps(cfg, indent=2).encode()
