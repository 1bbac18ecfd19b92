"""Estimates for real bundled models, each figure recomputed independently here."""

import pytest

from kvplan.errors import InputError
from kvplan.hardware import find_gpu
from kvplan.plan import Deployment, estimate, pp_partition
from kvplan.model import load_model

GiB = 1 << 30
MiB = 1 << 20


def cdiv(a, b):
    return -(-a // b)


def est(name, **dep):
    return estimate(load_model(name), Deployment(**dep))


# --- windows, MLA, hybrids: per-request bytes below and above the window ---

def test_gemma2_below_window_all_layers_hold_every_token():
    e = est("gemma-2-9b", context_tokens=1000)
    per_layer_token = 2 * 8 * 256 * 2
    assert e.kv_bytes_per_request == 42 * per_layer_token * cdiv(1000, 16) * 16


def test_gemma2_above_window_sliding_layers_capped():
    e = est("gemma-2-9b", context_tokens=10_000, max_num_batched_tokens=2048)
    per_layer_token = 2 * 8 * 256 * 2
    # a 2048-token prefill chunk reads its 4096-token windows: 4096 - 1 + 2048 = 6143 positions,
    # which span at most 385 blocks of 16 when misaligned
    assert e.kv_bytes_per_request == 21 * per_layer_token * 10_000 + 21 * per_layer_token * 385 * 16


def test_gemma2_prefill_chunk_longer_than_the_window_keeps_every_token():
    # an 8192-token chunk needs the 4095 positions before each query: all 10,000 tokens at the peak
    e = est("gemma-2-9b", context_tokens=10_000, max_num_batched_tokens=8192)
    assert e.kv_bytes_per_request == 42 * (2 * 8 * 256 * 2) * 10_000


def test_gemma2_reference_gib_figures_token_exact():
    spec = load_model("gemma-2-9b").spec
    from kvplan.dtypes import kv_format
    bf16 = kv_format("bf16")
    # shared/reference/models.md: 1.31 / 5.91 / 21.66 GiB at 4k / 32k / 128k
    for ctx, gib in ((4096, 1.31), (32768, 5.91), (131072, 21.66)):
        assert round(spec.bytes_per_request(ctx, bf16) / GiB, 2) == gib


def test_gpt_oss_window_128():
    e = est("gpt-oss-20b", context_tokens=131072)
    per_layer_token = 2 * 8 * 64 * 2
    sliding_blocks = (15 + 128 + 8192 - 2) // 16 + 1  # an 8192-token chunk reads 128 + 8191 positions: 521 blocks
    assert e.kv_bytes_per_request == 12 * per_layer_token * 131072 + 12 * per_layer_token * sliding_blocks * 16


def test_mistral_v01_request_bytes_saturate_at_the_window():
    a = est("mistral-7b-v0.1", context_tokens=16384).kv_bytes_per_request
    b = est("mistral-7b-v0.1", context_tokens=32768).kv_bytes_per_request
    assert a == b == 32 * 2 * 8 * 128 * 2 * 769 * 16  # window 4096 + an 8192-token chunk: 12,287 positions


@pytest.mark.parametrize("ctx", [1000, 4096, 163840])
def test_deepseek_v3_mla_latent(ctx):
    e = est("deepseek-v3", context_tokens=ctx, tp=8)
    assert e.kv_bytes_per_token == 61 * 576 * 2 == 70_272
    assert e.kv_bytes_per_request == 61 * 576 * 2 * cdiv(ctx, 16) * 16
    assert e.kv_bytes_per_request_per_gpu == e.kv_bytes_per_request  # latent replicated on every rank


def test_qwen3_next_hybrid_attention_plus_constant_state():
    e = est("qwen3-next-80b-a3b", context_tokens=32768)
    state = 36 * (8192 * 3 + 32 * 128 * 128) * 2
    assert e.state_bytes_per_request == state
    assert e.kv_bytes_per_request == 12 * 2 * 2 * 256 * 2 * 32768 + state


# --- parallelism ---

def test_tp_splits_kv_heads():
    e = est("llama-3.1-70b", tp=4, context_tokens=8192)
    assert e.kv_bytes_per_token_per_gpu == 80 * 2 * 2 * 128 * 2
    assert e.kv_bytes_per_token == 327_680


def test_tp_beyond_kv_heads_replicates():
    e = est("qwen3-235b-a22b", tp=8, context_tokens=4096)  # 4 KV heads on 8 ranks: one each
    assert e.kv_bytes_per_token_per_gpu == 94 * 2 * 1 * 128 * 2


def test_pp_partition_like_vllm():
    assert [len(r) for r in pp_partition(80, 3)] == [27, 27, 26]
    assert [len(r) for r in pp_partition(32, 4)] == [8, 8, 8, 8]
    assert [len(r) for r in pp_partition(61, 4)] == [15, 15, 16, 15]


def test_pp_largest_stage_bounds_capacity():
    e = est("llama-3.1-70b", pp=3, context_tokens=4096, kv_cache_memory_bytes=20 * GiB)
    per_token_stage = 27 * 2 * 8 * 128 * 2
    assert e.kv_bytes_per_token_per_gpu == per_token_stage
    page = per_token_stage * 16
    assert e.num_blocks == 20 * GiB // page
    assert e.max_concurrent_users == (20 * GiB // page) // (4096 // 16)


def test_tp_not_dividing_heads_is_an_input_error():
    with pytest.raises(InputError, match="does not divide"):
        est("llama-3.1-8b", tp=3)


# --- weights ---

def test_weights_bf16_from_param_count():
    assert est("llama-3.1-8b").weights_bytes == 8_030_261_248 * 2


def test_weights_fp8_keeps_embeddings_16_bit():
    spec = load_model("llama-3.1-8b").spec
    p = spec.params
    expected = (p.linear + p.experts) + 2 * (p.embedding + p.lm_head + p.other)
    assert est("llama-3.1-8b", weight_dtype="fp8").weights_bytes == expected


def test_weights_awq_int4_with_group_scales():
    spec = load_model("llama-3.1-8b").spec
    p = spec.params
    bits = (p.linear * 4 + p.linear * 20 // 128) + 16 * (p.embedding + p.lm_head + p.other)
    assert est("llama-3.1-8b", weight_dtype="awq").weights_bytes == cdiv(bits, 8)


def test_gpt_oss_checkpoint_mxfp4_experts_only():
    p = load_model("gpt-oss-20b").spec.params
    experts_bytes = p.experts * 17 // 32  # 4 bits + an 8-bit scale per 32 = 4.25 bits
    rest = (p.linear + p.embedding + p.lm_head + p.other) * 2
    assert est("gpt-oss-20b").weights_bytes == experts_bytes + rest == 13_761_264_768


# --- budget, blocks, users ---

def test_budget_is_utilization_share_minus_weights_and_terms():
    e = est("llama-3.1-8b", gpu=find_gpu("H100"), context_tokens=8192)
    assert e.gpu_memory_bytes == 81559 * MiB
    terms = sum(t["bytes"] for t in e.overhead)
    assert e.kv_budget_bytes == int(81559 * MiB * 0.9) - 8_030_261_248 * 2 - terms
    page = 131072 * 16
    assert e.num_blocks == e.kv_budget_bytes // page
    assert e.kv_cache_tokens == e.num_blocks * 16
    assert e.max_concurrent_users == e.num_blocks // (8192 // 16)
    assert e.max_concurrency == pytest.approx(e.num_blocks / (131072 // 16))


def test_kv_cache_memory_given_directly():
    e = est("llama-3.1-8b", kv_cache_memory_bytes=10 * GiB, max_model_len=32768)
    assert e.num_blocks == 10 * GiB // (131072 * 16) == 5120
    assert e.max_concurrency == pytest.approx(5120 / 2048)


def test_hybrid_pool_pages_by_layer_groups():
    # Gemma-2: 21 full + 21 sliding -> pages of 21 layers, two page groups share one pool
    e = est("gemma-2-9b", kv_cache_memory_bytes=10 * GiB, context_tokens=8192)
    page = 16 * 21 * 2 * 8 * 256 * 2
    assert e.num_blocks == 10 * GiB // page
    per_request_blocks = 8192 // 16 + 8192 // 16  # an 8192-token prefill chunk keeps every sliding token too
    assert e.max_concurrent_users == e.num_blocks // per_request_blocks


def test_max_context_for_batch_uniform_closed_form():
    e = est("llama-3.1-8b", kv_cache_memory_bytes=10 * GiB, batch=8, max_model_len=131072)
    blocks_each = e.num_blocks // 8
    assert e.max_context_tokens == blocks_each * 16


# --- verdicts ---

def test_weights_larger_than_gpu_is_a_verdict_not_a_crash():
    e = est("llama-3.1-405b", gpu=find_gpu("L4"))
    assert e.fits is False and "weights" in e.verdict
    assert any("GPUs" in s for s in e.suggestions)


def test_batch_that_does_not_fit_names_the_knobs():
    e = est("llama-3.1-8b", gpu=find_gpu("L4"), max_model_len=32768, context_tokens=32768, batch=4, weight_dtype="fp8")
    assert e.fits is False and e.max_concurrent_users == 2
    # the pool's blocks split four ways, in whole 16-token blocks
    assert e.max_context_tokens == e.num_blocks // 4 * 16 < 32768
    assert f"the longest context that fits is {e.max_context_tokens:,} tokens" in " ".join(e.suggestions)
    assert "--kv-dtype fp8 cuts KV bytes per token 2x" in e.suggestions


def test_max_model_len_that_cannot_hold_one_request_fails_with_the_largest_that_would():
    e = est("llama-3.1-8b", gpu=find_gpu("L4"), context_tokens=4096, batch=4)  # max_model_len = 131,072
    assert e.fits is False and "one request of max_model_len 131,072" in e.verdict
    largest = e.num_blocks * 16  # uniform model: one request may use every block
    assert f"--max-model-len {largest:,} or less fits" in e.suggestions


def test_batch_beyond_max_num_seqs_does_not_fit():
    e = est("llama-3.1-8b", gpu=find_gpu("H100"), max_model_len=8192, context_tokens=1024, batch=400)
    assert e.max_concurrent_users >= 400 and e.fits is False and "--max-num-seqs 256" in e.verdict


def test_quantized_weights_are_not_told_to_quantize():
    e = est("deepseek-v3", gpu=find_gpu("H100"), tp=8)
    assert e.fits is False and not any("--dtype fp8" in s for s in e.suggestions)


def test_kv_cache_memory_zero_names_the_flag():
    e = est("llama-3.1-8b", kv_cache_memory_bytes=0)
    assert e.fits is False and "--kv-cache-memory" in e.verdict


def test_context_beyond_max_model_len_is_a_failed_verdict():
    e = est("gemma-2-9b", gpu=find_gpu("L40S"), context_tokens=32768)
    assert e.fits is False and "exceeds max_model_len 8,192" in e.verdict
    assert e.max_context_tokens <= 8192


def test_fp32_checkpoint_served_as_bf16_by_default():
    e = est("gemma-2-9b", context_tokens=4096)
    assert e.kv_dtype == "bf16" and e.weights_bytes == 9_241_705_984 * 2
    assert est("gemma-2-9b", weight_dtype="fp32").weights_bytes == 9_241_705_984 * 4
