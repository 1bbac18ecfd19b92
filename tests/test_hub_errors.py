"""Every way the Hub path can fail: one line on stderr, exit 2, and nothing a later run could mistake
for a complete download left in the cache."""

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from hub_server import (TINY_LLAMA, TOKEN, config_bytes, hub_env, hub_server,  # noqa: F401
                        llama_tensors, loopback_only, safetensors_bytes, sharded)
from kvplan.cli import main
from kvplan.model import hub

pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")

REPO = "acme/tiny-llama"


@pytest.fixture
def repo(hub_env):
    """A three-shard checkpoint, so a failure can strike after some shards succeeded."""
    files = {"config.json": config_bytes(TINY_LLAMA), **sharded(llama_tensors(), 3)}
    return hub_env.add_repo(REPO, files)


def fails(capsys, *args) -> str:
    rc = main(["estimate", *args])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.startswith("kvplan: error: ") and err.count("\n") == 1, err
    return err


def assert_nothing_usable_cached(capsys, repo_id: str = REPO, written: bool = False) -> None:
    """No config.json in a snapshot and no ref; unless the failure came while `written`, nothing at all."""
    cache = Path(os.environ["HF_HUB_CACHE"])
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    assert written or not repo_dir.exists(), "a failed fetch wrote to the cache"
    assert not list(repo_dir.glob("snapshots/*/config.json")), "a snapshot config.json was written"
    assert not list(repo_dir.glob("refs/**/*")), "a ref was written"
    assert not list(cache.rglob("*.tmp")), "a temporary file was left behind"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        assert "not in the local HF cache" in fails(capsys, repo_id)


@pytest.mark.parametrize("args,setup,needle", [
    (["acme/missing"], None, "hub: acme/missing not found at http://127.0.0.1:"),
    ([REPO, "--revision", "nope"], None, "hub: acme/tiny-llama has no revision 'nope' (404)"),
    ([REPO], dict(pattern="/api/models/", status=429, headers={"Retry-After": "7"}),
     "rate limited (429) fetching the repo listing of acme/tiny-llama; retry after 7 s, or set HF_TOKEN"),
    ([REPO], dict(pattern="/resolve/.*/config.json", status=429, headers={"RateLimit": '"resolvers";r=0;t=42'}),
     "rate limited (429) fetching config.json of acme/tiny-llama; retry after 42 s"),
    ([REPO], dict(pattern="/resolve/.*/config.json", status=503), "failed with 503 fetching config.json"),
    ([REPO], dict(pattern="/resolve/.*/config.json", status=418), "hub: HTTP 418 fetching config.json"),
    ([REPO], dict(pattern="/resolve/.*/config.json", truncate=True), "connection to http://127.0.0.1:"),
    ([REPO], dict(pattern="/resolve/.*/config.json", drop=True), "connection to http://127.0.0.1:"),
    # The second shard fails after the first succeeded and config.json arrived: still nothing is cached.
    ([REPO], dict(pattern="/resolve/.*/model-00002-of-00003", status=429),
     "rate limited (429) fetching the header of model-00002-of-00003.safetensors"),
    ([REPO], dict(pattern="/resolve/.*/model-00003-of-00003", status=500), "failed with 500 fetching the header"),
])
def test_http_failures(hub_env, repo, capsys, args, setup, needle):
    if setup:
        hub_env.fault(**setup)
    assert needle in fails(capsys, *args, "--online")
    assert_nothing_usable_cached(capsys)


def test_timeouts(hub_env, repo, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.2")
    hub_env.fault("^/cdn/", delay_s=1.0)
    err = fails(capsys, REPO, "--online")
    assert "hub: timed out after 0.2 s fetching the header of model-0000" in err
    assert_nothing_usable_cached(capsys)
    hub_env.faults.clear()
    hub_env.fault("/api/models/", delay_s=1.0)
    assert "timed out after 0.2 s fetching the repo listing" in fails(capsys, REPO, "--online")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "soon")
    assert "HF_HUB_DOWNLOAD_TIMEOUT='soon' must be a positive number" in fails(capsys, REPO, "--online")


