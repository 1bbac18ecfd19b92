"""Hub ids, online: config + exact weight bytes from safetensors headers over HTTP ranges, then offline.

Everything runs against tests/hub_server.py on 127.0.0.1 (HF_ENDPOINT points there); the
`loopback_only` fixture fails any test that tries to resolve or reach anything else.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_server import (TINY_LLAMA, TOKEN, config_bytes, fp8_linear, gptq_linear, hub_env, hub_server,  # noqa: F401
                        llama_tensors, loopback_only, nbytes, safetensors_bytes, sharded)
from kvplan.cli import main
from kvplan.model import load_model
from kvplan.model.hub import SIDECAR_FORMAT
from kvplan.model.hub.fetch import HEADER_FIRST_BYTES

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")

ROOT = Path(__file__).resolve().parents[1]


def estimate_json(capsys, *args) -> dict:
    rc = main(["estimate", *args, "--format", "json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def cache_repo(repo_id: str) -> Path:
    return Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo_id.replace("/", "--"))


def test_single_file_then_offline(hub_env, capsys, monkeypatch):
    tensors = llama_tensors()
    sha = hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA),
                                               "model.safetensors": safetensors_bytes(tensors)})
    first = estimate_json(capsys, "acme/tiny-llama", "--online")
    assert first["model_source"] == f"hub:acme/tiny-llama@{sha}"
    assert first["weights_bytes"] == nbytes(tensors)
    assert first["weights_basis"] == f"safetensors headers via hub@{sha[:12]} (1 file)"
    # An independent count: every tensor of this Llama is a parameter, 2 bytes each in bf16.
    assert first["weights_bytes"] == 2 * load_model("acme/tiny-llama").spec.params.total

    served = len(hub_env.requests())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    second = estimate_json(capsys, "acme/tiny-llama")
    assert second["model_source"] == f"cache:acme/tiny-llama@{sha}"
    assert second["weights_bytes"] == first["weights_bytes"]
    assert second["weights_basis"] == first["weights_basis"]
    assert second["kv_bytes_per_token"] == first["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 2
    assert len(hub_env.requests()) == served  # the second run asked the server nothing


def test_sharded_checkpoint_reads_only_headers(hub_env):
    tensors = llama_tensors()
    files = sharded(tensors, 3)
    sha = hub_env.add_repo("acme/tiny-sharded", {"config.json": config_bytes(TINY_LLAMA), **files})
    loaded = load_model("acme/tiny-sharded", online=True)
    ckpt = loaded.checkpoint
    assert ckpt.total_bytes == nbytes(tensors) == json.loads(files["model.safetensors.index.json"])["metadata"]["total_size"]
    assert ckpt.bytes_by_dtype == {"BF16": nbytes(tensors)}
    assert ckpt.num_tensors == len(tensors)
    assert ckpt.files == tuple(f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3))
    assert loaded.spec.source == f"hub:acme/tiny-sharded@{sha}"

    # Per shard: one ranged GET of the first HEADER_FIRST_BYTES (length and header), redirected to the CDN;
    # never more of a shard than that (these small shards fit in it whole).
    cdn = hub_env.requests("^/cdn/")
    assert sorted(r["range"] for r in cdn) == [f"bytes=0-{HEADER_FIRST_BYTES - 1}"] * 3
    assert sum(r["bytes_sent"] for r in cdn) == sum(min(len(files[f]), HEADER_FIRST_BYTES) for f in ckpt.files)


def test_gptq_counts_scales_zero_points_and_g_idx(hub_env, capsys):
    tensors = llama_tensors(linear=gptq_linear, dtype=torch.float16)
    cfg = {**TINY_LLAMA, "torch_dtype": "float16",
           "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False}}
    hub_env.add_repo("acme/tiny-gptq", {"config.json": config_bytes(cfg), **sharded(tensors, 2)})
    loaded = load_model("acme/tiny-gptq", online=True)
    by_suffix = {s: nbytes({n: t for n, t in tensors.items() if n.endswith(s)})
                 for s in (".qweight", ".qzeros", ".g_idx", ".scales")}
    assert all(by_suffix.values())
    assert loaded.checkpoint.bytes_by_dtype == {
        "I32": by_suffix[".qweight"] + by_suffix[".qzeros"] + by_suffix[".g_idx"],
        "F16": nbytes(tensors) - by_suffix[".qweight"] - by_suffix[".qzeros"] - by_suffix[".g_idx"],
    }
    assert loaded.checkpoint.total_bytes == nbytes(tensors)
    out = estimate_json(capsys, "acme/tiny-gptq")  # second run: from the cache
    assert out["weights_bytes"] == nbytes(tensors) and out["weights_dtype"] == "gptq"


def test_fp8_block_scales(hub_env):
    tensors = llama_tensors(linear=fp8_linear)
    cfg = {**TINY_LLAMA, "quantization_config": {"quant_method": "fp8", "weight_block_size": [32, 32]}}
    hub_env.add_repo("acme/tiny-fp8", {"config.json": config_bytes(cfg),
                                       "model.safetensors": safetensors_bytes(tensors)})
    ckpt = load_model("acme/tiny-fp8", online=True).checkpoint
    fp8 = nbytes({n: t for n, t in tensors.items() if t.dtype == torch.float8_e4m3fn})
    scales = nbytes({n: t for n, t in tensors.items() if n.endswith("weight_scale_inv")})
    assert ckpt.bytes_by_dtype == {"F8_E4M3": fp8, "F32": scales, "BF16": nbytes(tensors) - fp8 - scales}


def test_multimodal_towers_are_separated(hub_env, capsys):
    text = llama_tensors(prefix="model.language_model.")
    vision = {f"model.vision_tower.vision_model.encoder.layers.{i}.mlp.fc1.weight": torch.zeros(96, 32, dtype=torch.bfloat16)
              for i in range(2)}
    vision["model.vision_tower.vision_model.embeddings.patch_embedding.weight"] = torch.zeros(32, 3, 14, 14)
    audio = {"model.audio_tower.layers.0.fc1.weight": torch.zeros(80, 40, dtype=torch.bfloat16)}
    projector = {"model.multi_modal_projector.linear_1.weight": torch.zeros(64, 32, dtype=torch.bfloat16)}
    cfg = {"model_type": "llava", "torch_dtype": "bfloat16", "vision_config": {"model_type": "siglip_vision_model"},
           "text_config": {k: v for k, v in TINY_LLAMA.items() if k not in ("architectures", "torch_dtype")}}
    every = {**text, **vision, **audio, **projector}
    sha = hub_env.add_repo("acme/tiny-omni", {"config.json": config_bytes(cfg), **sharded(every, 2)})
    ckpt = load_model("acme/tiny-omni", online=True).checkpoint
    assert ckpt.bytes_by_component == {"text": nbytes(text), "vision": nbytes(vision), "audio": nbytes(audio),
                                       "projector": nbytes(projector)}
    assert ckpt.total_bytes == nbytes(every)
    patch_bytes = 32 * 3 * 14 * 14 * 4  # the one fp32 tensor
    assert ckpt.bytes_by_dtype == {"BF16": nbytes(every) - patch_bytes, "F32": patch_bytes}
    out = estimate_json(capsys, "acme/tiny-omni")
    assert out["model_source"] == f"cache:acme/tiny-omni@{sha}"
    assert "vision" in out["weights_basis"] and "audio" in out["weights_basis"]


def test_tied_lm_head_and_repeated_tensor_count_once(hub_env):
    cfg = {**TINY_LLAMA, "tie_word_embeddings": True}
    tensors = llama_tensors(cfg)
    lm_head = {"lm_head.weight": torch.zeros(256, 64, dtype=torch.bfloat16)}  # stored although tied
    repeated = {"model.norm.weight": torch.zeros(64, dtype=torch.bfloat16)}
    files = sharded({**tensors, **lm_head}, 3, extra={0: repeated})  # norm also in shard 1
    hub_env.add_repo("acme/tiny-tied", {"config.json": config_bytes(cfg), **files})
    loaded = load_model("acme/tiny-tied", online=True)
    assert loaded.checkpoint.total_bytes == nbytes(tensors)
    assert loaded.checkpoint.total_bytes == 2 * loaded.spec.params.total  # tied: no separate lm_head parameter
    assert "tied lm_head counted once" in loaded.checkpoint.source


def test_cache_is_what_huggingface_hub_reads(hub_env):
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache

    hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA),
                                         "model.safetensors": safetensors_bytes(llama_tensors())})
    sha = load_model("acme/tiny-llama", online=True).spec.source.rsplit("@", 1)[1]
    cache = Path(os.environ["HF_HUB_CACHE"])
    info = scan_cache_dir(cache)
    assert not info.warnings
    (repo,) = info.repos
    (revision,) = repo.revisions
    assert revision.commit_hash == sha and revision.refs == frozenset({"main"})
    assert {f.file_name for f in revision.files} == {"config.json"}
    config = try_to_load_from_cache("acme/tiny-llama", "config.json", cache_dir=cache)
    assert json.loads(Path(config).read_text()) == TINY_LLAMA
    sidecar = json.loads((cache_repo("acme/tiny-llama") / "kvplan" / f"{sha}.json").read_text())
    assert sidecar["format"] == SIDECAR_FORMAT and sidecar["commit"] == sha
    assert sidecar["files"]["model.safetensors"]["size_bytes"] == len(
        hub_env.repos["acme/tiny-llama"].commits[sha]["model.safetensors"])
    assert not list(cache.rglob("*.tmp"))


def test_mock_hub_serves_the_real_client(hub_env, tmp_path):
    """The loopback server answers huggingface_hub's own download and metadata calls as the Hub does."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    body = safetensors_bytes(llama_tensors())
    sha = hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA), "model.safetensors": body})
    path = hf_hub_download("acme/tiny-llama", "config.json", cache_dir=tmp_path / "other", endpoint=hub_env.url)
    assert Path(path).read_bytes() == config_bytes(TINY_LLAMA) and sha in path
    meta = get_hf_file_metadata(hf_hub_url("acme/tiny-llama", "model.safetensors", endpoint=hub_env.url))
    assert meta.commit_hash == sha and meta.size == len(body)


