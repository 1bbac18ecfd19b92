"""A hostile Hub (tests/hub_server.py on loopback): nothing is written outside the HF cache, every
body and every request is bounded, and each attack ends as one line with exit 2 (issue 13)."""

import json
import os
import time
from pathlib import Path

import pytest

from hub_server import (TINY_LLAMA, config_bytes, git_blob_sha, hub_env, hub_server,  # noqa: F401
                        llama_tensors, loopback_only, nbytes, safetensors_bytes, sharded)
from kvplan.cli import main

pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")

REPO = "acme/tiny-llama"
CONFIG = config_bytes(TINY_LLAMA)


@pytest.fixture
def repo(hub_env):
    return hub_env.add_repo(REPO, {"config.json": CONFIG, "model.safetensors": safetensors_bytes(llama_tensors())})


def cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def fails(capsys, *args) -> str:
    rc = main(["estimate", *args])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.startswith("kvplan: error: ") and err.count("\n") == 1, err
    return err


def assert_only_cache_written(tmp_path: Path, before: set[str]) -> None:
    """Nothing new under tmp_path except inside the HF cache, and no temp file left there."""
    new = {p for p in tree(tmp_path) - before
           if not ((tmp_path / p).is_relative_to(cache()) or cache().is_relative_to(tmp_path / p))}
    assert not new, f"written outside the HF cache: {sorted(new)}"
    assert not [p for p in cache().rglob("*") if ".tmp" in p.name], "a temporary file was left behind"


@pytest.mark.parametrize("header,etag", [("ETag", '"../../../../evil.sh"'), ("X-Linked-Etag", '"{tmp}/evil.sh"'),
                                         ("ETag", 'W/"..\\\\evil"'), ("X-Linked-Etag", '"' + "a" * 64 + '"')])
