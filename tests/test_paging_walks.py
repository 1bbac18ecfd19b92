"""The remembered prefix walk (KVCacheManager._hit: the last walk taken up again while its blocks stay
cached) equals a fresh walk at every call, in simulations with prefix sharing, preemption and evictions."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvplan.model import ChunkedLocal, FullAttention, ModelSpec, SlidingWindow
from kvplan.model.grouping import page_layout
from kvplan.paging import KVCacheManager, SchedulerConfig
from kvplan.simulation import Simulator, SyntheticWorkload
from kvplan.simulation import simulator as simulator_module
from kvplan.simulation.simulator import PoolTooSmall
from kvplan.simulation.workload import Distribution

LAYOUTS = {
    "full": (FullAttention((0, 1, 2, 3), 2, 64, 64),),
    "full2": (FullAttention((0, 2), 2, 64, 64), FullAttention((1, 3), 1, 64, 64)),
    "sliding": (SlidingWindow((0, 2), 2, 64, 64, window_tokens=100), FullAttention((1, 3), 2, 64, 64)),
    "chunked": (ChunkedLocal((0, 2), 2, 64, 64, window_tokens=64), FullAttention((1, 3), 2, 64, 64)),
}


class FreshWalks(KVCacheManager):
    """Checks each _hit against a walk that remembers nothing."""
    calls = resumed = 0

    def _hit(self, req):
        remembered = self._walked is not None and self._walked.req is req
        got = super()._hit(req)
        kept, self._walked = self._walked, None
        fresh = super()._hit(req)
        self._walked = kept
        assert (got[0], got[1], got[2]) == (fresh[0], fresh[1], fresh[2])
        FreshWalks.calls += 1
        FreshWalks.resumed += remembered
        return got


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(sorted(LAYOUTS)), seed=st.integers(0, 10**6), shared=st.sampled_from([16, 100, 400]),
       groups=st.integers(1, 3), num_blocks=st.integers(80, 400), budget=st.sampled_from([128, 512]))
def test_remembered_walks_equal_fresh_ones(monkeypatch, kind, seed, shared, groups, num_blocks, budget):
    monkeypatch.setattr(simulator_module, "KVCacheManager", FreshWalks)
    layout = page_layout(ModelSpec("t", "t", LAYOUTS[kind], 4))
    workload = SyntheticWorkload(40, Distribution.parse("uniform:50:600", "p"), Distribution.parse("uniform:1:200", "o"),
                                 shared, groups, None, 1, seed)
    sim = Simulator(layout, num_blocks, 16, 2048, SchedulerConfig(16, budget), check=True)
    assert isinstance(sim.kv, FreshWalks)
    try:
        sim.run(workload)
    except PoolTooSmall:
        return


def test_walks_are_remembered_and_checked(monkeypatch):
    """The run above does take remembered walks up again (not only fresh ones)."""
    monkeypatch.setattr(simulator_module, "KVCacheManager", FreshWalks)
    FreshWalks.calls = FreshWalks.resumed = 0
    layout = page_layout(ModelSpec("t", "t", LAYOUTS["full"], 4))
    workload = SyntheticWorkload(60, Distribution.parse("uniform:200:600", "p"), Distribution.parse("uniform:50:300", "o"),
                                 300, 2, None, 1, 3)
    metrics = Simulator(layout, 150, 16, 2048, SchedulerConfig(16, 256), check=True).run(workload)
    assert metrics.completed_requests == 60 and metrics.preemptions > 0 and metrics.cached_tokens > 0
    assert FreshWalks.resumed > 100 and FreshWalks.calls > FreshWalks.resumed