def test_revision_branch_and_commit(hub_env, capsys, monkeypatch):
    main_sha = hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA),
                                                    "model.safetensors": safetensors_bytes(llama_tensors())})
    deeper = {**TINY_LLAMA, "num_hidden_layers": 4}
    v2_tensors = llama_tensors(deeper)
    v2_sha = hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(deeper),
                                                  "model.safetensors": safetensors_bytes(v2_tensors)}, ref="v2")
    out = estimate_json(capsys, "acme/tiny-llama", "--online", "--revision", "v2")
    assert out["model_source"] == f"hub:acme/tiny-llama@{v2_sha}" and out["weights_bytes"] == nbytes(v2_tensors)
    assert (cache_repo("acme/tiny-llama") / "refs" / "v2").read_text() == v2_sha

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    by_ref = estimate_json(capsys, "acme/tiny-llama", "--revision", "v2")
    by_sha = estimate_json(capsys, "acme/tiny-llama", "--revision", v2_sha)
    assert by_ref["model_source"] == by_sha["model_source"] == f"cache:acme/tiny-llama@{v2_sha}"
    assert by_ref["kv_bytes_per_token"] == 4 * 2 * 2 * 16 * 2
    assert main(["estimate", "acme/tiny-llama", "--format", "json"]) == 2  # main was never fetched
    assert main_sha not in capsys.readouterr().out


