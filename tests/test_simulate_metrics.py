"""Every metric the simulator reports, recomputed here by brute force from the allocator's state.

The simulator keeps running counters (filled slots, integrals); this test instead scans the block
tables and refcounts at every step, rebuilds the clock, and derives each figure from scratch.
"""

import numpy as np
import pytest

from kvplan.paging import SchedulerConfig

from kvplan.simulation import Simulator, SyntheticWorkload
from kvplan.simulation.clock import CostModel
from kvplan.paging.kv_cache_manager import NULL_BLOCK
from kvplan.simulation.workload import Distribution
from kvplan.model import FullAttention, ModelSpec, SlidingWindow
from kvplan.model.grouping import page_layout

COST = CostModel(weights_bytes=8 * 10**9, kv_bytes_per_token=65536, flops_per_token=1.6e10, bandwidth_bytes_per_s=3e12,
                 peak_flops=9e14)


class BruteForce:
    """Wraps a step-mode simulator's scheduler and measures each step by scanning."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.now = 0.0
        self.steps = []  # (dt, running, allocated, filled)
        self.delays, self.admitted_tokens, self.cached = [], 0, 0
        self.seen: set[str] = set()
        sched = sim.sched
        self._schedule, self._update = sched.schedule, sched.update
        sched.schedule, sched.update = self.schedule, self.update

    def schedule(self):
        sched = self.sim.sched
        if not sched.running and sched.waiting:  # the simulator jumped over an idle gap to this arrival
            self.now = max(self.now, min(r.arrival_time for r in sched.waiting))
        before = {r.request_id for r in sched.running}
        out = self._schedule()
        for s in out.scheduled:
            r = s.request
            if r.request_id not in before:  # admitted in this step
                self.admitted_tokens += r.num_tokens
                self.cached += r.num_cached_tokens
                if r.request_id not in self.seen:
                    self.delays.append(self.now - r.arrival_time)
                    self.seen.add(r.request_id)
        written = {s.request.request_id: s.request.num_computed_tokens + s.num_new_tokens for s in out.scheduled}
        allocated, filled = self.measure(written)
        dt = self.sim.clock.step_time(sum(s.num_new_tokens for s in out.scheduled),
                                      sum(s.start_position + s.num_new_tokens for s in out.scheduled))
        self.steps.append((dt, len(sched.running), allocated, filled))
        self.now += dt
        return out

    def update(self, out, sampled):
        return self._update(out, sampled)

    def measure(self, written: dict[str, int]) -> tuple[int, int]:
        kv, running = self.sim.kv, self.sim.sched.running
        bs = kv.block_size
        per_block: dict[int, int] = {}
        for r in running:
            n = written.get(r.request_id, r.num_computed_tokens)
            for table in kv.block_tables(r):
                for i, b in enumerate(table):
                    if b != NULL_BLOCK:
                        per_block[b] = max(per_block.get(b, 0), min(bs, max(0, n - i * bs)))
        used = sum(1 for ref in kv.pool.ref_cnt if ref)
        if hasattr(kv, "reservation_blocks"):  # contiguous: every sequence, forked or still to fork, reserves
            used = sum(r.num_samples for r in running) * kv.reservation_blocks
        return used * bs, sum(per_block.values())


def brute_summary(bf: BruteForce, max_num_seqs: int) -> dict:
    dts = np.array([s[0] for s in bf.steps])
    running, allocated, filled = (np.array([s[i] for s in bf.steps], dtype=float) for i in (1, 2, 3))
    busy = dts.sum()
    delays = np.array(bf.delays)
    return {
        "peak_concurrency": int(running.max()),
        "mean_concurrency": (running * dts).sum() / busy,
        "effective_batch": (running * dts).sum() / busy / max_num_seqs,
        "memory_utilization": (filled * dts).sum() / (allocated * dts).sum(),
        "internal_fragmentation": ((allocated - filled) * dts).sum() / (allocated * dts).sum(),
        "prefix_hit_rate": bf.cached / bf.admitted_tokens,
        "prefill_tokens_saved": bf.cached,
        "queueing_delay": {q: float(np.percentile(delays, int(q[1:]))) for q in ("p50", "p90", "p99")},
        "steps": len(bf.steps),
        "busy_time": busy,
    }


LAYOUTS = {
    "full": (FullAttention((0, 1, 2, 3), 8, 128, 128),),
    "sliding": (SlidingWindow((0, 2), 8, 128, 128, window_tokens=200), FullAttention((1, 3), 8, 128, 128)),
}


@pytest.mark.parametrize("kind,contiguous,n,rate,blocks", [
    ("full", False, 1, None, 400), ("full", False, 2, 3.0, 250), ("full", True, 1, 2.0, 1200),
    ("sliding", False, 1, None, 300), ("sliding", True, 2, None, 2400), ("full", False, 1, 0.05, 400),
])
def test_metrics_match_brute_force(kind, contiguous, n, rate, blocks):
    workload = SyntheticWorkload(60, Distribution.parse("lognormal:300:0.8", "p"),
                                 Distribution.parse("uniform:1:300", "o"), 48, 2, rate, n, seed=5)
    layout = page_layout(ModelSpec("t", "t", LAYOUTS[kind], 4))
    cfg = SchedulerConfig(16, 512)
    sim = Simulator(layout, blocks, 16, 1024, cfg, COST, mode="step", contiguous=contiguous)
    bf = BruteForce(sim)
    got = sim.run(workload).summary(cfg.max_num_seqs)
    want = brute_summary(bf, cfg.max_num_seqs)
    for key, value in want.items():
        if isinstance(value, dict):
            for q, v in value.items():
                assert got[key][q] == pytest.approx(v, rel=1e-9, abs=1e-12), (key, q)
        else:
            assert got[key] == pytest.approx(value, rel=1e-9), key
    assert got["completed_requests"] == 60 and got["completed_sequences"] == 60 * n
    outputs = 0
    for item in workload:  # lengths clamped to max_model_len 1024 as the simulator documents
        prompt = min(item.num_prompt_tokens, 1023)
        outputs += min(item.output_len, 1024 - prompt) * n
    assert got["output_tokens"] == outputs
    assert sim.now == pytest.approx(bf.now)
    if rate == 0.05:  # arrivals 20 s apart on average: idle gaps exist and are skipped, not counted
        assert sim.now > got["busy_time"] * 1.5
