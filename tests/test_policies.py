"""Engine policies: registry and versions, vLLM layout rules, SGLang and TensorRT-LLM pools from published logs,
transformers' cache sizing against transformers' own memory handler."""

from fractions import Fraction

import pytest

from kvplan.dtypes import kv_format
from kvplan.errors import InputError, UnsupportedModelError
from kvplan.hardware import find_gpu
from kvplan.plan import Deployment, estimate
from kvplan.plan.policies import engine_names, get_policy
from kvplan.plan.policies.sglang import kv_pool_sizes_gib, max_total_num_tokens, rest_bytes
from kvplan.plan.policies.trtllm import kv_budget_from_free, primary_pool_blocks
from kvplan.model import FullAttention, ModelSpec, SlidingWindow, load_model, spec_from_numbers
from kvplan.model.loaders import LoadedModel
from kvplan.units import GiB, MiB

BF16 = kv_format("bf16")


def est(model, **kw):
    loaded = load_model(model) if isinstance(model, str) else LoadedModel(model)
    return estimate(loaded, Deployment(**kw))


# --- registry and versions ---

def test_every_engine_is_registered():
    assert {"generic", "vllm", "sglang", "trtllm", "transformers"} <= set(engine_names())


@pytest.mark.parametrize("text,version", [("vllm", "0.11"), ("vllm@v0", "v0"), ("vllm@0.6.3", "v0"),
                                          ("vllm@0.8.3", "0.8.0"), ("vllm@0.8.5", "0.8.4"), ("vllm@0.9.1", "0.8.4"),
                                          ("vllm@0.9.2", "0.11"), ("vllm@0.10.1.1", "0.11"),
                                          ("vllm@0.1.dev7548+gbaba038", "0.11"), ("trtllm@pytorch", "1.0"),
                                          ("trtllm", "0.13"), ("sglang@0.5.2", "0.5")])
def test_versions_resolve_to_modelled_semantics(text, version):
    assert get_policy(text).version == version


@pytest.mark.parametrize("text", ["vllm@banana", "generic@1.0", "sglang@0.4", "nosuch"])
def test_bad_engine_or_version_is_one_line_input_error(text):
    with pytest.raises(InputError):
        get_policy(text)


def test_generic_output_unchanged_and_without_engine_report():
    e = est("llama-3.1-8b", kv_cache_memory_bytes=10 * GiB, max_model_len=8192)
    assert e.engine_report is None
    assert e.num_blocks == 10 * GiB // (131072 * 16)  # 2 MiB blocks: 5,120
    assert e.kv_cache_tokens == 5120 * 16


def test_vllm_budget_without_kv_cache_memory_is_the_overhead_model():
    gpu = find_gpu("H100")
    generic, vllm = est("llama-3.1-8b", gpu=gpu), est("llama-3.1-8b", gpu=gpu, engine="vllm")
    assert vllm.kv_budget_bytes == generic.kv_budget_bytes
    assert vllm.engine_report["lines"][0] == f"Available KV cache memory: {vllm.kv_budget_bytes / GiB:.2f} GiB"


# --- vLLM layout ---

def _hybrid(sliding: int, full: int, window=128) -> ModelSpec:
    layers = list(range(sliding + full))
    return ModelSpec("hybrid", "test", (SlidingWindow(tuple(layers[:sliding]), 8, 64, 64, window),
                                        FullAttention(tuple(layers[sliding:]), 8, 64, 64)), sliding + full)


@pytest.mark.parametrize("sliding,full,sizes", [
    (12, 12, [12, 12]),  # gpt-oss-20b: one group per kind
    (12, 13, [12, 13]),  # within 1.5x: group size 13, the sliding group padded by one
    (29, 5, [5, 5, 5, 5, 5, 4, 5]),  # Gemma 3: group size 5, six sliding groups
    (20, 30, [20, 15, 15]),  # 1.5x exactly: the smaller count is the group size
])
def test_vllm_hybrid_groups(sliding, full, sizes):
    policy = get_policy("vllm").bind(spec := _hybrid(sliding, full))
    groups = policy.kv_groups(spec, BF16, Deployment())
    assert [len(g.layers) for g in groups] == sizes


