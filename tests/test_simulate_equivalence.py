"""The event-driven run equals the step-by-step run: every metric, the timeline and the final pool."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvplan.paging import SchedulerConfig

from kvplan.simulation import Simulator, SyntheticWorkload
from kvplan.simulation.clock import CostModel
from kvplan.simulation.simulator import PoolTooSmall
from kvplan.simulation.workload import Distribution
from kvplan.model import ChunkedLocal, FullAttention, ModelSpec, SlidingWindow
from kvplan.model.grouping import page_layout

LAYOUTS = {
    "full": (FullAttention((0, 1, 2, 3), 2, 64, 64),),
    "sliding": (SlidingWindow((0, 2), 2, 64, 64, window_tokens=100), FullAttention((1, 3), 2, 64, 64)),
    "chunked": (ChunkedLocal((0, 2), 2, 64, 64, window_tokens=64), FullAttention((1, 3), 2, 64, 64)),
}
COST = CostModel(weights_bytes=10**9, kv_bytes_per_token=4096, flops_per_token=2e9, bandwidth_bytes_per_s=2e12,
                 peak_flops=4e14)


def run(kind, mode, workload, num_blocks, contiguous=False, clock=None, cfg=None, caching=True):
    layout = page_layout(ModelSpec("t", "t", LAYOUTS[kind], 4))
    sim = Simulator(layout, num_blocks, 16, 2048, cfg or SchedulerConfig(32, 512), clock, mode=mode,
                    contiguous=contiguous, prefix_caching=caching)
    metrics = sim.run(workload)
    return metrics, sim


def canonical_pool(sim):
    """The pool up to renaming blocks: the free list as cache keys, and the key set."""
    pool = sim.kv.pool
    return [pool.block_key[b] for b in pool.free_block_ids()], set(pool.cached_blocks), pool.num_evictions


def assert_same(kind, workload, num_blocks, **kw):
    try:
        step, step_sim = run(kind, "step", workload, num_blocks, **kw)
    except PoolTooSmall as e:  # a request that cannot run alone: both runs must say so
        with pytest.raises(PoolTooSmall, match=re.escape(str(e))):
            run(kind, "event", workload, num_blocks, **kw)
        return None
    event, event_sim = run(kind, "event", workload, num_blocks, **kw)
    assert event.summary(32) == step.summary(32)
    assert event.timeline == step.timeline and event.delays == step.delays
    assert event_sim.now == step_sim.now
    if not kw.get("contiguous"):
        assert canonical_pool(event_sim) == canonical_pool(step_sim)
    return step


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(LAYOUTS)), seed=st.integers(0, 10**6), requests=st.integers(1, 40),
       prompt=st.sampled_from(["uniform:1:300", "lognormal:120:1", "16", "0"]),
       output=st.sampled_from(["uniform:1:200", "exponential:60", "1", "33"]),
       shared=st.sampled_from([0, 0, 16, 50]), groups=st.integers(1, 3), n=st.sampled_from([1, 1, 2, 3]),
       rate=st.sampled_from([None, 0.05, 1.0]), num_blocks=st.integers(60, 400), contiguous=st.booleans(),
       cost=st.booleans(), caching=st.booleans())
def test_event_equals_step(kind, seed, requests, prompt, output, shared, groups, n, rate, num_blocks, contiguous,
                           cost, caching):
    if prompt == "0" and not shared:
        prompt = "1"
    workload = SyntheticWorkload(requests, Distribution.parse(prompt, "p", 0), Distribution.parse(output, "o"),
                                 shared, groups, rate, n, seed)
    if contiguous:
        num_blocks = max(num_blocks, 2048 * 4 * n // 16)  # room for one request's reservations
    result = assert_same(kind, workload, num_blocks, contiguous=contiguous, clock=COST if cost else None,
                         caching=caching)
    if result is not None:
        assert result.completed_requests == requests and result.completed_sequences == requests * n


def test_event_equals_step_under_pressure_and_budget():
    """Preemptions and steps whose budget binds (the event run falls back to a full step)."""
    workload = SyntheticWorkload(120, Distribution.parse("lognormal:400:1", "p"), Distribution.parse("uniform:1:400", "o"),
                                 64, 2, None, 2, seed=11)
    result = assert_same("full", workload, 150, cfg=SchedulerConfig(24, 300), clock=COST)
    assert result.preemptions > 50 and result.cached_tokens > 0
    result = assert_same("sliding", workload, 150, cfg=SchedulerConfig(24, 300), caching=False)
    assert result.preemptions > 50
    # With hybrid prefix caching a recompute resumes at its hit, and a 300-token chunk from there can
    # need a few blocks more than the chunks from 0 did (the window's span peak): a slightly larger pool.
    result = assert_same("sliding", workload, 160, cfg=SchedulerConfig(24, 300))
    assert result.preemptions > 50 and result.cached_tokens > 0


def test_event_run_touches_few_requests():
    workload = SyntheticWorkload(200, Distribution.parse("200", "p"), Distribution.parse("400", "o"), seed=1)
    metrics, sim = run("full", "event", workload, 4000)
    decode_tokens = 200 * 399
    assert sim.sched.num_wakes < decode_tokens / 50  # woken about once per request, not once per token
    assert metrics.completed_requests == 200


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(LAYOUTS)), seed=st.integers(0, 10**6), prompt=st.sampled_from([300, 700, 1500]),
       shared=st.sampled_from([0, 64, 600]), groups=st.integers(1, 3), num_blocks=st.integers(150, 600),
       budget=st.sampled_from([256, 512, 1024]), caching=st.booleans())
def test_quiet_crossings_equal_steps(kind, seed, prompt, shared, groups, num_blocks, budget, caching):
    """Steps that only cross block boundaries are recorded without stepping (EventScheduler.cross_quietly)
    while the head of the queue waits: with prompts above the budget (its chunk capped) and shared prefixes
    in a small pool, a crossing may evict the head's hit; every figure still equals the step-by-step run."""
    workload = SyntheticWorkload(60, Distribution.parse(f"uniform:{prompt // 2}:{prompt}", "p"),
                                 Distribution.parse("uniform:20:300", "o"), min(shared, prompt // 2), groups, None, 1,
                                 seed)
    assert_same(kind, workload, num_blocks, cfg=SchedulerConfig(16, budget), caching=caching)


def test_quiet_crossings_happen_and_match():
    """The fast path is taken (many steps), with evictions of cached prefixes, and changes no figure."""
    workload = SyntheticWorkload(80, Distribution.parse("uniform:200:1200", "p"), Distribution.parse("uniform:50:400", "o"),
                                 300, 3, None, 1, 7)
    step = assert_same("full", workload, 300, cfg=SchedulerConfig(16, 512))
    event, sim = run("full", "event", workload, 300, cfg=SchedulerConfig(16, 512))
    assert sim.sched.num_quiet_crossings > 30 and sim.kv.pool.num_evictions > 0 and step.preemptions > 0
