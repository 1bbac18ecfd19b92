"""Introspection (transformers on the meta device) against the light normalizer, published counts and the cache.

Every bundled spec and every test config under tests/data/configs is read both ways where both
apply; the layer layout (kinds, layer indices, KV shapes, windows, latents, state sizes) and the
parameter split must be identical. Configs that need repository code are compared through the
in-library model transformers has for the same architecture.
"""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from kvplan.cli import main
from kvplan.dtypes import kv_format
from kvplan.errors import InputError, UnsupportedModelError
from kvplan.model import bundled_names, load_model, spec_from_config
from kvplan.model import paths
from kvplan.model.introspect_cache import config_digest, record_path
from kvplan.model.loaders import bundled_entry
from kvplan.model.paths import spec_from_record

pytest.importorskip("transformers")
pytest.importorskip("torch")
from kvplan.model import introspect as introspect_module  # noqa: E402
from kvplan.model.introspect import introspect  # noqa: E402

CONFIGS = Path(__file__).parent / "data" / "configs"
BF16 = kv_format("bf16")
BUNDLED = sorted({p.stem for p in bundled_names().values()})


def _config(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def _introspected(config: dict):
    return spec_from_record(introspect(config, "test"), config, name="t", source="test", hf_id=None,
                            derivation="introspection")


def _layout(spec) -> list:
    return sorted((type(g).__name__, g.layers, tuple(sorted((k, v) for k, v in asdict(g).items() if k != "layers")))
                  for g in spec.groups)


def _text_params(spec) -> dict:
    return {k: v for k, v in asdict(spec.params).items() if k != "multimodal"}


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_spec_light_equals_introspection(name):
    light = load_model(name).spec
    config = bundled_entry(name)["config"]
    seen = _introspected(config)
    assert _layout(seen) == _layout(light)
    assert _text_params(seen) == _text_params(light)
    assert seen.params.total == bundled_entry(name)["params_expected"]
    assert seen.bytes_per_token(BF16) == light.bytes_per_token(BF16)
    assert seen.state_bytes(BF16) == light.state_bytes(BF16)


# Configs of families transformers does not ship (repository code) -> the in-library model of the same architecture.
def _kimi_as_deepseek_v3(cfg):
    return dict(cfg, model_type="deepseek_v3")


def _refinedweb_as_falcon(cfg):
    out = {k: v for k, v in cfg.items() if k not in ("n_head", "n_layer", "n_head_kv")}
    return dict(out, model_type="falcon", num_attention_heads=cfg["n_head"], num_hidden_layers=cfg["n_layer"],
                num_kv_heads=cfg["n_head_kv"], new_decoder_architecture=True)


def _minimax_m1_as_minimax(cfg):
    kinds = ["linear_attention" if t == 0 else "full_attention" for t in cfg["attn_type_list"]]
    return dict(cfg, model_type="minimax", layer_types=kinds)


TRANSLATED = {"kimi-k2-instruct": _kimi_as_deepseek_v3, "falcon-40b-refinedweb": _refinedweb_as_falcon,
              "minimax-m1-80k": _minimax_m1_as_minimax}
LIGHT_COUNTED = sorted(p.stem for p in CONFIGS.glob("*.json")
                       if paths.light_knows(_config(p.stem)) and spec_from_config(_config(p.stem), name="t",
                                                                                  source="t").params is not None)


def test_light_path_counts_the_remote_code_families():
    assert {"kimi-k2-instruct", "falcon-40b-refinedweb", "minimax-m1-80k", "deepseek-moe-16b-base"} <= set(LIGHT_COUNTED)


@pytest.mark.parametrize("name", [n for n in LIGHT_COUNTED if n != "deepseek-moe-16b-base"])
def test_test_config_light_equals_introspection(name):
    config = _config(name)
    light = spec_from_config(config, name="t", source="t")
    seen = _introspected(TRANSLATED.get(name, lambda c: c)(config))
    assert _layout(seen) == _layout(light)
    assert _text_params(seen) == _text_params(light)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.json")
                                        if paths.light_knows(_config(p.stem)) and p.stem not in LIGHT_COUNTED))
