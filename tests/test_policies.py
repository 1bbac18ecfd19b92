"""Engine policies: registry and versions, vLLM layout rules, SGLang and TensorRT-LLM pools from published logs,
transformers' cache sizing against transformers' own memory handler."""

import re
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


def engine_deployment(policy, spec, **settings) -> Deployment:
    """A Deployment with the settings it leaves to the engine filled in, as `estimate` does before any policy call."""
    return policy.resolve_deployment(spec, Deployment(**settings), 131072)[0]


# --- registry and versions ---

def test_every_engine_is_registered():
    assert {"generic", "vllm", "sglang", "trtllm", "transformers"} <= set(engine_names())


@pytest.mark.parametrize("text,version", [("vllm", "0.21"), ("vllm@v0", "v0"), ("vllm@0.6.3", "v0"),
                                          ("vllm@0.8.3", "0.8.0"), ("vllm@0.8.5", "0.8.4"), ("vllm@0.9.1", "0.8.4"),
                                          ("vllm@0.9.2", "0.9.2"), ("vllm@0.10.0", "0.9.2"), ("vllm@0.10.1.1", "0.10.1"),
                                          ("vllm@0.11.2", "0.10.1"), ("vllm@0.12.0", "0.12"), ("vllm@0.17.1", "0.12"),
                                          ("vllm@0.19.0", "0.18"), ("vllm@0.20.1", "0.18"), ("vllm@0.20.2", "0.21"),
                                          ("vllm@0.21.0", "0.21"), ("vllm@0.24.1", "0.21"),
                                          ("vllm@latest", "0.21"),
                                          ("vllm@0.1.dev7548+gbaba038", "0.21"), ("trtllm@pytorch", "1.0"),
                                          ("trtllm", "0.13"), ("sglang@0.5.2", "0.5")])
def test_versions_resolve_to_modelled_semantics(text, version):
    assert get_policy(text).version == version


@pytest.mark.parametrize("text", ["vllm@banana", "vllm@99.0", "vllm@0.25.0", "vllm@1.0", "generic@1.0",
                                  "sglang@0.4", "nosuch"])
def test_bad_engine_or_version_is_one_line_input_error(text):
    with pytest.raises(InputError):
        get_policy(text)


def test_generic_output_unchanged_and_without_engine_report():
    e = est("llama-3.1-8b", kv_cache_memory_bytes=10 * GiB, max_model_len=8192)
    assert e.engine_report is None
    assert e.num_blocks == 10 * GiB // (131072 * 16)  # 2 MiB blocks: 5,120
    assert e.kv_cache_tokens == 5120 * 16


def test_vllm_budget_is_its_own_terms_off_the_cuda_visible_total():
    """vLLM sizes from the CUDA-visible total (79.19 GiB on an H100, not nvidia-smi's 79.65) minus its own terms;
    the terms themselves are checked against logs in test_vllm_overhead.py."""
    gpu = find_gpu("H100")
    vllm = est("llama-3.1-8b", gpu=gpu, engine="vllm", max_model_len=8192)
    used = vllm.weights_bytes_per_gpu + sum(t["bytes"] for t in vllm.overhead)
    assert vllm.gpu_memory_bytes == round(79.19 * GiB)
    assert vllm.kv_budget_bytes == int(round(79.19 * GiB) * 0.9) - used
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
    groups = policy.kv_groups(spec, BF16, engine_deployment(policy, spec))
    assert [len(g.layers) for g in groups] == sizes


@pytest.mark.parametrize("release,sliding,full,sizes", [
    ("0.11.0", 12, 14, [12, 7, 7]),  # before PR 29303: always the smallest count
    ("0.12.0", 12, 14, [12, 14]),  # 14 < 1.25 x 12: the largest count, the sliding group padded
    ("0.17.1", 12, 17, [12, 9, 8]),  # 17 >= 1.25 x 12
    ("0.18.0", 12, 17, [12, 17]),  # PR 36684: 17 < 1.5 x 12
])
def test_vllm_hybrid_group_size_rule_follows_the_release(release, sliding, full, sizes):
    policy = get_policy(f"vllm@{release}").bind(spec := _hybrid(sliding, full))
    groups = policy.kv_groups(spec, BF16, engine_deployment(policy, spec))
    assert [len(g.layers) for g in groups] == sizes


