"""config.json normalization: aliases, MQA flags, nesting, window patterns, MLA, hybrids, errors."""

import json

import pytest

from kvplan.dtypes import kv_format
from kvplan.errors import InputError, UnsupportedModelError
from kvplan.model import load_model, spec_from_config

BF16 = kv_format("bf16")


def _spec(**cfg):
    return spec_from_config(cfg, name="t", source="test")


def _kinds(spec):
    return {g.kind: g.num_layers for g in spec.groups}


def test_gpt2_aliases_are_mha():
    s = _spec(model_type="gpt2", n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
    assert s.num_layers == 12 and s.groups[0].num_kv_heads == 12 and s.groups[0].k_head_dim == 64
    assert s.max_position_embeddings == 1024


def test_gpt_bigcode_multi_query_is_one_kv_head():
    s = _spec(model_type="gpt_bigcode", n_layer=40, n_head=48, n_embd=6144, multi_query=True)
    assert s.groups[0].num_kv_heads == 1
    assert s.bytes_per_token(BF16) == 40 * 2 * 1 * 128 * 2


def test_falcon_7b_multi_query_default():
    s = _spec(model_type="falcon", num_hidden_layers=32, num_attention_heads=71, hidden_size=4544)
    assert s.groups[0].num_kv_heads == 1 and s.groups[0].k_head_dim == 64


def test_falcon_40b_new_decoder_architecture():
    s = _spec(model_type="falcon", num_hidden_layers=60, num_attention_heads=128, hidden_size=8192,
              new_decoder_architecture=True, num_kv_heads=8)
    assert s.groups[0].num_kv_heads == 8


def test_refinedweb_legacy_keys():
    s = _spec(model_type="falcon", n_layer=60, n_head=128, hidden_size=8192, n_head_kv=8, new_decoder_architecture=True)
    assert s.num_layers == 60 and s.groups[0].num_kv_heads == 8


def test_mpt_attn_config_kv_heads():
    s = _spec(model_type="mpt", n_layers=32, n_heads=32, d_model=4096, attn_config={"kv_n_heads": 8})
    assert s.groups[0].num_kv_heads == 8


def test_explicit_head_dim_beats_hidden_over_heads():
    s = _spec(model_type="qwen3", num_hidden_layers=64, num_attention_heads=64, num_key_value_heads=8,
              hidden_size=5120, head_dim=128)
    assert s.groups[0].k_head_dim == 128  # not 5120 / 64 = 80


def test_mistral_head_dim_null_falls_back():
    s = _spec(model_type="mistral", num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
              hidden_size=4096, head_dim=None, sliding_window=4096)
    assert s.groups[0].k_head_dim == 128 and _kinds(s) == {"sliding": 32}


def test_qwen_max_window_layers_slide_above():
    s = _spec(model_type="qwen2", num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
              hidden_size=3584, use_sliding_window=True, sliding_window=4096, max_window_layers=20)
    full = next(g for g in s.groups if g.kind == "full")
    assert full.layers == tuple(range(20)) and _kinds(s) == {"full": 20, "sliding": 8}


def test_gemma2_pattern_even_layers_slide():
    s = _spec(model_type="gemma2", num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
              hidden_size=512, head_dim=64, sliding_window=128)
    sliding = next(g for g in s.groups if g.kind == "sliding")
    assert sliding.layers == (0, 2)


def test_llama4_chunked_attention():
    s = _spec(model_type="llama4_text", num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
              hidden_size=5120, head_dim=128, attention_chunk_size=8192)
    assert _kinds(s) == {"full": 12, "chunked": 36}
    assert s.bytes_per_request(100_000, BF16) == 12 * 2 * 8 * 128 * 2 * 100_000 + 36 * 2 * 8 * 128 * 2 * 8192


def test_layer_types_list_is_used():
    types = ["sliding_attention", "full_attention"] * 2
    s = _spec(model_type="gpt_oss", num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
              hidden_size=256, head_dim=64, sliding_window=128, layer_types=types)
    assert _kinds(s) == {"full": 2, "sliding": 2}


def test_nested_text_config():
    cfg = {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "num_hidden_layers": 34,
                                                   "hidden_size": 2560, "sliding_window": 1024}}
    s = spec_from_config(cfg, name="g", source="t")
    # heads 8 / KV heads 4 / head_dim 256 / pattern 6 come from Gemma3TextConfig defaults
    assert _kinds(s) == {"full": 5, "sliding": 29} and s.groups[0].num_kv_heads == 4 and s.groups[0].k_head_dim == 256