def test_light_layout_of_uncounted_families_equals_introspection(name):
    config = _config(name)
    assert _layout(_introspected(config)) == _layout(spec_from_config(config, name="t", source="t"))


# Published totals, to the precision they are published in (model cards, papers); params include embeddings.
PUBLISHED = {
    "deepseek-moe-16b-base": (16.4e9, 2.8e9, 0.05e9),  # DeepSeekMoE paper: 16.4B total, 2.8B activated
    "minimax-m1-80k": (456e9, None, 0.5e9),  # MiniMax-M1 card: 456B total
    "jamba-v0.1": (52e9, 12e9, 0.5e9),  # AI21: 52B total, 12B active
    "falcon-7b": (6.92e9, None, 0.005e9),  # HF safetensors count 6.92B
    "c4ai-command-r-v01": (35e9, None, 0.05e9),  # Cohere: 35B
    "c4ai-command-r7b-12-2024": (8.03e9, None, 0.005e9),  # HF safetensors count 8.03B
    "qwen3-vl-30b-a3b": (31.1e9, None, 0.05e9),  # HF safetensors count 31.1B (text + vision)
    "llama-4-scout-17b-16e": (109e9, 17e9, 0.5e9),  # Meta: 109B total (with vision), 17B active
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_figure(name):
    spec = load_model(str(CONFIGS / f"{name}.json")).spec
    total, active, tolerance = PUBLISHED[name]
    counted = spec.params.total + (spec.params.multimodal if name in ("qwen3-vl-30b-a3b", "llama-4-scout-17b-16e")
                                   else 0)
    assert abs(counted - total) <= tolerance, (name, counted)
    if active is not None:
        # published active counts leave out the input embedding (and often lm_head): allow both matrices
        embeddings = spec.params.embedding + spec.params.lm_head
        assert active - tolerance <= spec.params.active <= active + embeddings + tolerance, (name, spec.params.active)


# --- the state and KV figures of the families the issue names ------------------------------------

@pytest.mark.parametrize("name,kv_per_token,state", [
    # 10 softmax layers x 2 x 8 x 128 x 2 B; 70 lightning layers x 64 heads x 128 x 128
    ("minimax-m1-80k", 10 * 2 * 8 * 128 * 2, 70 * 64 * 128 * 128 * 2),
    # 44 layers of attention beside Mamba-2: conv (3072 + 2 x 256) x (4-1), ssm 24 heads x 128 x 256
    ("falcon-h1-7b", 44 * 2 * 2 * 128 * 2, 44 * ((3072 + 2 * 256) * 3 + 24 * 128 * 256) * 2),
    # 4 attention layers of 32; 28 Mamba layers: conv 8192 x 3, ssm 8192 x 16
    ("jamba-v0.1", 4 * 2 * 8 * 128 * 2, 28 * (8192 * 3 + 8192 * 16) * 2),
    # 10 gated-attention layers; 30 Gated DeltaNet layers: conv (2x16x128 + 32x128) x 3, 32 v-heads x 128 x 128
    ("qwen3.5-35b-a3b", 10 * 2 * 2 * 256 * 2, 30 * ((2 * 16 * 128 + 32 * 128) * 3 + 32 * 128 * 128) * 2),
    ("llama-4-scout-17b-16e", 48 * 2 * 8 * 128 * 2, 0),
    ("c4ai-command-r7b-12-2024", 32 * 2 * 8 * 128 * 2, 0),
    ("glm-4.7-flash", 47 * 576 * 2, 0),
    ("starcoder", 40 * 2 * 1 * 128 * 2, 0),
    # 20 layers own KV (16 sliding, 4 full); the last 15 reuse earlier layers' KV and hold none
    ("gemma-3n-e4b", 20 * 2 * 2 * 256 * 2, 0),
    # DSA: the MLA latent (bf16) plus the indexer key engines keep in fp8 with one fp32 scale per 128
    ("deepseek-v3.2-exp", 61 * (576 * 2 + 128 + 4), 0),
])
def test_kv_and_state_bytes(name, kv_per_token, state):
    spec = load_model(str(CONFIGS / f"{name}.json")).spec
    assert spec.bytes_per_token(BF16) == kv_per_token
    assert spec.state_bytes(BF16) == state


def test_steady_state_caps_windows_and_chunks():
    # Llama 4 Scout at 32k: 12 global layers keep every token, 36 chunked layers one chunk of 8192
    spec = load_model(str(CONFIGS / "llama-4-scout-17b-16e.json")).spec
    per_layer = 2 * 8 * 128 * 2
    assert spec.bytes_per_request(32768, BF16) == per_layer * (12 * 32768 + 36 * 8192)
    # Cohere2 at 8k: 8 full layers, 24 sliding layers of 4096
    spec = load_model(str(CONFIGS / "c4ai-command-r7b-12-2024.json")).spec
    assert spec.bytes_per_request(8192, BF16) == per_layer * (8 * 8192 + 24 * 4096)


def test_falcon_new_decoder_caches_its_kv_heads_not_the_broadcast():
    # transformers' Falcon broadcasts 8 KV heads to 128 before caching; engines cache 8
    spec = _introspected(_config("falcon-40b"))
    assert {g.num_kv_heads for g in spec.groups} == {8}


def test_vision_tower_counted_apart():
    spec = load_model(str(CONFIGS / "qwen3-vl-30b-a3b.json")).spec
    assert spec.params.multimodal > 0 and spec.params.total == 30_532_122_624


def test_a_tower_transformers_cannot_build_leaves_the_text_model_and_a_note():
    # Gemma 3n's vision tower needs timm; the text model is built and the note says what is missing
    timm_missing = __import__("importlib").util.find_spec("timm") is None
    spec = load_model(str(CONFIGS / "gemma-3n-e4b.json")).spec
    assert spec.num_layers == 35 and sum(g.num_layers for g in spec.groups) == 20
    assert any("only the text model was built" in n for n in spec.notes) == timm_missing


def test_towers_are_counted_apart_and_only_when_the_config_describes_them():
    config = bundled_entry("gemma-3-4b")["config"]
    # SigLIP so400m at 896 px: patch conv 3x14x14 -> 1152 (+ bias), 64 x 64 = 4096 positions, 27 layers of
    # q/k/v/o 1152 x 1152 with biases, MLP 1152 <-> 4304 with biases, two LayerNorms; a final LayerNorm.
    h, inter = 1152, 4304
    layer = 4 * (h * h + h) + (h * inter + inter) + (inter * h + h) + 2 * 2 * h
    vision = (3 * 14 * 14 * h + h) + 4096 * h + 27 * layer + 2 * h
    projector = h * 2560 + h  # Gemma 3's projection into the 2560-wide text model and its soft-embedding norm
    assert _introspected(config).params.multimodal == vision + projector == 419_816_304
    # without a vision_config a default SigLIP would be fiction
    assert _introspected({k: v for k, v in config.items() if k != "vision_config"}).params.multimodal == 0


def test_vllm_loads_an_introspected_tower_once():
    """vLLM's load extras count a SigLIP tower from vision_config (the light path's weights leave it out); an
    introspected spec already holds it in its weights, so the term is not added twice. Both counts agree."""
    from kvplan.plan import Deployment
    from kvplan.plan.policies.vllm_load_extras import vision_encoder_params
    from kvplan.plan.policies.vllm_overhead import load_extra_terms

    config = bundled_entry("gemma-3-4b")["config"]
    assert vision_encoder_params(config) == _introspected(config).params.multimodal == 419_816_304
    dep = Deployment(tp=1)
    light_terms = {t.name: t.bytes for t in load_extra_terms(load_model("gemma-3-4b").spec, config, dep, 2)}
    assert light_terms["vision encoder"] == 419_816_304 * 2
    assert "vision encoder" not in {t.name for t in load_extra_terms(_introspected(config), config, dep, 2)}


# --- provenance, cache, and the path without transformers ----------------------------------------

def test_provenance_names_the_path(capsys):
    path = CONFIGS / "c4ai-command-r7b-12-2024.json"
    assert main(["estimate", str(path), "--format", "json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["estimate", str(path), "--format", "json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["model_derivation"].startswith("introspection (cached")
    assert first["model_derivation"].startswith("introspection")
    assert first["kv_bytes_per_token"] == second["kv_bytes_per_token"]
    assert main(["estimate", "llama-3.1-8b", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_derivation"] == "bundled spec (light normalizer)"


def test_cached_run_imports_neither_torch_nor_transformers():
    path = CONFIGS / "starcoder2-15b.json"
    assert main(["estimate", str(path), "--format", "json"]) == 0  # fills the cache (KVPLAN_CACHE_DIR, conftest)
    assert record_path(config_digest(_config("starcoder2-15b"))).is_file()
    code = ("import sys\n"
            "from kvplan.cli import main\n"
            f"rc = main(['estimate', {str(path)!r}, '--format', 'json'])\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert rc == 0 and not heavy, (rc, heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "introspection (cached" in done.stdout


def test_a_corrupt_cache_record_is_ignored():
    config = _config("starcoder")
    record = record_path(config_digest(config))
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text('{"format": 1, "layers": [[{"kind": "full", "num_kv_heads": -3}]]}')
    spec = paths.spec_for_config(config, name="t", source="t")
    assert spec.derivation.startswith("introspection (transformers") and spec.params.total == 15_517_456_384


def test_without_transformers_an_unknown_family_is_refused_with_the_way_out(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(paths, "introspection_available", lambda: False)
    config = dict(_config("c4ai-command-r7b-12-2024"), num_hidden_layers=31)  # a digest no test has cached
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown architecture 'cohere2'" in err and "kvplan[introspect]" in err and "--weights" in err


def test_without_transformers_a_known_family_keeps_its_layout_and_says_how_to_get_weights(monkeypatch):
    monkeypatch.setattr(paths, "introspection_available", lambda: False)
    config = dict(_config("jamba-v0.1"), vocab_size=65537)
    spec = paths.spec_for_config(config, name="t", source="t")
    assert spec.params is None and any("kvplan[introspect]" in n and "--weights" in n for n in spec.notes)
    assert spec.state_bytes(BF16) == 28 * (8192 * 3 + 8192 * 16) * 2


def test_allow_unknown_arch_sizes_attn_type_list_configs_exactly():
    # was 8x too high with no state: every layer sized as softmax attention
    config = dict(_config("minimax-m1-80k"), model_type="minimax_next")
    spec = spec_from_config(config, name="t", source="t", allow_unknown=True)
    assert spec.bytes_per_token(BF16) == 10 * 2 * 8 * 128 * 2
    assert spec.state_bytes(BF16) == 70 * 64 * 128 * 128 * 2


def test_configs_transformers_cannot_build_are_refused_by_name():
    config = {"model_type": "definitely_not_a_model", "num_hidden_layers": 2}
    with pytest.raises(UnsupportedModelError, match="definitely_not_a_model"):
        paths.spec_for_config(config, name="t", source="t")


def test_implausible_layer_counts_are_refused_before_building():
    config = dict(_config("starcoder2-15b"), num_hidden_layers=1_000_000)
    with pytest.raises(InputError, match="implausibly large"):
        introspect(config, "test")


def test_introspection_runs_offline_and_restores_the_environment(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = {}
    real = introspect_module._hf_config

    def spy(config, where, transformers):
        seen["offline"] = os.environ.get("HF_HUB_OFFLINE")
        return real(config, where, transformers)

    monkeypatch.setattr(introspect_module, "_hf_config", spy)
    introspect(_config("starcoder"), "test")
    assert seen["offline"] == "1" and "HF_HUB_OFFLINE" not in os.environ
