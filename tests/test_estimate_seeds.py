"""The seed examples of the estimate issue, from raw numbers, to the byte."""

import pytest

from kvplan.plan import Deployment, estimate
from kvplan.model import LoadedModel, spec_from_numbers


def _raw(layers, kv_heads, head_dim=128, **dep):
    return estimate(LoadedModel(spec_from_numbers(layers, kv_heads, head_dim)), Deployment(**dep))


@pytest.mark.parametrize("layers,kv_heads,context,batch,kv_dtype,per_request,total", [
    (80, 64, 4096, 1, "fp16", 10_737_418_240, 10_737_418_240),
    (80, 64, 4096, 32, "fp16", 10_737_418_240, 343_597_383_680),
    (80, 8, 4096, 1, "fp16", 1_342_177_280, 1_342_177_280),
    (80, 8, 131072, 1, "fp16", 42_949_672_960, 42_949_672_960),
    (32, 32, 4096, 1, "fp16", 2_147_483_648, 2_147_483_648),
])
def test_seed_examples(layers, kv_heads, context, batch, kv_dtype, per_request, total):
    est = _raw(layers, kv_heads, context_tokens=context, batch=batch, kv_dtype=kv_dtype)
    assert est.kv_bytes_per_request == per_request
    assert est.kv_bytes_total == total


def test_seed_per_token_gqa():
    assert _raw(80, 8, context_tokens=4096, kv_dtype="fp16").kv_bytes_per_token == 327_680


@pytest.mark.parametrize("layers,kv_heads,context,fp16_bytes", [
    (80, 64, 4096, 10_737_418_240), (80, 8, 4096, 1_342_177_280), (80, 8, 131072, 42_949_672_960),
    (32, 32, 4096, 2_147_483_648),
])
def test_fp8_halves_each(layers, kv_heads, context, fp16_bytes):
    est = _raw(layers, kv_heads, context_tokens=context, kv_dtype="fp8")
    assert est.kv_bytes_per_request * 2 == fp16_bytes


def test_raw_numbers_leave_budget_out_with_a_note():
    est = _raw(32, 8, context_tokens=4096)
    assert est.kv_budget_bytes is None and est.max_concurrent_users is None and est.weights_bytes is None
    assert est.fits is None
    assert any("--gpu" in n for n in est.notes)


def test_raw_numbers_with_weights_and_gpu_memory_give_users():
    gib = 1 << 30
    est = _raw(32, 8, context_tokens=4096, kv_dtype="fp16", gpu=None, weights_bytes=10 * gib,
               kv_cache_memory_bytes=8 * gib)
    # 32 layers x 8 heads x 128 x 2 (K,V) x 2 B = 131072 B/token; 4096 tokens = 0.5 GiB per request
    assert est.kv_bytes_per_request == gib // 2
    assert est.max_concurrent_users == 16
    assert est.kv_cache_tokens == 8 * gib // 131072
