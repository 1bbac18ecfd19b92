"""Prefix caching for hybrid models (vLLM v1's rule) in the simulator and the runtime, which share the manager.

Every admission's hit is compared with a brute-force search of the rule over the pool's cache
(test_paging_stateful.brute_force_hit), inside whole simulations; the runtime engine's tokens
with prefix caching on equal those with it off on a tiny Gemma-2 (full + sliding layers).
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvplan.model import ChunkedLocal, FullAttention, ModelSpec, SlidingWindow
from kvplan.model.grouping import page_layout
from kvplan.paging import SchedulerConfig
from kvplan.simulation import Simulator, SyntheticWorkload
from kvplan.simulation.workload import Distribution
from test_paging_stateful import brute_force_hit

LAYOUTS = {
    "sliding+full": lambda w: (SlidingWindow((0, 2), 2, 8, 8, window_tokens=w), FullAttention((1, 3), 2, 8, 8)),
    "chunked+full": lambda w: (ChunkedLocal((0, 2), 2, 8, 8, window_tokens=w), FullAttention((1, 3), 2, 8, 8)),
    "sliding only": lambda w: (SlidingWindow((0, 1), 2, 8, 8, window_tokens=w),),
    "two windows": lambda w: (SlidingWindow((0,), 2, 8, 8, window_tokens=w),
                              SlidingWindow((1,), 2, 8, 8, window_tokens=2 * w + 3)),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(LAYOUTS)), window=st.integers(2, 40), block_size=st.sampled_from([1, 4, 16]),
       num_blocks=st.integers(60, 300), mode=st.sampled_from(["step", "event"]), seed=st.integers(0, 1000),
       shared=st.sampled_from([16, 40, 100]), groups=st.integers(1, 3), rate=st.sampled_from([None, 0.3]))
def test_simulated_hits_follow_the_hybrid_rule(kind, window, block_size, num_blocks, mode, seed, shared, groups,
                                               rate):
    groups_ = LAYOUTS[kind](window)
    layout = page_layout(ModelSpec("t", "t", groups_, sum(g.num_layers for g in groups_)))
    sim = Simulator(layout, num_blocks, block_size, 512, SchedulerConfig(8, 64), mode=mode, check=True)
    kv, checked = sim.kv, []
    hit = kv._hit

    def checked_hit(req):
        result = hit(req)
        assert result[0] * block_size == brute_force_hit(kv, layout, req, block_size)
        checked.append(result[0])
        return result

    kv._hit = checked_hit
    workload = SyntheticWorkload(24, Distribution.parse("uniform:1:60", "p", 0), Distribution.parse("uniform:1:40", "o"),
                                 shared, groups, rate, 1, seed)
    try:
        metrics = sim.run(workload)
    except Exception as exc:  # a pool too small for one request is the simulator's answer, not this test's
        if type(exc).__name__ == "PoolTooSmall":
            return
        raise
    assert checked and metrics.completed_requests == 24


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_a_roomy_pool_serves_later_arrivals_from_the_shared_prefix(kind, block_size):
    # Whether a hit survives in a small pool depends on eviction order (a window's freed blocks are reused
    # first), so the property test above checks each hit against the rule, and this one that hits happen
    # at all where nothing is evicted: 4,096 blocks hold every token of the 24 requests in both groups.
    groups_ = LAYOUTS[kind](2)
    layout = page_layout(ModelSpec("t", "t", groups_, sum(g.num_layers for g in groups_)))
    sim = Simulator(layout, 4096, block_size, 512, SchedulerConfig(8, 64), mode="step", check=True)
    workload = SyntheticWorkload(24, Distribution.parse("uniform:1:60", "p", 0), Distribution.parse("uniform:1:40", "o"),
                                 16, 3, 0.3, 1, 0)
    metrics = sim.run(workload)
    # 24 requests in 3 groups: 21 arrive after their group's first and find its 16 shared tokens cached,
    # less the last block when a hit must stop one token short of the prompt (never here: prompts >= 17).
    assert metrics.cached_tokens == 21 * (16 // block_size) * block_size


def test_simulate_reports_prefix_caching_on_for_gemma_2():
    from kvplan.cli import main

    import contextlib
    import io
    import json

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["simulate", "gemma-2-9b", "--gpu", "H100", "--max-model-len", "8192", "--requests", "20",
                   "--shared-prefix", "6000", "--prompt-len", "100", "--output-len", "20", "--arrival-rate", "2",
                   "--no-contiguous", "--format", "json"])
    assert rc == 0
    d = json.loads(out.getvalue())
    assert d["prefix_caching"] is True and not any("prefix caching off" in n for n in d["notes"])
    assert d["prefix_hit_rate"] > 0.9  # 19 of 20 reuse the 6,000 shared tokens (375 blocks)


def test_runtime_hits_on_a_hybrid_model_give_the_same_tokens():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from kvplan.model import spec_from_config
    from kvplan.model.loaders import LoadedModel
    from kvplan.runtime import EngineConfig, LLMEngine, load_engine_model

    config = dict(model_type="gemma2", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, sliding_window=8, query_pre_attn_scalar=16)
    loaded = LoadedModel(spec_from_config(config, name="tiny-gemma2", source="test"), None, config, None)
    model = load_engine_model(loaded, dtype=torch.float32, seed=0)
    gen = torch.Generator().manual_seed(2)
    shared = torch.randint(3, 128, (29,), generator=gen).tolist()
    prompts = [shared + torch.randint(3, 128, (n,), generator=gen).tolist() for n in (3, 7, 1, 12)]
    outputs, cached = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for caching in (False, True):
            engine = LLMEngine(model, loaded.spec, EngineConfig(num_blocks=64, block_size=4, max_num_seqs=1,
                                                                max_num_batched_tokens=16,
                                                                enable_prefix_caching=caching))
            reqs = [engine.add_request(p, max_tokens=6) for p in prompts]  # one at a time: later ones hit
            engine.run()
            outputs[caching] = [r.output_token_ids for r in reqs]
            cached[caching] = [r.num_cached_tokens for r in reqs]
            assert engine.num_free_blocks == 64
            engine.kv_manager.check_integrity()
    finally:
        torch.set_num_threads(threads)
    assert engine.kv_manager.enable_prefix_caching
    assert cached[False] == [0, 0, 0, 0] and cached[True][1:] == [28, 28, 28]  # 7 whole blocks of the 29 shared
    assert outputs[True] == outputs[False]