def test_vllm_sliding_window_blocks_per_request():
    policy = get_policy("vllm").bind(spec := _hybrid(12, 12, window=128))
    groups = policy.kv_groups(spec, BF16, Deployment(max_num_batched_tokens=8192))
    # full: cdiv(131072, 16) = 8192; sliding: cdiv(min(127 + 8192, 131072), 16) + 1 = 521
    assert policy.request_blocks(groups, 131072, Deployment(max_num_batched_tokens=8192)) == 8192 + 521
    assert policy.request_blocks(groups, 100, Deployment(max_num_batched_tokens=8192)) == 7 + 8


@pytest.mark.parametrize("gpu,block", [("H100", 64), ("H200", 64), ("B200", 128), ("L4", 16), ("A100-80GB", 16)])
def test_vllm_mla_block_size_follows_the_attention_backend(gpu, block):
    spec = load_model("deepseek-v2-lite").spec
    assert get_policy("vllm").block_size(spec, Deployment(gpu=find_gpu(gpu))) == block


def test_vllm_tp_beyond_kv_heads_replicates_one_head():
    spec = spec_from_numbers(32, 8, 128, 32)
    policy = get_policy("vllm").bind(spec)
    assert policy.block_bytes(spec, BF16, Deployment(tp=16)) == 2 * 1 * 128 * 2 * 16 * 32


def test_vllm_rejects_kv_dtypes_it_does_not_offer():
    with pytest.raises(InputError, match="vLLM has no --kv-cache-dtype int8"):
        est("llama-3.1-8b", engine="vllm", kv_dtype="int8", kv_cache_memory_bytes=GiB)


def test_vllm_refusal_reaches_the_verdict():
    e = est("llama-3.1-8b", engine="vllm", kv_cache_memory_bytes=2 * GiB, max_model_len=65536)
    # 65,536 tokens x 128 KiB = 8 GiB > 2 GiB; largest fit: 2 GiB / 2 MiB per block = 1,024 blocks = 16,384 tokens
    assert e.fits is False and "refuse" in e.verdict
    assert e.engine_report["refusal"].endswith("the largest max_model_len that fits is 16384")


def test_vllm_state_layers_fail_closed():
    with pytest.raises(UnsupportedModelError):
        est("qwen3-next-80b-a3b", engine="vllm", kv_cache_memory_bytes=10 * GiB, max_model_len=4096)


# --- SGLang 0.5 (profile_max_num_token) ---

def test_sglang_pool_from_published_log_pr18263():
    """https://github.com/sgl-project/sglang/pull/18263: Qwen3-30B-A3B, bf16, mem_fraction_static 0.911."""
    spec = load_model("qwen3-30b-a3b").spec
    policy = get_policy("sglang")
    cell = policy.cell_bytes(spec, BF16, Deployment())
    assert cell == 48 * 4 * (128 + 128) * 2  # 98,304 B
    # "avail mem=230.20 GB, mem usage=56.98 GB" -> before = 287.18; the PR printed the stock rest: 219721119039 B
    rest = rest_bytes(int(Fraction("287.18") * GiB), int(Fraction("230.20") * GiB), 0.911)
    assert abs(rest - 219721119039) <= 0.01 * GiB  # both readings printed to 0.01 GiB
    # the PR sized its pool from "candidate_kv_budget 164149629787": #tokens 1669816
    assert max_total_num_tokens(164149629787, cell) == 1669816
    sizes = kv_pool_sizes_gib(spec, 1669816, 1, BF16, 1)
    assert f"{sizes['k_size_gib']:.2f}" == f"{sizes['v_size_gib']:.2f}" == "76.44"