def test_token_is_sent_for_private_repos(hub_env, capsys, monkeypatch):
    hub_env.add_repo("acme/private", {"config.json": config_bytes(TINY_LLAMA),
                                      "model.safetensors": safetensors_bytes(llama_tensors())}, private=True)
    assert main(["estimate", "acme/private", "--online"]) == 2
    assert "private" in capsys.readouterr().err
    assert not cache_repo("acme/private").exists()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    before = len(hub_env.requests())
    out = estimate_json(capsys, "acme/private", "--online")
    assert out["weights_bytes"] == nbytes(llama_tensors())
    sent = hub_env.requests()[before:]
    hub_side = [r for r in sent if not r["path"].startswith("/cdn/")]
    assert ["/revision/" in r["path"] for r in hub_side] == [True, False, False]  # listing, config, 1 range
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in hub_side)
    assert all(r["auth"] is None for r in sent if r["path"].startswith("/cdn/"))  # the token stays on the Hub


def test_user_config_turns_online_on_and_offline_flag_wins(hub_env, capsys, tmp_path, monkeypatch):
    hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA),
                                         "model.safetensors": safetensors_bytes(llama_tensors())})
    config = tmp_path / "xdg" / "kvplan" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("online: true\n")
    assert main(["estimate", "acme/tiny-llama", "--offline"]) == 2
    assert "--online" in capsys.readouterr().err and not hub_env.requests()
    out = estimate_json(capsys, "acme/tiny-llama")
    assert out["model_source"].startswith("hub:acme/tiny-llama@")