def test_vllm_refusal_counts_group_padding_from_0_18():
    """Gemma-3-27B at 131,072 tokens (10 full + 52 sliding-1024 layers, groups of 10, page 16 x 16 x 128 x 2 x 2 B):
    the real layers need 10 x 8,192 + 52 x 577 = 111,924 pages; from 0.18 vLLM charges group size x the groups'
    blocks, 10 x (8,192 + 6 x 577) = 116,540 (`_max_memory_usage_bytes_from_groups`)."""
    page = 2 * 16 * 16 * 128 * 2
    kw = dict(max_model_len=131072, max_num_batched_tokens=8192, kv_cache_memory_bytes=114_000 * page)
    old = est("gemma-3-27b", engine="vllm@0.17.1", **kw)
    new = est("gemma-3-27b", engine="vllm@0.19.0", **kw)
    # 0.17 starts (its check sums real layers), though 11,400 blocks cannot hold one 11,654-block request
    assert old.engine_report["refusal"] is None and "the engine starts, but cannot run such a request" in old.verdict
    assert new.fits is False and "needs 14.23 GiB" in new.engine_report["refusal"]  # 116,540 x 128 KiB
    policy = get_policy("vllm@0.19.0").bind(spec := load_model("gemma-3-27b").spec)
    assert policy.needed_bytes(spec, 131072, BF16, engine_deployment(policy, spec, max_num_batched_tokens=8192)) \
        == 116_540 * page


def test_vllm_tokens_line_is_concurrency_times_max_model_len_from_0_20_2():
    """100,000 blocks of Gemma-3-27B at 8,192 tokens (7 groups; a request takes 512 + 6 x 513 = 3,590 blocks):
    0.19 logs 100,000 // 7 x 16 = 228,560 tokens; 0.20.2+ int(100,000 / 3,590 x 8,192) = 228,189."""
    block = 10 * 2 * 16 * 16 * 128 * 2
    kw = dict(max_model_len=8192, max_num_batched_tokens=8192, kv_cache_memory_bytes=100_000 * block)
    assert est("gemma-3-27b", engine="vllm@0.19.0", **kw).kv_cache_tokens == 228_560
    assert est("gemma-3-27b", engine="vllm@0.20.2", **kw).kv_cache_tokens == 228_189


def test_vllm_sliding_window_blocks_per_request():
    policy = get_policy("vllm").bind(spec := _hybrid(12, 12, window=128))
    dep = engine_deployment(policy, spec, max_num_batched_tokens=8192)
    groups = policy.kv_groups(spec, BF16, dep)
    # full: cdiv(131072, 16) = 8192; sliding: cdiv(min(127 + 8192, 131072), 16) + 1 = 521
    assert policy.request_blocks(groups, 131072, dep) == 8192 + 521
    assert policy.request_blocks(groups, 100, dep) == 7 + 8


def test_vllm_every_layer_sliding_keeps_its_window_in_concurrency():
    """Mistral-7B-v0.1 (32 layers, all sliding 4096) on one H100, vLLM 0.19, 1,024 sequences: one KV cache group,
    and get_max_concurrency_for_kv_cache_config still charges that group's max_memory_usage_bytes:
    cdiv(min(4095 + 8192, 32768), 16) + 1 = 769 blocks, so 28,988 blocks give 37.70x (not 28,988 / 2,048 = 14.15x)."""
    e = est("mistral-7b-v0.1", gpu=find_gpu("H100"), engine="vllm@0.19", max_model_len=32768, max_num_seqs=1024)
    assert e.num_blocks == 28988 and e.engine_report["figures"]["blocks_per_request"] == 769
    assert f"{e.max_concurrency:.2f}" == "37.70" and e.max_concurrent_users == 28988 // 769
    # the whole-model and per-GPU columns use the same (engine's) rules: 769 blocks x 32 layers x 64 KiB
    row = next(r for r in e.contexts if r.context_tokens == 32768)
    assert row.kv_bytes_per_request == row.kv_bytes_per_request_per_gpu == e.kv_bytes_per_request == 769 * 32 * 65536


