"""Scheduler with a fake forward pass: budget, FIFO, chunked prefill, preemption, prefix hits, finishing."""

import pytest

from kvplan.errors import InputError
from kvplan.paging import KVCacheManager, Request, RequestStatus, Scheduler, SchedulerConfig
from kvplan.model import FullAttention, ModelSpec
from kvplan.model.grouping import page_layout

FULL = page_layout(ModelSpec("t", "t", (FullAttention((0,), 1, 8, 8),), 1))


def make(num_blocks=64, bs=4, **cfg):
    kv = KVCacheManager(FULL, num_blocks, bs)
    return Scheduler(kv, SchedulerConfig(**cfg)), kv


def step(s: Scheduler, token=7):
    out = s.schedule()
    finished = s.update(out, {x.request.request_id: token for x in out.scheduled if x.needs_logits})
    s.kv.check_integrity()
    return out, finished


def plan(out):
    return [(x.request.request_id, x.num_new_tokens, x.start_position) for x in out.scheduled]


def test_budget_chunked_prefill_and_fifo():
    s, _ = make(max_num_seqs=4, max_num_batched_tokens=10)
    a, b, c = Request("a", list(range(8)), 3), Request("b", list(range(100, 106)), 3), Request("c", [200], 3)
    for r in (a, b, c):
        s.add_request(r)
    out, _ = step(s)
    assert plan(out) == [("a", 8, 0), ("b", 2, 0)]  # b's prompt is chunked; c waits behind it
    assert [x.needs_logits for x in out.scheduled] == [True, False] and a.output_token_ids == [7]
    out, _ = step(s)
    assert plan(out) == [("a", 1, 8), ("b", 4, 2), ("c", 1, 0)]
    assert b.num_output_tokens == 1 and c.num_output_tokens == 1


def test_no_chunking_blocks_the_queue_head():
    s, _ = make(max_num_seqs=4, max_num_batched_tokens=8, enable_chunked_prefill=False)
    s.add_request(Request("a", list(range(6)), 5))
    s.add_request(Request("b", list(range(10, 15)), 5))
    s.add_request(Request("c", [99], 5))
    out, _ = step(s)
    assert plan(out) == [("a", 6, 0)]  # b (5 tokens) does not fit the 2 left, and c may not pass it


def test_max_num_seqs():
    s, _ = make(max_num_seqs=2, max_num_batched_tokens=64)
    for i in range(3):
        s.add_request(Request(str(i), [i + 50], 10))
    out, _ = step(s)
    assert [x.request.request_id for x in out.scheduled] == ["0", "1"] and s.num_waiting == 1


def test_preemption_by_recompute_newest_first():
    s, kv = make(num_blocks=4, bs=4, max_num_seqs=4, max_num_batched_tokens=64)
    a, b = Request("a", list(range(8)), 5), Request("b", list(range(20, 28)), 10)
    s.add_request(a)
    s.add_request(b)
    step(s)  # both prefill: 2 blocks each, pool full
    out, _ = step(s)  # a's token at position 8 needs a third block: the newest request makes room
    assert [r.request_id for r in out.preempted] == ["b"]
    assert b.status is RequestStatus.PREEMPTED and b.num_computed_tokens == 0 and kv.num_blocks_held(b) == 0
    assert b.num_preemptions == 1 and s.waiting[0] is b and b.output_token_ids == [7]
    assert plan(out) == [("a", 1, 8)]  # no admission in a step that preempted
    while a.status is RequestStatus.RUNNING:
        step(s)
    out, _ = step(s)  # b comes back: recomputes prompt + its sampled token; its first block is still cached
    assert b.num_cached_tokens == 4 and plan(out) == [("b", 5, 4)]
    assert b.output_token_ids == [7, 7]  # the re-prefill still samples (nano-vllm #217)


def test_full_prompt_hit_recomputes_last_token():
    s, _ = make(max_num_seqs=4, max_num_batched_tokens=64)
    s.add_request(Request("a", list(range(8)), 1))
    step(s)
    b = Request("b", list(range(8)), 1)
    s.add_request(b)
    out, finished = step(s)
    assert plan(out) == [("b", 4, 4)]  # capped at num_tokens - 1, whole blocks: 4 hit, 4 computed
    assert out.scheduled[0].needs_logits and finished == [b]


def test_same_step_admissions_hit_each_other_as_in_vllm():
    """b is admitted after a in the same step and finds a's full blocks, registered when allocated."""
    s, _ = make(max_num_seqs=4, max_num_batched_tokens=64)
    a, b = Request("a", list(range(9)), 2), Request("b", list(range(9)), 2)
    s.add_request(a)
    s.add_request(b)
    out, _ = step(s)
    assert b.num_cached_tokens == 8 and plan(out) == [("a", 9, 0), ("b", 1, 8)]