def test_blobs_are_named_by_the_digest_of_their_bytes_never_by_the_etag(hub_env, repo, capsys, tmp_path, header, etag):
    # every target inside tmp_path: run against code that trusts the ETag, this test writes nowhere else
    hub_env.fault("/resolve/.*/config.json", replace_headers={header: etag.format(tmp=tmp_path)})
    before = tree(tmp_path)
    assert main(["estimate", REPO, "--online", "--format", "json"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert_only_cache_written(tmp_path, before)
    blobs = cache() / "models--acme--tiny-llama" / "blobs"
    assert sorted(p.name for p in blobs.iterdir()) == [git_blob_sha(CONFIG)]


def test_a_symlink_planted_in_the_cache_cannot_redirect_a_write(hub_env, repo, capsys, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    blobs = cache() / "models--acme--tiny-llama" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / git_blob_sha(CONFIG)).symlink_to(outside)
    assert "outside the HF cache" in fails(capsys, REPO, "--online")
    assert outside.read_text() == "precious"


@pytest.mark.parametrize("content", ["../../../../etc", "/etc", "main", "x" * 2000, "0" * 39 + "g"])
def test_refs_must_hold_a_commit(hub_env, capsys, tmp_path, content):
    repo_dir = cache() / "models--acme--cached"
    (repo_dir / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(content)
    err = fails(capsys, "acme/cached")
    assert "must hold a 40-hex commit" in err or "over kvplan's 1 KiB limit for a HF cache ref" in err


@pytest.mark.parametrize("shard", ["../../../../etc/passwd", "/etc/passwd", "a\\..\\b.safetensors",
                                   "a\x00.safetensors", None, [1]])
def test_index_shard_names_must_stay_inside_the_repo(hub_env, capsys, shard):
    index = {"metadata": {"total_size": 8}, "weight_map": {"w": shard}}
    hub_env.add_repo("acme/odd", {"config.json": CONFIG, "model.safetensors.index.json": json.dumps(index).encode()})
    assert "not a relative file name in the repo" in fails(capsys, "acme/odd", "--online")
    assert not hub_env.requests("/resolve/.*safetensors$")


@pytest.mark.parametrize("listing,needle", [
    (b"<html>rate limited</html>", "repo listing of acme/tiny-llama: not valid JSON"),
    (b"[1, 2]", "no 40-hex commit sha"),
    (json.dumps({"sha": "../../x", "siblings": []}).encode(), "no 40-hex commit sha"),
    (json.dumps({"sha": 7, "siblings": []}).encode(), "no 40-hex commit sha"),
    (json.dumps({"sha": "a" * 40, "siblings": "config.json"}).encode(), "no list of files"),
    (json.dumps({"sha": "a" * 40, "siblings": [{"rfilename": "config.json", "size": "12"}]}).encode(),
     "a size of '12' bytes"),
    (json.dumps({"sha": "a" * 40, "siblings": [{"rfilename": "config.json", "size": float("inf")}]}).encode(),
     "a size of inf bytes"),
    (b'{"sha": ' + b"[   " * 100 + b"]" * 100 + b"}", "JSON nested deeper than 64 levels"),
    (b'{"sha": ' + b"[" * 5000 + b"]" * 5000 + b"}", "more than one object or array per 8 bytes"),
    (b'{"sha": ' + b"9" * 5000 + b"}", "not valid JSON"),
])
def test_mistyped_api_answers(hub_env, repo, capsys, listing, needle):
    hub_env.fault("^/api/models/", body=listing)
    assert needle in fails(capsys, REPO, "--online")


@pytest.mark.parametrize("pattern,start,needle", [
    ("^/api/models/", b'{"sha": "', "repo listing of acme/tiny-llama is over kvplan's 16,777,216-byte limit"),
    ("/resolve/.*/config.json", b"{", "config.json of acme/tiny-llama is over kvplan's 4,194,304-byte limit"),
])
def test_endless_bodies_stop_at_their_cap(hub_env, repo, capsys, pattern, start, needle):
    hub_env.fault(pattern, endless=start)
    assert needle in fails(capsys, REPO, "--online")
    assert not cache().exists()


def test_a_lying_content_length_is_refused_before_reading(hub_env, repo, capsys):
    hub_env.fault("/resolve/.*/config.json", replace_headers={"Content-Length": str(1 << 40)})
    assert "(1,099,511,627,776 bytes) is over kvplan's 4,194,304-byte limit" in fails(capsys, REPO, "--online")


def test_a_drip_fed_body_meets_the_deadline(hub_env, repo, capsys, monkeypatch):
    import kvplan.model.hub.client as client

    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.4")  # each read is quick: only the deadline can stop it
    monkeypatch.setattr(client, "DEADLINE_S", 0.6)
    hub_env.fault("/resolve/.*/config.json", drip_s=0.05)
    started = time.monotonic()
    err = fails(capsys, REPO, "--online")
    assert "hub: gave up on config.json of acme/tiny-llama" in err and "may take 0.6 s in all" in err
    assert time.monotonic() - started < 5
    assert not cache().exists()


def test_a_fetch_has_one_deadline_for_all_its_requests(hub_env, repo, capsys, monkeypatch):
    import kvplan.model.hub.client as client

    monkeypatch.setattr(client, "DEADLINE_S", 0.5)  # 0.5 s for everything; each request alone is in time
    hub_env.fault("^/api/models/", delay_s=0.3)
    hub_env.fault("/resolve/.*/config.json", delay_s=0.3)
    assert "kvplan's Hub requests of one command may take 0.5 s in all" in fails(capsys, REPO, "--online")


def test_many_slow_shards_end_at_the_deadline(hub_env, capsys, monkeypatch):
    """64 shards whose headers each take 1 s: 8 rounds of 8 parallel requests, 8 s without a total deadline."""
    import kvplan.model.hub.client as client

    monkeypatch.setattr(client, "DEADLINE_S", 1.0)
    hub_env.add_repo("acme/slow", {"config.json": CONFIG, **sharded(llama_tensors(), 64)})
    hub_env.fault("^/cdn/", delay_s=1.0)
    started = time.monotonic()
    err = fails(capsys, "acme/slow", "--online")
    assert "hub: gave up on the header of model-" in err and "may take 1 s in all" in err
    assert time.monotonic() - started < 6  # generous: the point is that it did not take 8 s
    assert not cache().exists()


def test_the_fetches_of_one_command_share_one_deadline(hub_env):
    from kvplan.model.hub.client import DEADLINE_S, HubClient, one_deadline

    with one_deadline():
        first = HubClient("acme/a", "main")
        time.sleep(0.05)
        second = HubClient("acme/b", "main")
    alone = HubClient("acme/c", "main")
    assert first.ends == second.ends < alone.ends  # a file naming many Hub models cannot multiply the time
    assert alone.deadline_s == DEADLINE_S == 12.0


def test_a_slow_link_raises_the_deadline_with_the_read_timeout(hub_env, monkeypatch):
    from kvplan.model.hub.client import HubClient

    for timeout, deadline in (("0.5", 12.0), ("10", 12.0), ("30", 36.0)):
        monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", timeout)
        assert HubClient("acme/a", "main").deadline_s == deadline


@pytest.mark.parametrize("indexed", [True, False])
def test_too_many_shards_are_refused_before_any_is_read(hub_env, capsys, monkeypatch, indexed):
    import kvplan.model.hub.fetch as fetch

    n = fetch.MAX_SHARDS + 1
    names = [f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    files = {"config.json": CONFIG}
    if indexed:  # the index alone names them; the repo need not hold them
        files["model.safetensors.index.json"] = json.dumps({"weight_map": {f"w{k}": s for k, s in enumerate(names)}}).encode()
    else:
        files.update((s, b"") for s in names)
    hub_env.add_repo("acme/many", files)
    err = fails(capsys, "acme/many", "--online")
    assert "hub: acme/many@main has 1,025 safetensors shards, over kvplan's limit of 1,024" in err
    assert not hub_env.requests(r"\.safetensors$") and not hub_env.requests("^/cdn/")
    assert not cache().exists()


def test_the_shard_limit_admits_as_many_as_it_names(hub_env, capsys, monkeypatch):
    import kvplan.model.hub.fetch as fetch

    monkeypatch.setattr(fetch, "MAX_SHARDS", 3)
    tensors = llama_tensors()
    hub_env.add_repo("acme/three", {"config.json": CONFIG, **sharded(tensors, 3)})
    hub_env.add_repo("acme/four", {"config.json": CONFIG, **sharded(tensors, 4)})
    assert main(["estimate", "acme/three", "--online", "--format", "json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["weights_bytes"] == nbytes(tensors)
    assert "has 4 safetensors shards, over kvplan's limit of 3" in fails(capsys, "acme/four", "--online")


def test_a_header_longer_than_the_first_read_takes_one_more_request(hub_env, monkeypatch):
    import kvplan.model.hub.fetch as fetch
    from kvplan.model.loaders import load_model

    monkeypatch.setattr(fetch, "HEADER_FIRST_BYTES", 64)  # the tiny model's headers are ~1 KB
    tensors = llama_tensors()
    files = sharded(tensors, 2)
    hub_env.add_repo("acme/two", {"config.json": CONFIG, **files})
    assert load_model("acme/two", online=True).checkpoint.total_bytes == nbytes(tensors)
    ranges = sorted(r["range"] for r in hub_env.requests("^/cdn/"))
    lengths = sorted(int.from_bytes(body[:8], "little") for name, body in files.items() if name.endswith(".safetensors"))
    assert ranges == sorted(["bytes=0-63"] * 2 + [f"bytes=64-{8 + n - 1}" for n in lengths])


def test_redirect_loops_end_as_one_line(hub_env, repo, capsys):
    hub_env.fault("/resolve/.*/config.json", redirect_loop=True)
    assert "hub: too many redirects fetching config.json of acme/tiny-llama" in fails(capsys, REPO, "--online")


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_bodies_not_sent_as_identity_are_refused(hub_env, repo, capsys, encoding):
    hub_env.fault("/resolve/.*/config.json", replace_headers={"Content-Encoding": encoding})
    assert f"a '{encoding}'-encoded body (kvplan asks for identity)" in fails(capsys, REPO, "--online")


def test_all_headers_of_one_fetch_share_one_budget(hub_env, capsys, monkeypatch):
    import kvplan.model.hub.fetch as fetch

    files = {"config.json": CONFIG, **sharded(llama_tensors(), 3)}
    hub_env.add_repo("acme/sharded", files)
    monkeypatch.setattr(fetch, "HEADERS_MAX_BYTES", 1500)  # each header is ~1 KB
    assert "over kvplan's" in fails(capsys, "acme/sharded", "--online")


@pytest.mark.parametrize("ref", ["acme/x..y", "acme/x--y", "acme/-x", "acme/x-", "acme/.x", "a/b/c",
                                 "acme/" + "x" * 97, "acme/x\u00e9"])
def test_invalid_repo_ids_never_reach_the_hub(hub_env, capsys, ref):
    err = fails(capsys, ref, "--online")
    assert "unknown model" in err
    assert not hub_env.requests()


def test_a_fetch_that_failed_on_one_shard_stops_the_others(hub_env, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    hub_env.add_repo("acme/sharded", {"config.json": CONFIG, **sharded(llama_tensors(), 3)})
    hub_env.fault("/resolve/.*/model-00001-of-00003", status=500)
    hub_env.fault("^/cdn/", delay_s=2.5)  # the other shards would each wait out their deadline
    started = time.monotonic()
    assert "failed with 500" in fails(capsys, "acme/sharded", "--online")
    assert time.monotonic() - started < 2.5
