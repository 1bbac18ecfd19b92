"""Every bundled spec: exact parameter count and KV bytes/token, and agreement with transformers."""

import pytest

from kvplan.dtypes import kv_format
from kvplan.model import bundled_names, load_model
from kvplan.model.loaders import bundled_entry

SPEC_NAMES = sorted({p.stem for p in bundled_names().values()})


def test_at_least_25_bundled_specs():
    assert len(SPEC_NAMES) >= 25


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_params_and_kv_per_token_exact(name):
    entry = bundled_entry(name)
    spec = load_model(name).spec
    assert spec.params is not None and spec.params.total == entry["params_expected"]
    assert spec.bytes_per_token(kv_format("bf16")) == entry["kv_bytes_per_token_bf16"]


def _independent_kv_per_token(config: dict) -> int:
    """2 x kv_heads x head_dim x 2 B summed over attention layers; MLA latent; DeltaNet layers 0."""
    cfg = config.get("text_config") or config
    if cfg.get("kv_lora_rank"):
        return cfg["num_hidden_layers"] * (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) * 2
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    layers = cfg["num_hidden_layers"]
    if cfg.get("model_type") == "qwen3_next":
        layers = layers // cfg.get("full_attention_interval", 4)
    return layers * 2 * cfg["num_key_value_heads"] * head_dim * 2


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_kv_per_token_independent_formula(name):
    entry = bundled_entry(name)
    assert _independent_kv_per_token(entry["config"]) == entry["kv_bytes_per_token_bf16"]


@pytest.mark.parametrize("alias,name", [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"), ("LLAMA-3.1-8B", "llama-3.1-8b"),
    ("Qwen/Qwen3-8B", "qwen3-8b"), ("openai/gpt-oss-20b", "gpt-oss-20b"),
    ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
])
def test_aliases_resolve(alias, name):
    assert load_model(alias).spec.name == name


# Published facts (shared/reference/models.md) the normalizer must reproduce.
@pytest.mark.parametrize("name,kinds", [
    ("gemma-2-9b", {"full": 21, "sliding": 21}),
    ("gemma-3-4b", {"full": 5, "sliding": 29}),
    ("gemma-3-27b", {"full": 10, "sliding": 52}),
    ("gpt-oss-20b", {"full": 12, "sliding": 12}),
    ("gpt-oss-120b", {"full": 18, "sliding": 18}),
    ("mistral-7b-v0.1", {"sliding": 32}),
    ("qwen2.5-7b", {"full": 28}),  # sliding_window is set but use_sliding_window is false
    ("qwen3-next-80b-a3b", {"full": 12, "state": 36}),
    ("deepseek-v3", {"mla": 61}),
])
def test_layer_kinds(name, kinds):
    spec = load_model(name).spec
    assert {g.kind: g.num_layers for g in spec.groups} == kinds


def test_gemma3_full_layers_are_every_sixth():
    spec = load_model("gemma-3-4b").spec
    full = next(g for g in spec.groups if g.kind == "full")
    assert full.layers == (5, 11, 17, 23, 29)


def test_explicit_head_dim_wins():
    for name, head_dim in (("qwen3-32b", 128), ("gemma-2-9b", 256), ("gpt-oss-20b", 64), ("gemma-3-27b", 128)):
        spec = load_model(name).spec
        assert spec.groups[0].k_head_dim == head_dim, name


def test_qwen3_next_state_bytes_match_reference():
    # 36 DeltaNet layers x (conv 8192 x (4-1) + recurrent 32 x 128 x 128) elements, bf16
    spec = load_model("qwen3-next-80b-a3b").spec
    assert spec.state_bytes(kv_format("bf16")) == 36 * (8192 * 3 + 32 * 128 * 128) * 2


def test_moe_active_params_match_reference():
    expected = {"mixtral-8x7b": 12_879_925_248, "qwen3-235b-a22b": 22_190_763_520}
    for name, active in expected.items():
        assert load_model(name).spec.params.active == active, name