def test_sglang_k_size_from_published_log_vllm21348():
    """https://github.com/vllm-project/vllm/issues/21348: Qwen3-235B-A22B-FP8, --tp 4: #tokens 367404, K size 8.23 GB."""
    spec = load_model("qwen3-235b-a22b").spec
    assert get_policy("sglang").cell_bytes(spec, BF16, Deployment(tp=4)) == 94 * 1 * 256 * 2
    sizes = kv_pool_sizes_gib(spec, 367404, 1, BF16, 4)
    assert f"{sizes['k_size_gib']:.2f}" == "8.23"


def test_sglang_budget_is_fraction_of_free_memory_minus_weights():
    gpu = find_gpu("H100")
    e = est("llama-3.1-8b", gpu=gpu, engine="sglang", gpu_memory_utilization=0.88, max_model_len=8192)
    free_before = gpu.memory_bytes - 256 * MiB  # the generic single-GPU CUDA context term
    assert e.kv_budget_bytes == int(free_before - e.weights_bytes_per_gpu - free_before * (1 - 0.88))
    assert e.kv_cache_tokens == e.kv_budget_bytes // 131072
    assert e.engine_report["lines"][1] == f"max_total_num_tokens={e.kv_cache_tokens}"


def test_sglang_sliding_window_split():
    spec = _hybrid(12, 12)
    e = estimate(LoadedModel(spec), Deployment(engine="sglang", kv_cache_memory_bytes=GiB, max_model_len=4096))
    all_layers = GiB // (24 * 8 * 128 * 2)  # tokens if every layer kept every token
    full = int(all_layers * 24 / (0.8 * 12 + 12))
    assert e.kv_cache_tokens == full and e.engine_report["figures"]["swa_tokens"] == int(full * 0.8)


# --- TensorRT-LLM ---

def test_trtllm_primary_pool_from_published_log_2268():
    """https://github.com/NVIDIA/TensorRT-LLM/issues/2268 (engine 0.13.0.dev): Qwen1.5-7B (32 layers, 32 KV heads x
    128, fp16), "available: 21.89 GiB" -> "Number of blocks in KV cache primary pool: 631" with 64 tokens per block."""
    spec = spec_from_numbers(32, 32, 128, 32)
    policy = get_policy("trtllm@0.13")
    assert policy.token_bytes(spec, kv_format("fp16"), Deployment()) == 2 * 32 * 32 * 128 * 2
    for free_gib in ("21.885", "21.89", "21.8949"):  # the whole rounding interval of the printed value
        budget = kv_budget_from_free(int(Fraction(free_gib) * GiB), 0.9)
        pool = policy.pool(spec, budget, kv_format("fp16"), Deployment(engine="trtllm@0.13"))
        assert (pool.num_blocks, pool.block_size) == (631, 64)


def test_trtllm_rounds_tokens_up_to_whole_blocks_issue_224():
    """https://github.com/NVIDIA/TensorRT-LLM/issues/224 (0.5): Llama-2-7B, 16 tokens per block, fraction 0.95:
    "Using 10718 tokens in paged KV cache", which the maintainers say is rounded up to whole blocks when allocated."""
    per_token = 2 * 32 * 32 * 128 * 2  # Llama-2-7B, fp16
    budget = 10718 * per_token + per_token // 2  # any budget whose token count is 10,718
    assert budget // per_token == 10718
    assert primary_pool_blocks(budget, per_token, 16) == 670  # 10,720 tokens allocated