def test_config_only_cache_gets_headers_when_online(hub_env):
    """transformers' AutoConfig leaves a snapshot with config.json alone; online, kvplan adds the headers."""
    tensors = llama_tensors()
    sha = hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA),
                                               "model.safetensors": safetensors_bytes(tensors)})
    snap = cache_repo("acme/tiny-llama") / "snapshots" / sha
    snap.mkdir(parents=True)
    (snap / "config.json").write_bytes(config_bytes(TINY_LLAMA))
    (cache_repo("acme/tiny-llama") / "refs").mkdir()
    (cache_repo("acme/tiny-llama") / "refs" / "main").write_text(sha)
    offline = load_model("acme/tiny-llama", online=False)
    assert offline.checkpoint is None and not hub_env.requests()
    online = load_model("acme/tiny-llama", online=True)
    assert online.checkpoint.total_bytes == nbytes(tensors) and online.spec.source == f"hub:acme/tiny-llama@{sha}"


def test_server_that_ignores_range_costs_only_the_header(hub_env):
    tensors = llama_tensors()
    body = safetensors_bytes(tensors)
    hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA), "model.safetensors": body})
    hub_env.fault("^/cdn/", ignore_range=True)
    assert load_model("acme/tiny-llama", online=True).checkpoint.total_bytes == nbytes(tensors)
    # The server pushes the whole file; the client closes after the header, so the count is an upper bound
    # on what was sent, not on what was read. What matters: the numbers are exact anyway.
    assert all(r["range"] for r in hub_env.requests("^/cdn/"))


def test_user_overrides_are_named_in_the_source(hub_env):
    hub_env.add_repo("acme/tiny-llama", {"config.json": config_bytes(TINY_LLAMA),
                                         "model.safetensors": safetensors_bytes(llama_tensors())})
    loaded = load_model("acme/tiny-llama", online=True, overrides={"num_hidden_layers": 3})
    assert loaded.spec.source.endswith("+ user override num_hidden_layers=3") and loaded.spec.num_layers == 3


def test_default_run_stays_offline_and_never_imports_huggingface_hub(tmp_path):
    """No --online, no config: an unknown id fails fast, and huggingface_hub is never imported."""
    script = ("import sys; from kvplan.cli import main; "
              "rc = main(['estimate', 'acme/not-cached']); rc2 = main(['estimate', 'llama-3.1-8b']); "
              "assert 'huggingface_hub' not in sys.modules, 'huggingface_hub imported'; print(rc, rc2)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "KVPLAN_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), XDG_CONFIG_HOME=str(tmp_path / "xdg"), HF_ENDPOINT="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == ["2", "0"]
    assert "pass --online" in proc.stderr


def test_bundled_id_is_bundled_unless_a_revision_is_asked_for(hub_env):
    sha = hub_env.add_repo("meta-llama/Llama-3.1-8B", {"config.json": config_bytes(TINY_LLAMA),
                                                       "model.safetensors": safetensors_bytes(llama_tensors())})
    assert load_model("meta-llama/Llama-3.1-8B", online=True).spec.source.startswith("bundled:")
    assert not hub_env.requests()
    from_hub = load_model("meta-llama/Llama-3.1-8B", online=True, revision="main")
    assert from_hub.spec.source == f"hub:meta-llama/Llama-3.1-8B@{sha}"
    assert from_hub.checkpoint.total_bytes == nbytes(llama_tensors())