def test_vllm_sliding_model_that_starts_is_not_called_a_refusal():
    """2 GiB holds 1,024 blocks; one 32K request needs 769 of them: vLLM starts (1.33x), and so does the verdict."""
    e = est("mistral-7b-v0.1", gpu=find_gpu("H100"), engine="vllm@0.19", max_model_len=32768,
            kv_cache_memory_bytes=2 * GiB)
    assert e.engine_report["refusal"] is None and e.fits is True and f"{e.max_concurrency:.2f}" == "1.33"


@pytest.mark.parametrize("gpu,block", [("H100", 64), ("H200", 64), ("B200", 128), ("L4", 16), ("A100-80GB", 16)])
def test_vllm_mla_block_size_follows_the_attention_backend(gpu, block):
    spec = load_model("deepseek-v2-lite").spec
    policy = get_policy("vllm")
    assert policy.block_size(spec, engine_deployment(policy, spec, gpu=find_gpu(gpu))) == block


def test_vllm_tp_beyond_kv_heads_replicates_one_head():
    spec = spec_from_numbers(32, 8, 128, 32)
    policy = get_policy("vllm").bind(spec)
    assert policy.block_bytes(spec, BF16, engine_deployment(policy, spec, tp=16)) == 2 * 1 * 128 * 2 * 16 * 32


def test_vllm_rejects_kv_dtypes_it_does_not_offer():
    with pytest.raises(InputError, match="vLLM has no --kv-cache-dtype int8"):
        est("llama-3.1-8b", engine="vllm", kv_dtype="int8", kv_cache_memory_bytes=GiB)


def test_vllm_refusal_reaches_the_verdict():
    e = est("llama-3.1-8b", engine="vllm", kv_cache_memory_bytes=2 * GiB, max_model_len=65536)
    # 65,536 tokens x 128 KiB = 8 GiB > 2 GiB; largest fit: 2 GiB / 2 MiB per block = 1,024 blocks = 16,384 tokens
    assert e.fits is False and "refuse" in e.verdict
    assert e.engine_report["refusal"].endswith("the largest max_model_len that fits is 16384")


def test_vllm_no_kv_memory_advice_follows_what_would_help():
    """DeepSeek-V3 fp8 on 8 H100s at 0.99: weights 78.35 GiB + non-torch + graphs exceed the 79.19 GiB a GPU has, so
    no utilization helps: more GPUs. Llama-3.1-70B bf16 at tp 2 is 0.34 GiB short at 0.9 and fits at 1.0."""
    e = est("deepseek-v3", gpu=find_gpu("H100"), tp=8, engine="vllm", gpu_memory_utilization=0.99)
    assert e.fits is False and "gpu-memory-utilization" not in e.verdict
    assert len(e.suggestions) == 1 and "exceed the whole GPU" in e.suggestions[0] and "raise --tp or --pp" in \
        e.suggestions[0] and "raise --gpu-memory-utilization" not in e.suggestions[0]
    e = est("llama-3.1-70b", gpu=find_gpu("H100"), tp=2, engine="vllm")
    assert e.kv_budget_bytes < 0 and e.suggestions[0].startswith("raise --gpu-memory-utilization")