def test_trtllm_estimate_lines_and_pytorch_backend_block():
    e = est("llama-3.1-8b", engine="trtllm", kv_cache_memory_bytes=10 * GiB, max_model_len=8192)
    tokens = 10 * GiB // 131072
    assert e.num_blocks == -(-tokens // 64) and e.kv_cache_tokens == e.num_blocks * 64
    assert e.engine_report["lines"][0] == f"Number of blocks in KV cache primary pool: {e.num_blocks}"
    assert est("llama-3.1-8b", engine="trtllm@pytorch", kv_cache_memory_bytes=10 * GiB).block_size == 32


# --- transformers 5.23 continuous batching, against transformers' own PagedAttentionMemoryHandler ---

@pytest.mark.parametrize("model,flash,logits_to_keep,available_gib", [
    ("llama-3.1-8b", False, True, 60), ("llama-3.1-8b", True, False, 20), ("gpt-oss-20b", False, True, 40),
    ("gemma-2-9b", True, True, 30)])
def test_transformers_sizing_matches_transformers(monkeypatch, model, flash, logits_to_keep, available_gib):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from math import lcm

    from transformers import AutoConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching import cache as tf_cache

    from kvplan.plan.policies.transformers import CBSettings, plan_cache
    from kvplan.model.loaders import bundled_entry

    raw = dict(bundled_entry(model)["config"])
    raw = dict(raw.get("text_config") or raw) if "text_config" in raw and model.startswith("gemma-3") else raw
    config = AutoConfig.for_model(raw.pop("model_type"), **{k: v for k, v in raw.items() if k != "architectures"})
    if flash:
        config._attn_implementation = "flash_attention_2"
    total, allocated = 80 * GiB, 80 * GiB - int(available_gib * GiB / 0.9)
    monkeypatch.setattr(tf_cache, "get_device_and_memory_breakdown",
                        lambda: (torch.device("cpu"), total, allocated, allocated))
    cb = ContinuousBatchingConfig(page_size=256, max_batch_tokens=8192, max_memory_percent=0.9,
                                  max_blocks_per_request=32, max_requests_per_batch=1024, use_async_batching=False)
    kv_heads = tf_cache.find_num_key_value_heads(config)
    allocators = [tf_cache.ATTN_TYPE_TO_ALLOCATOR[t](index=i, config=config, num_key_value_heads=kv_heads,
                                                     cache_dtype=torch.bfloat16, page_size=256, layer_indices=idx,
                                                     allow_block_sharing=True)
                  for i, (t, idx) in enumerate(tf_cache.group_layers_by_attn_type(config).items())]
    bytes_per_sector = lcm(*(a.bytes_per_block for a in allocators), 128)
    tokens_per_sector = max(bytes_per_sector // a.bytes_per_block * a.tokens_per_page for a in allocators)
    handler = tf_cache.PagedAttentionMemoryHandler(
        config=config, cb_config=cb, dtype=torch.bfloat16, bytes_per_sector=bytes_per_sector,
        tokens_per_sector=tokens_per_sector, bytes_per_block=allocators[0].bytes_per_block,
        attn_types=list(tf_cache.group_layers_by_attn_type(config)), model_supports_logits_to_keep=logits_to_keep)
    expected = handler.infer_max_batch_tokens_and_num_sectors()

    spec = load_model(model).spec
    plan = plan_cache(spec, BF16, 1, handler.available_memory,
                      CBSettings(flash_attention=flash, logits_to_keep=logits_to_keep))
    assert (plan.max_batch_tokens, plan.num_sectors) == expected and expected[1] > 100
    assert (plan.bytes_per_sector, plan.tokens_per_sector) == (bytes_per_sector, tokens_per_sector)


@pytest.mark.parametrize("engine", ["trtllm", "transformers"])
def test_free_memory_engines_only_need_weights_to_fit_the_gpu(engine):
    """Their memory fraction applies to what is free after loading, not to the total."""
    from kvplan.hardware import find_gpu
    from kvplan.plan import Deployment, estimate
    from kvplan.model import load_model

    e = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("L4"), engine=engine, gpu_memory_utilization=0.5,
                                                         max_model_len=8192))
    assert e.weights_bytes_per_gpu > 0.5 * find_gpu("L4").memory_bytes  # more than the fraction of the total...
    assert "weights take" not in e.verdict and e.num_blocks > 0  # ...yet they load, and the pool has blocks
