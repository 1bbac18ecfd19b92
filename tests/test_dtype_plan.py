"""Which formats weights are stored and computed in, whatever way the user spells it."""

import json

import pytest

from kvplan.dtypes import kv_format
from kvplan.hardware import find_gpu
from kvplan.plan import Deployment, estimate
from kvplan.plan.dtype_plan import dtype_plan
from kvplan.model import load_model, spec_from_config

GPT_OSS_CHECKPOINT_BYTES = 13_761_264_768  # MXFP4 experts + bf16 rest (tests/test_estimate_models.py)


def est(name, **dep):
    return estimate(load_model(name), Deployment(**dep))


@pytest.mark.parametrize("spelling", [None, "auto", "AUTO"])
def test_auto_means_the_checkpoint(spelling):
    assert est("gpt-oss-20b", weight_dtype=spelling).weights_bytes == GPT_OSS_CHECKPOINT_BYTES
    assert est("deepseek-v3", weight_dtype=spelling).weights_dtype == "fp8"


@pytest.mark.parametrize("spelling", ["bf16", "bfloat16", "BF16", "float16", "half", "fp16"])
def test_float_dtype_on_a_quantized_checkpoint_sets_compute_only(spelling):
    e = est("gpt-oss-20b", weight_dtype=spelling)
    assert e.weights_bytes == GPT_OSS_CHECKPOINT_BYTES and e.weights_dtype == "mxfp4"
    assert e.kv_dtype in ("bf16", "fp16") and any("stay as stored" in n for n in e.notes)


def test_spellings_of_the_checkpoint_dtype_keep_exact_checkpoint_bytes(tmp_path):
    from test_safetensors_weights import CONFIG, write_safetensors

    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    size = write_safetensors(tmp_path / "model.safetensors", {"w": ("BF16", [100, 64], 2)})
    for spelling in ("bf16", "bfloat16", "BF16", "auto", None):
        e = estimate(load_model(str(tmp_path)), Deployment(weight_dtype=spelling))
        assert e.weights_bytes == size and "safetensors" in e.weights_basis, spelling


def test_vllm_serve_dtype_half_keeps_awq_weights(tmp_path, capsys):
    from kvplan.cli import main

    cfg = dict(load_model("llama-3.1-8b").config, quantization_config={"quant_method": "awq", "bits": 4},
               torch_dtype="float16")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    plain = est(str(tmp_path), gpu=find_gpu("L4"), max_model_len=8192)
    code = main(["estimate", "--vllm-args", f"vllm serve {tmp_path} --dtype half --max-model-len 8192", "--gpu", "L4",
                 "--engine", "generic", "-f", "json"])
    served = json.loads(capsys.readouterr().out)
    assert code == 0 and served["weights_bytes"] == plain.weights_bytes < 6 * 10**9


def test_recurrent_state_stays_in_the_compute_dtype():
    spec = load_model("qwen3-next-80b-a3b").spec
    bf16_state = 36 * (8192 * 3 + 32 * 128 * 128) * 2
    for kv in ("auto", "bf16", "fp8", "int4", "fp32", "int8"):
        assert spec.state_bytes(kv_format(kv, "bf16")) == bf16_state, kv
    assert est("qwen3-next-80b-a3b", kv_dtype="fp8", context_tokens=4096).state_bytes_per_request == bf16_state


def _quant_spec(quant, torch_dtype="bfloat16"):
    cfg = {"model_type": "qwen2", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "hidden_size": 64, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 256,
           "torch_dtype": torch_dtype, "quantization_config": quant}
    return spec_from_config(cfg, name="q", source="test")


@pytest.mark.parametrize("quant,storage", [
    ({"quant_method": "awq", "bits": 4}, "awq"),
    ({"quant_method": "gptq", "bits": 4}, "gptq"),
    ({"quant_method": "gptq", "bits": 8}, "int8"),
    ({"quant_method": "gptq", "bits": 3}, "unknown:gptq 3-bit"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "fp8"),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4", "kv_cache_quant_algo": "FP8"}, "nvfp4"),
    ({"quant_method": "modelopt", "quant_algo": "FP8"}, "fp8"),
    ({"quant_method": "compressed-tensors",
      "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}, "fp8"),
    ({"quant_method": "compressed-tensors",
      "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int"}}}}, "int4"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "unknown:bitsandbytes"),
])
def test_quantization_config_detection(quant, storage):
    assert _quant_spec(quant).weight_dtype == storage


def test_unknown_quantization_leaves_weights_out_instead_of_guessing():
    from kvplan.plan.weights import weight_bytes
    from kvplan.model import LoadedModel

    spec = _quant_spec({"quant_method": "bitsandbytes", "load_in_4bit": True})
    weights = weight_bytes(LoadedModel(spec), None, None)
    assert weights.total_bytes is None and "bitsandbytes" in weights.basis
    assert dtype_plan(spec, None).compute == "bf16"
