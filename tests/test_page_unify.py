"""Kinds of different KV sizes per token in one pool (Gemma 4: sliding layers of head_dim 256, full of 512).

vLLM unifies page sizes by giving a kind of 1/r the largest size r x block_size tokens per block;
every page then holds the largest page's bytes. Checked here by counting bytes and tokens by hand.
"""

import pytest

from kvplan.dtypes import kv_format
from kvplan.errors import UnsupportedModelError
from kvplan.model import FullAttention, ModelSpec, SlidingWindow
from kvplan.model.grouping import page_layout
from kvplan.plan.policies.generic import paged_pool

BF16 = kv_format("bf16")
# 5 sliding layers (2 KV heads x 256: 2,048 B/token) per full layer (2 x 512: 4,096 B/token), 12 layers
SLIDING = SlidingWindow((0, 1, 2, 3, 4, 6, 7, 8, 9, 10), 2, 256, 256, window_tokens=1024)
FULL = FullAttention((5, 11), 2, 512, 512)
GEMMA4_LIKE = ModelSpec("g4", "t", (FULL, SLIDING), 12)


def test_smaller_kind_takes_proportionally_more_tokens_per_block():
    assert GEMMA4_LIKE.block_factors(BF16) == {FULL: 1, SLIDING: 2}
    layout = page_layout(GEMMA4_LIKE, BF16, unify_page_sizes=True)
    assert layout.layers_per_page == 2  # gcd(2 full, 10 sliding)
    assert {g.attention.kind: g.block_factor for g in layout.groups} == {"full": 1, "sliding": 2}
    # a page: 16 tokens x 2 full layers x 4,096 B == 32 tokens x 2 sliding layers x 2,048 B
    assert layout.page_bytes(BF16, 1, 16) == 16 * 2 * 4096 == 32 * 2 * 2048


def test_pool_tokens_and_request_blocks():
    layout = page_layout(GEMMA4_LIKE, BF16, unify_page_sizes=True)
    # 1 full group (16 tokens/block) and 5 sliding groups (32 tokens/block): T tokens in every
    # layer take T/16 + 5 T/32 = 7 T/32 blocks
    assert layout.tokens_in(700, 16) == 700 * 32 // 7
    # 4,000 tokens: full 250 blocks; sliding holds W - 1 + chunk = 1,023 + 8,192 positions at the peak
    # (more than the context): cdiv(4000, 32) = 125 blocks per sliding group
    assert layout.blocks_per_request(4000, 16, 8192) == 250 + 5 * 125
    page_bytes, usable, blocks, tokens = paged_pool(GEMMA4_LIKE, BF16, 1, 16, 10 * 131072 + 5)
    assert (page_bytes, usable, blocks, tokens) == (131072, 10 * 131072, 10, 10 * 32 // 7)


def test_request_bytes_round_each_kind_to_its_own_blocks():
    # 100 tokens: full layers hold cdiv(100, 16) x 16 = 112 positions, sliding ones cdiv(100, 32) x 32 = 128
    expected = 2 * 4096 * 112 + 10 * 2048 * 128
    assert GEMMA4_LIKE.bytes_per_request(100, BF16, 1, 16) == expected


def test_unification_is_opt_in_and_needs_divisible_sizes():
    with pytest.raises(UnsupportedModelError, match="cannot share one pool"):
        page_layout(GEMMA4_LIKE, BF16)
    odd = ModelSpec("odd", "t", (FullAttention((0,), 1, 96, 96), SlidingWindow((1,), 1, 64, 64, window_tokens=8)), 2)
    assert odd.block_factors(BF16) is None
    with pytest.raises(UnsupportedModelError, match="cannot share one pool"):
        page_layout(odd, BF16, unify_page_sizes=True)
