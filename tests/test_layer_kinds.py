"""Per-kind arithmetic, checked against independent brute force over a request's life."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.dtypes import kv_format
from kvplan.model import ChunkedLocal, FullAttention, IndexedMLA, MLALatent, RecurrentState, SlidingWindow


def _blocks_holding(first_pos: int, length: int, block_size: int) -> int:
    """Blocks covering positions [first_pos, length) when blocks left of first_pos are freed."""
    if length == 0:
        return 0
    return (length - 1) // block_size - first_pos // block_size + 1


def _brute_sliding_peak(context: int, window: int, block_size: int) -> int:
    return max(_blocks_holding(max(0, n - window), n, block_size) for n in range(1, context + 1))


def _brute_chunked_peak(context: int, chunk: int, block_size: int) -> int:
    return max(_blocks_holding((n - 1) // chunk * chunk, n, block_size) for n in range(1, context + 1))


@settings(max_examples=300, deadline=None)
@given(window=st.integers(1, 300), block_size=st.sampled_from([1, 2, 8, 16, 32]), context=st.integers(1, 700))
def test_sliding_peak_blocks_matches_brute_force(window, block_size, context):
    group = SlidingWindow((0,), 1, 8, 8, window)
    assert group.peak_blocks(context, block_size) == _brute_sliding_peak(context, window, block_size)


@settings(max_examples=300, deadline=None)
@given(chunk=st.integers(1, 200), block_size=st.sampled_from([1, 4, 16, 32]), context=st.integers(1, 700))
def test_chunked_peak_blocks_matches_brute_force(chunk, block_size, context):
    group = ChunkedLocal((0,), 1, 8, 8, chunk)
    assert group.peak_blocks(context, block_size) == _brute_chunked_peak(context, chunk, block_size)


@settings(max_examples=300, deadline=None)
@given(window=st.integers(1, 200), chunk=st.integers(1, 300), block_size=st.sampled_from([1, 4, 16]),
       context=st.integers(1, 700))
def test_sliding_peak_blocks_with_prefill_chunks_matches_brute_force(window, chunk, block_size, context):
    """A chunk [s, e) of at most `chunk` tokens keeps [s - W + 1, e): the worst chunk ending at e starts at e - chunk."""
    group = SlidingWindow((0,), 1, 8, 8, window)
    brute = max(_blocks_holding(max(0, e - chunk - window + 1), e, block_size) for e in range(1, context + 1))
    assert group.peak_blocks(context, block_size, chunk) == brute


def test_tokens_held_below_and_above_window():
    g = SlidingWindow((0, 1), 8, 128, 128, 4096)
    assert g.tokens_held(1000) == 1000
    assert g.tokens_held(4096) == 4096
    assert g.tokens_held(100_000) == 4096


def test_mla_latent_has_no_factor_two_and_ignores_tp():
    g = MLALatent(tuple(range(61)), kv_lora_rank=512, qk_rope_head_dim=64)
    bf16 = kv_format("bf16")
    assert g.bytes_per_token_per_layer(bf16) == 576 * 2
    assert g.bytes_per_token_per_layer(bf16, tp=8) == 576 * 2
    assert g.bytes_per_token_per_layer(kv_format("fp8")) == 576


def test_indexed_mla_adds_an_fp8_indexer_key_whatever_the_kv_dtype():
    """DeepSeek V3.2: the 576-wide latent in the KV dtype plus a 128-wide fp8 key with one fp32 scale."""
    g = IndexedMLA(tuple(range(61)), kv_lora_rank=512, qk_rope_head_dim=64, index_head_dim=128)
    assert g.bytes_per_token_per_layer(kv_format("bf16")) == 576 * 2 + 128 + 4
    assert g.bytes_per_token_per_layer(kv_format("bf16"), tp=8) == 576 * 2 + 128 + 4
    assert g.bytes_per_token_per_layer(kv_format("fp8")) == 576 + 128 + 4
    assert g.bytes_per_token_per_layer(kv_format("fp32")) == 576 * 4 + 128 + 4
    assert IndexedMLA((0,), 512, 64, index_head_dim=200).bytes_per_token_per_layer(kv_format("bf16")) == 576 * 2 + 200 + 8


@settings(max_examples=100, deadline=None)
@given(block_size=st.sampled_from([1, 16, 64]), context=st.integers(1, 700), chunk=st.integers(1, 300))
def test_indexed_mla_keeps_every_token(block_size, context, chunk):
    g = IndexedMLA((0,), 512, 64, index_head_dim=128)
    assert g.tokens_held(context) == context
    assert g.peak_blocks(context, block_size, chunk) == max(_blocks_holding(0, n, block_size)
                                                            for n in range(1, context + 1))


def test_full_attention_tp_split_and_replication():
    g = FullAttention((0,), num_kv_heads=8, k_head_dim=128, v_head_dim=128)
    bf16 = kv_format("bf16")
    assert g.bytes_per_token_per_layer(bf16, tp=1) == 8 * 2 * 128 * 2
    assert g.bytes_per_token_per_layer(bf16, tp=4) == 2 * 2 * 128 * 2
    assert g.bytes_per_token_per_layer(bf16, tp=16) == 1 * 2 * 128 * 2  # replicated: one head per rank


def test_state_layers_hold_no_tokens_but_constant_bytes():
    g = RecurrentState((0,), conv_elems=8192 * 3, ssm_elems=32 * 128 * 128)
    assert g.peak_blocks(100_000, 16) == 0
    assert g.state_bytes_per_layer(kv_format("bf16")) == (8192 * 3 + 32 * 128 * 128) * 2


@pytest.mark.parametrize("name,elems,expected", [
    ("int8", 128, Fraction(128 + 4)),           # fp32 scale per vector
    ("int4", 128, Fraction(64 + 4)),            # fp32 scale per vector (3.76x smaller than fp16)
    ("int4_g32", 128, Fraction(64 + 4 * 4)),    # 4 groups of 32, fp16 scale + zero each (3.2x)
    ("int4_g64", 128, Fraction(64 + 2 * 4)),
    ("int4_g128", 128, Fraction(64 + 4)),
    ("nvfp4", 128, Fraction(64 + 8)),           # fp8 scale per 16
    ("mxfp4", 128, Fraction(64 + 4)),           # e8m0 scale per 32
    ("fp8", 128, Fraction(128)),
    ("fp32", 64, Fraction(256)),
])
def test_kv_formats_count_their_scales(name, elems, expected):
    assert kv_format(name).vector_bytes(elems) == expected
