"""Fuzz: hostile config.json dicts and CLI values give a correct result or one KvplanError line.

Contract: `spec_from_config` + `estimate` either succeed with sane integers or raise KvplanError;
any other exception is a bug. Run longer with KVPLAN_FUZZ_PROFILE=nightly.
"""

import json
import math

from fuzzing import count
from hypothesis import given
from hypothesis import strategies as st

from kvplan.cli import main
from kvplan.errors import KvplanError
from kvplan.hardware import find_gpu
from kvplan.plan import Deployment, estimate
from kvplan.model import LoadedModel, spec_from_config
from kvplan.units import parse_count, parse_size

hostile_number = st.one_of(
    st.integers(-5, 10), st.integers(1, 1 << 20), st.integers(1 << 30, 1 << 70), st.floats(allow_nan=True),
    st.booleans(), st.none(), st.text(max_size=5), st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
KEYS = ["num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim",
        "intermediate_size", "vocab_size", "max_position_embeddings", "sliding_window", "use_sliding_window",
        "max_window_layers", "layer_types", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
        "num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size", "n_layer", "n_head",
        "multi_query", "new_decoder_architecture", "num_kv_heads", "attention_chunk_size", "tie_word_embeddings",
        "torch_dtype", "quantization_config", "text_config", "sliding_window_pattern", "full_attention_interval",
        "linear_num_key_heads", "linear_key_head_dim", "linear_num_value_heads", "linear_value_head_dim",
        "linear_conv_kernel_dim", "first_k_dense_replace", "n_routed_experts", "decoder_sparse_step",
        "mlp_only_layers", "attn_config", "no_rope_layers"]
MODEL_TYPES = ["llama", "qwen3", "gemma2", "gemma3_text", "gpt_oss", "deepseek_v3", "qwen3_next", "falcon",
               "mistral", "qwen3_moe", "llama4_text", "jamba", "mamba", "gpt2", "mystery", "", None, 7]

BASE = {"model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
        "hidden_size": 256, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}

configs = st.builds(
    lambda base, mt, changes: {**base, "model_type": mt, **changes},
    st.sampled_from([BASE, {}]), st.sampled_from(MODEL_TYPES),
    st.dictionaries(st.sampled_from(KEYS), hostile_number, max_size=6),
)


def _check_result(spec, gpu_name="H100"):
    est = estimate(LoadedModel(spec), Deployment(gpu=find_gpu(gpu_name), context_tokens=2048, batch=2))
    for key in ("kv_bytes_per_token", "kv_bytes_per_request", "kv_bytes_total"):
        value = getattr(est, key)
        assert isinstance(value, int) and value >= 0, (key, value)
    if est.max_concurrency is not None:
        assert est.max_concurrency >= 0 and not math.isnan(est.max_concurrency)
    json.dumps(est.to_dict(), default=str)


@given(configs)
def test_hostile_configs(cfg):
    count("config.json dicts")
    try:
        spec = spec_from_config(cfg, name="fuzz", source="fuzz")
    except KvplanError as exc:
        assert "\n" not in str(exc)
        return
    try:
        _check_result(spec)
    except KvplanError as exc:
        assert "\n" not in str(exc)


@given(st.one_of(st.text(max_size=12), st.integers(-10, 1 << 62)))
def test_size_strings(text):
    count("size strings")
    try:
        value = parse_size(text)
    except KvplanError:
        return
    assert isinstance(value, int) and value >= 0


@given(st.text(max_size=10))
def test_count_strings(text):
    count("count strings")
    try:
        value = parse_count(text, "--context")
    except KvplanError:
        return
    assert isinstance(value, int) and value >= 1


flag_values = st.one_of(st.text(alphabet="0123456789.-eEkKGiBM x", max_size=8),
                        st.sampled_from(["0", "-1", "1e30", "nan", "inf", "-inf", "1e400", "9" * 400, "1" + "0" * 5000]))


@given(st.sampled_from(["--context", "--batch", "--tp", "--pp", "--gpu-memory", "--kv-cache-memory",
                        "--gpu-memory-utilization", "--block-size", "--max-model-len", "--weights", "--kv-dtype",
                        "--dtype", "--gpu", "--max-num-batched-tokens"]), flag_values)
def test_cli_flag_values(flag, value):
    count("CLI flag values")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["estimate", "qwen3-8b", "--gpu", "H100", flag, value, "--format", "json"]
                    if flag != "--gpu" else ["estimate", "qwen3-8b", flag, value, "--format", "json"])
    assert code in (0, 2), (code, err.getvalue())
    if code == 2:
        assert err.getvalue().count("\n") == 1 and "Traceback" not in err.getvalue()