def test_finish_on_length_and_eos_frees_blocks():
    s, kv = make(max_num_seqs=4, max_num_batched_tokens=64)
    a = Request("a", [1, 2, 3], 2)
    b = Request("b", [4, 5, 6], 50, eos_token_id=7)
    s.add_request(a)
    s.add_request(b)
    out, finished = step(s, token=3)
    assert finished == []
    out, finished = step(s, token=7)
    assert {r.request_id for r in finished} == {"a", "b"}
    assert a.status is RequestStatus.FINISHED_LENGTH and b.status is RequestStatus.FINISHED_STOPPED
    assert not s.has_unfinished_requests() and kv.pool.num_used_blocks == 0


def test_fork_joins_running_and_copies_on_write():
    s, kv = make(max_num_seqs=4, max_num_batched_tokens=64)
    p = Request("p", [1, 2, 3, 4, 5, 6], 5)
    s.add_request(p)
    step(s)
    child = Request("p.1", p.prompt_token_ids, 5, [8])
    s.fork(p, child)
    assert s.num_running == 2 and child.num_computed_tokens == 6
    out, _ = step(s)
    assert len(out.copies) == 1 and plan(out) == [("p", 1, 6), ("p.1", 1, 6)]


def test_config_validation():
    with pytest.raises(InputError, match="at least"):
        SchedulerConfig(max_num_seqs=512, max_num_batched_tokens=256)
    with pytest.raises(InputError):
        SchedulerConfig(max_num_seqs=0, max_num_batched_tokens=8)
    s, _ = make(max_num_seqs=2, max_num_batched_tokens=8)
    with pytest.raises(InputError, match="n=3"):
        s.add_request(Request("x", [1], 1, num_samples=3))


def test_the_step_limits_are_required():
    """The limits are the resolved deployment's (the engine policies hold the defaults): a config, scheduler or
    simulator built without them is refused at the call instead of running on a second copy of a default."""
    from kvplan.simulation import Simulator

    with pytest.raises(TypeError, match="max_num_seqs"):
        SchedulerConfig()
    with pytest.raises(TypeError, match="max_num_batched_tokens"):
        SchedulerConfig(16)
    with pytest.raises(TypeError, match="config"):
        Scheduler(KVCacheManager(FULL, 8, 4))
    with pytest.raises(TypeError, match="config"):
        Simulator(FULL, 8, 4, 64)
    assert SchedulerConfig(16, 64) == SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=64,
                                                      enable_chunked_prefill=True)


def test_max_num_seqs_counts_the_samples_a_parent_will_fork():
    from kvplan.paging import KVCacheManager, Request, Scheduler, SchedulerConfig
    from kvplan.model import FullAttention, ModelSpec
    from kvplan.model.grouping import page_layout

    layout = page_layout(ModelSpec("t", "t", (FullAttention((0,), 1, 8, 8),), 1))
    sched = Scheduler(KVCacheManager(layout, 1000, 4), SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64))
    for i in range(3):
        sched.add_request(Request(f"r{i}", [100 * i + j for j in range(5)], 10, num_samples=2))
    out = sched.schedule()
    assert [s.request.request_id for s in out.scheduled] == ["r0", "r1"]  # 2 x 2 samples = 4 sequences
    assert sched.num_sequences == 4


def test_registering_again_after_the_forward_changes_nothing():
    """allocate_slots registers what a chunk fills; calling cache_blocks after every chunk as well
    (the protocol of engines that cache after the forward) finds nothing more: same hits, keys, pool."""
    import random

    class EveryStep(Scheduler):
        def update(self, out, sampled):
            finished = super().update(out, sampled)
            for s in out.scheduled:
                if s.request not in finished:
                    self.kv.cache_blocks(s.request)
            return finished

    def run(cls):
        kv = KVCacheManager(FULL, 40, 4)
        sched = cls(kv, SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=12))
        rng = random.Random(3)
        reqs = [Request(str(i), [1, 2, 3, 4, 5, 6, 7][:rng.randint(1, 7)] + [100 + i] * rng.randint(0, 9),
                        rng.randint(1, 12)) for i in range(30)]
        for r in reqs:
            sched.add_request(r)
        while sched.has_unfinished_requests():
            out = sched.schedule()
            sched.update(out, {x.request.request_id: 9 for x in out.scheduled if x.needs_logits})
            kv.check_integrity()
        return [r.num_cached_tokens for r in reqs], kv.pool.free_block_ids(), list(kv.pool.block_key)

    assert run(Scheduler) == run(EveryStep)
    assert sum(run(Scheduler)[0]) > 0