def test_mla_with_unknown_model_type():
    s = _spec(model_type="brand_new_mla", num_hidden_layers=10, num_attention_heads=16, hidden_size=2048,
              kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128)
    assert _kinds(s) == {"mla": 10}
    assert s.bytes_per_token(BF16) == 10 * 576 * 2


def test_jamba_hybrid_state_and_attention():
    s = _spec(model_type="jamba", num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
              hidden_size=4096, attn_layer_period=8, attn_layer_offset=4, mamba_expand=2, mamba_d_state=16,
              mamba_d_conv=4)
    assert _kinds(s) == {"full": 4, "state": 28}
    assert s.state_bytes(BF16) == 28 * (8192 * 3 + 8192 * 16) * 2


def test_unknown_architecture_fails_closed():
    with pytest.raises(UnsupportedModelError, match="unknown architecture 'mystery'"):
        _spec(model_type="mystery", num_hidden_layers=2, num_attention_heads=2, hidden_size=64)


def test_unknown_architecture_allowed_with_override():
    s = spec_from_config({"model_type": "mystery", "num_hidden_layers": 2, "num_attention_heads": 2,
                          "hidden_size": 64}, name="m", source="t", allow_unknown=True)
    assert s.bytes_per_token(BF16) == 2 * 2 * 2 * 32 * 2


@pytest.mark.parametrize("cfg,message", [
    ({"model_type": "llama", "num_attention_heads": 8, "hidden_size": 64}, "num_hidden_layers"),
    ({"model_type": "llama", "num_hidden_layers": 0, "num_attention_heads": 8, "hidden_size": 64}, "positive"),
    ({"model_type": "llama", "num_hidden_layers": -2, "num_attention_heads": 8, "hidden_size": 64}, "non-negative"),
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 3,
      "hidden_size": 64}, "not a multiple"),
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 7, "hidden_size": 64}, "not divisible"),
    ({"model_type": "llama", "num_hidden_layers": "32", "num_attention_heads": 8, "hidden_size": 64}, "integer"),
    ({"model_type": "llama", "num_hidden_layers": 2.5, "num_attention_heads": 8, "hidden_size": 64}, "integer"),
    ({"model_type": "llama", "num_hidden_layers": float("nan"), "num_attention_heads": 8, "hidden_size": 64}, "integer"),
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8}, "head_dim"),
])
def test_bad_configs_raise_one_line_input_errors(cfg, message):
    with pytest.raises(InputError, match=message) as info:
        _spec(**cfg)
    assert "\n" not in str(info.value)


def test_config_file_and_directory_loading(tmp_path):
    cfg = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "hidden_size": 64, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 512}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    by_dir = load_model(str(tmp_path))
    by_file = load_model(str(tmp_path / "config.json"))
    assert by_dir.spec.bytes_per_token(BF16) == by_file.spec.bytes_per_token(BF16) == 2 * 2 * 2 * 16 * 2


def test_malformed_json_is_one_line_error(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_model(str(bad))


COMMIT = "0123456789abcdef0123456789abcdef01234567"  # refs hold a 40-hex commit


def test_local_hf_cache_is_found_offline(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 3,
                                                  "num_attention_heads": 4, "hidden_size": 64}))
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    loaded = load_model("acme/tiny")
    assert loaded.spec.num_layers == 3 and loaded.spec.source.startswith("cache:")