def test_connection_refused(hub_env, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert f"connection to http://127.0.0.1:{port} failed fetching the repo listing" in fails(capsys, REPO, "--online")


def test_gated_repo(hub_env, capsys, monkeypatch):
    hub_env.add_repo("acme/gated", {"config.json": config_bytes(TINY_LLAMA),
                                    "model.safetensors": safetensors_bytes(llama_tensors())}, gated=True)
    err = fails(capsys, "acme/gated", "--online")
    assert f"hub: acme/gated is gated (401): accept its terms at {hub_env.url}/acme/gated with an account" in err
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert "is gated (403)" in fails(capsys, "acme/gated", "--online")
    assert_nothing_usable_cached(capsys, "acme/gated")
    hub_env.repos["acme/gated"].granted.add(TOKEN)
    assert main(["estimate", "acme/gated", "--online", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_source"].startswith("hub:acme/gated@")


@pytest.mark.parametrize("files,needle", [
    ({"params.json": b"{}", "consolidated.safetensors": b""}, "has params.json but no config.json"),
    ({"README.md": b"# gguf only", "model-Q4_K_M.gguf": b""}, "has no config.json"),
    ({"config.json": b"[1, 2]"}, "config.json is not a JSON object"),
    ({"config.json": config_bytes(TINY_LLAMA),
      "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}}).encode()},
     "lists model-00002-of-00002.safetensors, which the repo does not have"),
    ({"config.json": config_bytes(TINY_LLAMA), "model.safetensors.index.json": b"{}"}, "has no weight_map"),
    ({"config.json": config_bytes(TINY_LLAMA), "model.safetensors": (10**12).to_bytes(8, "little") + b"{}"},
     "/model.safetensors: safetensors header length 1000000000000 is not plausible"),
    ({"config.json": config_bytes(TINY_LLAMA), "model.safetensors": (20).to_bytes(8, "little") + b"{oops" + b" " * 15},
     "/model.safetensors: safetensors header: not valid JSON"),
    ({"config.json": config_bytes(TINY_LLAMA), "model.safetensors": (16).to_bytes(8, "little") + b'{"w": {"a": 1}} '},
     "/model.safetensors: tensor 'w' has no valid data_offsets/dtype"),
])
def test_malformed_repos(hub_env, capsys, files, needle):
    hub_env.add_repo("acme/odd", files)
    assert needle in fails(capsys, "acme/odd", "--online")
    assert_nothing_usable_cached(capsys, "acme/odd")


def test_shard_shorter_than_its_header_says(hub_env, capsys):
    body = safetensors_bytes(llama_tensors())
    hub_env.add_repo("acme/short", {"config.json": config_bytes(TINY_LLAMA), "model.safetensors": body[:-10]})
    err = fails(capsys, "acme/short", "--online")
    assert f"header describes {len(body):,} bytes but the file has {len(body) - 10:,}" in err


def test_interrupted_cache_write_leaves_no_snapshot(hub_env, repo, capsys, monkeypatch):
    real_link = hub.cache.symlink_atomic

    def crash_on_config(path, blob):
        if path.name == "config.json":
            raise OSError(28, "No space left on device")
        real_link(path, blob)

    monkeypatch.setattr(hub.cache, "symlink_atomic", crash_on_config)
    assert "cannot write the HF cache" in fails(capsys, REPO, "--online")
    assert_nothing_usable_cached(capsys, written=True)


def test_hf_hub_offline_always_wins(hub_env, repo, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "kvplan.yaml"
    config.write_text("online: true\n")
    monkeypatch.setenv("KVPLAN_CONFIG", str(config))
    assert "HF_HUB_OFFLINE=1 forbids the Hub" in fails(capsys, REPO, "--online")
    assert "HF_HUB_OFFLINE=1 forbids the Hub" in fails(capsys, REPO)
    assert not hub_env.requests()


def test_bad_revisions_and_misplaced_flags(hub_env, capsys, tmp_path):
    assert "--revision applies to Hugging Face ids (org/name), not 'llama-3.1-8b'" in fails(
        capsys, "llama-3.1-8b", "--revision", "main")
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    assert "not to the local path" in fails(capsys, str(tmp_path), "--revision", "main")
    for bad in ("../../etc", "/abs", "a//b", ""):
        assert "is not a branch, tag or commit name" in fails(capsys, REPO, "--online", "--revision", bad)
    assert not hub_env.requests()


def test_user_config_errors_are_one_line_and_only_when_consulted(hub_env, capsys, tmp_path, monkeypatch):
    config = tmp_path / "kvplan.yaml"
    monkeypatch.setenv("KVPLAN_CONFIG", str(config))
    err = fails(capsys, REPO)
    assert f"KVPLAN_CONFIG={config}: no such file" in err
    for text, needle in (("online: [", "malformed YAML"), ("online: 1\n", "online must be bool, got 1"),
                         ("onlnie: true\n", "unknown setting 'onlnie' (known: online)"),
                         ("- online\n", "expected a mapping of settings, got list")):
        config.write_text(text)
        assert needle in fails(capsys, REPO)
        assert main(["estimate", "llama-3.1-8b", "--format", "json"]) == 0  # bundled: config never read
        capsys.readouterr()
        assert main(["estimate", REPO, "--offline", "--format", "json"]) == 2  # explicit flag: not read either
        assert "unknown setting" not in capsys.readouterr().err


def test_missing_huggingface_hub_is_one_line(hub_env, repo, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "huggingface_hub" or m.startswith("huggingface_hub.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert fails(capsys, REPO, "--online") == ("kvplan: error: hub access needs huggingface_hub, which kvplan's 'hub' "
                                               "extra installs: pip install 'kvplan[hub]'\n")


def test_unwritable_cache(hub_env, repo, capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("HF_HUB_CACHE", str(blocker))
    assert f"hub: cannot write the HF cache at {blocker}" in fails(capsys, REPO, "--online")
