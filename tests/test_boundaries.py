"""Boundary cases of the core arithmetic, each chosen so that an off-by-one or a swapped bound changes
the answer (mutants that survived the earlier tests)."""

import pytest

from kvplan.dtypes import kv_format
from kvplan.hardware import find_gpu
from kvplan.model import ChunkedLocal, FullAttention, ModelSpec, RecurrentState, load_model, spec_from_numbers
from kvplan.model.loaders import LoadedModel
from kvplan.plan import Deployment, estimate
from kvplan.plan.policies import get_policy
from kvplan.units import GiB, MiB

BF16 = kv_format("bf16")
LAYER_BYTES_PER_TOKEN = 2 * 8 * 128 * 2  # K and V, 8 heads x 128, bf16: 4,096 B


def raw(layers: int, **kw):
    return estimate(LoadedModel(spec_from_numbers(layers, 8, 128, 32)), Deployment(**kw))


def test_weights_per_gpu_round_up():
    """A byte that does not split evenly still has to live on some GPU."""
    e = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("H100"), tp=2, weights_bytes=10**9 + 1))
    assert e.weights_bytes_per_gpu == 500_000_001


def test_pipeline_stages_the_larger_stage_limits():
    """3 layers over pp=2: stages of 2 and 1 layers. Per-GPU sizes are the larger stage's, capacity the smaller."""
    e = raw(3, pp=2, kv_cache_memory_bytes=GiB, max_model_len=4096, context_tokens=1000)
    block_bytes = 16 * 2 * LAYER_BYTES_PER_TOKEN  # 16 tokens x the 2 layers of stage 0: 131,072 B
    assert e.kv_bytes_per_token_per_gpu == 2 * LAYER_BYTES_PER_TOKEN
    assert e.kv_bytes_per_request_per_gpu == 63 * block_bytes  # cdiv(1000, 16) blocks
    assert e.num_blocks == GiB // block_bytes == 8192
    assert e.max_concurrent_users == GiB // (63 * block_bytes) == 130
    assert e.max_concurrency == 8192 / 256  # blocks / cdiv(4096, 16)
    row = next(r for r in e.contexts if r.context_tokens == 1000)
    assert (row.kv_bytes_per_request_per_gpu, row.max_concurrent_users) == (63 * block_bytes, 130)


def test_a_batch_of_exactly_max_num_seqs_fits():
    e = raw(2, kv_cache_memory_bytes=GiB, max_model_len=4096, batch=4, max_num_seqs=4)
    assert e.fits is True
    over = raw(2, kv_cache_memory_bytes=GiB, max_model_len=4096, batch=5, max_num_seqs=4)
    assert over.fits is False and "exceeds --max-num-seqs 4" in over.verdict


def test_one_request_of_max_model_len_fitting_exactly():
    """2 layers, 4,096 tokens: 256 blocks of 128 KiB = 32 MiB. Exactly that fits; one byte less does not."""
    assert 256 * 16 * 2 * LAYER_BYTES_PER_TOKEN == 32 * MiB
    exact = raw(2, kv_cache_memory_bytes=32 * MiB, max_model_len=4096)
    assert exact.fits is True and exact.max_context_tokens == 4096 and exact.max_concurrent_users == 1
    short = raw(2, kv_cache_memory_bytes=32 * MiB - 1, max_model_len=4096)  # 255 blocks: 4,080 tokens
    assert short.fits is False and "one request of max_model_len 4,096 tokens" in short.verdict
    assert short.suggestions[0] == "--max-model-len 4,080 or less fits"
    one_token_short = raw(2, kv_cache_memory_bytes=32 * MiB - 2 * LAYER_BYTES_PER_TOKEN, max_model_len=4096,
                          block_size=1)  # blocks of one token: room for 4,095
    assert one_token_short.fits is False and "one request of max_model_len" in one_token_short.verdict
    assert one_token_short.suggestions[0] == "--max-model-len 4,095 or less fits"


def test_recurrent_state_splits_over_tensor_parallel_ranks():
    g = RecurrentState((0,), conv_elems=3000, ssm_elems=40000)
    assert g.state_bytes_per_layer(BF16, tp=1) == 86_000
    assert g.state_bytes_per_layer(BF16, tp=2) == 43_000
    spec = ModelSpec("s", "test", (g,), 1, max_position_embeddings=4096)
    e = estimate(LoadedModel(spec), Deployment(tp=2, kv_cache_memory_bytes=GiB, max_model_len=4096))
    assert (e.state_bytes_per_request, e.kv_bytes_per_request_per_gpu) == (86_000, 43_000)


@pytest.mark.parametrize("batched,blocks", [(17, 514), (16, 513), (8192, 1024)])
def test_vllm_chunked_local_reserves_chunk_plus_batched_tokens(batched, blocks):
    """vLLM's ChunkedLocalAttentionSpec: cdiv(min(C + max_num_batched_tokens, max_model_len), block_size).
    C + 17 = 8,209 tokens need 514 blocks of 16 (C - 1 + 17 would need 513)."""
    assert ChunkedLocal((0,), 8, 128, 128, window_tokens=8192).vllm_max_blocks(32768, 16, batched) == blocks


def test_vllm_chunked_local_through_the_policy():
    spec = ModelSpec("c", "test", (ChunkedLocal((0, 2), 8, 128, 128, 8192), FullAttention((1, 3), 8, 128, 128)), 4)
    policy = get_policy("vllm").bind(spec)
    dep = Deployment(max_num_batched_tokens=17, block_size=16)
    # two groups of two layers: full cdiv(32768, 16) = 2048, chunked 514
    assert policy.request_blocks(policy.kv_groups(spec, BF16, dep), 32768, dep) == 2048 + 514


@pytest.mark.parametrize("text,version", [("vllm@0.7.9", "v0"), ("vllm@0.8.0", "0.8.0"), ("vllm@0.8.3", "0.8.0"),
                                          ("vllm@0.8.4", "0.8.4"), ("vllm@0.9.1", "0.8.4"), ("vllm@0.9.2", "0.9.2")])
def test_vllm_version_boundaries_are_inclusive_at_the_release_that_changed(text, version):
    """0.8.4 is the first release that reports the largest max_model_len (vllm-project/vllm#16168)."""
    assert get_policy(text).version == version


def test_vllm_0_8_4_reports_the_largest_max_model_len_and_0_8_3_does_not():
    kw = dict(kv_cache_memory_bytes=2 * GiB, max_model_len=65536)
    new = estimate(load_model("llama-3.1-8b"), Deployment(engine="vllm@0.8.4", **kw))
    old = estimate(load_model("llama-3.1-8b"), Deployment(engine="vllm@0.8.3", **kw))
    assert new.engine_report["refusal"].endswith("the largest max_model_len that fits is 16384")
    assert "largest" not in old.engine_report["refusal"]