@pytest.mark.parametrize("engine", ["vllm", "trtllm", "transformers", "generic"])
def test_kinds_are_checked_once_when_the_policy_binds(engine, monkeypatch):
    """One check per estimate (EnginePolicy.bind), not again in every layout call."""
    import sys

    from kvplan.plan.policies import base
    calls = []
    real = base.require_kinds
    for module in [m for name, m in sys.modules.items() if name.startswith("kvplan.plan.policies")]:
        if getattr(module, "require_kinds", None) is real:
            monkeypatch.setattr(module, "require_kinds", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    est("llama-3.1-8b", gpu=find_gpu("H100"), engine=engine, max_model_len=8192)
    assert len(calls) == 1


def test_vllm_load_extras_live_with_their_mechanism():
    from kvplan.plan.policies import vllm_load_extras, vllm_overhead
    assert vllm_overhead.load_extra_terms is vllm_load_extras.load_extra_terms
    assert vllm_load_extras.load_extra_terms.__module__ == "kvplan.plan.policies.vllm_load_extras"


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
    free_before = gpu.engine_total()[0] - 256 * MiB  # CUDA-visible total less the generic single-GPU context term
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
        pool = policy.pool(spec, budget, kv_format("fp16"), engine_deployment(policy, spec, engine="trtllm@0.13"))
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

def transformers_handler(monkeypatch, model, flash, logits_to_keep, available_gib, **cb_settings):
    """transformers' own PagedAttentionMemoryHandler for `model` with `available_gib` free for the cache."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from math import lcm

    from transformers import AutoConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching import cache as tf_cache

    from kvplan.model.loaders import bundled_entry

    raw = dict(bundled_entry(model)["config"])
    raw = dict(raw.get("text_config") or raw) if "text_config" in raw and model.startswith("gemma-3") else raw
    config = AutoConfig.for_model(raw.pop("model_type"), **{k: v for k, v in raw.items() if k != "architectures"})
    if flash:
        config._attn_implementation = "flash_attention_2"
    total, allocated = 80 * GiB, 80 * GiB - int(available_gib * GiB / 0.9)
    monkeypatch.setattr(tf_cache, "get_device_and_memory_breakdown",
                        lambda: (torch.device("cpu"), total, allocated, allocated))
    cb = ContinuousBatchingConfig(page_size=256, max_memory_percent=0.9, max_blocks_per_request=32,
                                  use_async_batching=False, **cb_settings)
    kv_heads = tf_cache.find_num_key_value_heads(config)
    allocators = [tf_cache.ATTN_TYPE_TO_ALLOCATOR[t](index=i, config=config, num_key_value_heads=kv_heads,
                                                     cache_dtype=torch.bfloat16, page_size=256, layer_indices=idx,
                                                     allow_block_sharing=True)
                  for i, (t, idx) in enumerate(tf_cache.group_layers_by_attn_type(config).items())]
    bytes_per_sector = lcm(*(a.bytes_per_block for a in allocators), 128)
    tokens_per_sector = max(bytes_per_sector // a.bytes_per_block * a.tokens_per_page for a in allocators)
    return tf_cache.PagedAttentionMemoryHandler(
        config=config, cb_config=cb, dtype=torch.bfloat16, bytes_per_sector=bytes_per_sector,
        tokens_per_sector=tokens_per_sector, bytes_per_block=allocators[0].bytes_per_block,
        attn_types=list(tf_cache.group_layers_by_attn_type(config)), model_supports_logits_to_keep=logits_to_keep)


@pytest.mark.parametrize("model,flash,logits_to_keep,available_gib", [
    ("llama-3.1-8b", False, True, 60), ("llama-3.1-8b", True, False, 20), ("gpt-oss-20b", False, True, 40),
    ("gemma-2-9b", True, True, 30)])
def test_transformers_sizing_matches_transformers(monkeypatch, model, flash, logits_to_keep, available_gib):
    from kvplan.plan.policies.transformers import CBSettings, plan_cache

    handler = transformers_handler(monkeypatch, model, flash, logits_to_keep, available_gib, max_batch_tokens=8192,
                                   max_requests_per_batch=1024)
    expected = handler.infer_max_batch_tokens_and_num_sectors()

    spec = load_model(model).spec
    plan = plan_cache(spec, BF16, 1, handler.available_memory,
                      CBSettings(flash_attention=flash, logits_to_keep=logits_to_keep))
    assert (plan.max_batch_tokens, plan.num_sectors) == expected and expected[1] > 100
    assert (plan.bytes_per_sector, plan.tokens_per_sector) == (handler.bytes_per_sector, handler.tokens_per_sector)


@pytest.mark.parametrize("given", [{}, {"max_batch_tokens": 2048, "max_requests_per_batch": 64},
                                   {"max_batch_tokens": 512, "max_requests_per_batch": 512}])
def test_transformers_sizes_with_the_deployments_batch_limits(monkeypatch, given):
    """--max-num-batched-tokens is transformers' max_batch_tokens and --max-num-seqs its max_requests_per_batch:
    the estimate sizes the cache with them (transformers' own defaults when not given), as transformers does."""
    handler = transformers_handler(monkeypatch, "llama-3.1-8b", False, True, 60, **given)
    expected_tokens, expected_sectors = handler.infer_max_batch_tokens_and_num_sectors()
    flags = {"max_num_batched_tokens": given.get("max_batch_tokens"),
             "max_num_seqs": given.get("max_requests_per_batch")}
    e = est("llama-3.1-8b", engine="transformers", kv_cache_memory_bytes=handler.available_memory, **flags)
    figures = e.engine_report["figures"]
    assert (figures["max_batch_tokens"], figures["num_sectors"]) == (expected_tokens, expected_sectors)
    expected_requests = given.get("max_requests_per_batch") or transformers_default_requests()
    assert (e.max_num_batched_tokens, e.max_num_seqs) == (expected_tokens, expected_requests)


def transformers_default_requests() -> int:
    from transformers.generation.continuous_batching.initialization import FALLBACK_DEFAULTS

    return FALLBACK_DEFAULTS["max_requests_per_batch"]


def test_transformers_defaults_are_transformers_own():
    """Settings not given are transformers 5.23's: page 256 tokens (ContinuousBatchingConfig.page_size),
    max_batch_tokens 8192 (PagedAttentionMemoryHandler._default_max_batch_tokens), max_requests_per_batch 1024
    (FALLBACK_DEFAULTS), not another engine's 256 sequences."""
    e = est("llama-3.1-8b", engine="transformers", kv_cache_memory_bytes=20 * GiB)
    assert (e.block_size, e.max_num_batched_tokens, e.max_num_seqs) == (256, 8192, 1024)
    assert e.engine_report["figures"]["max_batch_tokens"] == 8192


def test_transformers_defaults_read_from_the_installed_transformers():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching.cache import PagedAttentionMemoryHandler

    e = est("llama-3.1-8b", engine="transformers", kv_cache_memory_bytes=20 * GiB)
    assert (e.block_size, e.max_num_batched_tokens, e.max_num_seqs) == (
        ContinuousBatchingConfig().page_size, PagedAttentionMemoryHandler._default_max_batch_tokens,
        transformers_default_requests())


@pytest.mark.parametrize("settings,match", [
    ({"activation_bytes": GiB}, "--activation-memory has no equivalent in transformers"),
    ({"cuda_graph_bytes": GiB}, "--cuda-graph-memory has no equivalent in transformers"),
    ({"max_num_batched_tokens": 512}, "max_requests_per_batch 1024 (--max-num-seqs, its default) exceeds "
                                      "max_batch_tokens 512"),
    ({"max_num_batched_tokens": 512, "max_num_seqs": 600}, "max_requests_per_batch 600 (--max-num-seqs, given)"),
])
def test_transformers_refuses_what_it_cannot_honour(settings, match):
    with pytest.raises(InputError, match=re.escape(match)):
        est("llama-3.1-8b", engine="transformers", kv_cache_memory_bytes=20 * GiB, **settings)


@pytest.mark.parametrize("setting,flag", [("activation_bytes", "--activation-memory"),
                                          ("cuda_graph_bytes", "--cuda-graph-memory")])
def test_sglang_refuses_sizes_it_takes_no_knob_for(setting, flag):
    """SGLang leaves activations and graphs what --mem-fraction-static does not take: a size for them
    would be shown and ignored."""
    with pytest.raises(InputError, match=re.escape(f"{flag} has no equivalent in sglang")):
        est("llama-3.1-8b", engine="sglang", gpu=find_gpu("H100"), **{setting: GiB})


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
