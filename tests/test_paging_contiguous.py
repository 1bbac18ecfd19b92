"""The contiguous baseline: one reserving manager, so `simulate` and the runtime admit the same number.

Gemma-2 alternates full and sliding-window layers: the case where the two commands used to
disagree (13 users in `simulate`, 9 in `profile --compare contiguous` on Gemma-2-9B).
"""

import pytest

from kvplan.model import FullAttention, ModelSpec, SlidingWindow, cdiv, load_model
from kvplan.model.grouping import page_layout
from kvplan.paging import NULL_BLOCK, Request, ReservingKVCacheManager, Scheduler, SchedulerConfig, reservation_blocks
from kvplan.simulation import Simulator
from kvplan.simulation.workload import WorkItem

GEMMA_LIKE = page_layout(ModelSpec("t", "t", (FullAttention((0, 2), 2, 8, 8),
                                              SlidingWindow((1, 3), 2, 8, 8, window_tokens=8)), 4))


def items(n, prompt, output):
    return [WorkItem(index=i, arrival_time=0.0, prompt_len=prompt, output_len=output) for i in range(n)]


@pytest.mark.parametrize("chunk,want", [(8192, 9), (2048, 11), (512, 12), (1, 13)])
def test_gemma_2_9b_reservation(chunk, want):
    """Full groups reserve max_model_len; the sliding group the span one step reads: W - 1 + chunk."""
    layout = page_layout(load_model("gemma-2-9b").spec)
    sliding = layout.groups[1].attention
    assert sliding.window_tokens == 4096
    span = min(4096 - 1 + chunk, 8192)
    assert reservation_blocks(layout, 8192, 16, chunk) == 512 + min(cdiv(span, 16) + (span < 8192), 512)
    assert 10_000 // reservation_blocks(layout, 8192, 16, chunk) == want


@pytest.mark.parametrize("budget", [16, 40])
def test_simulate_and_the_runtime_manager_admit_the_same(budget):
    """The simulator's contiguous run and a Scheduler over the runtime's manager (what LLMEngine builds)
    hold the same number of requests at once: num_blocks // reservation_blocks."""
    num_blocks, max_model_len = 60, 40
    reservation = reservation_blocks(GEMMA_LIKE, max_model_len, 4, budget)
    config = SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=budget)
    sim = Simulator(GEMMA_LIKE, num_blocks, 4, max_model_len, config, contiguous=True, mode="step", check=True)
    simulated = sim.run(items(12, 30, 6)).peak_concurrency

    manager = ReservingKVCacheManager(GEMMA_LIKE, num_blocks, 4, max_model_len, budget)
    sched = Scheduler(manager, config)
    for i in range(12):
        sched.add_request(Request(str(i), list(range(100 * i, 100 * i + 30)), 6))
    most = 0
    while sched.has_unfinished_requests():
        out = sched.schedule()
        most = max(most, sched.num_running)
        sched.update(out, {s.request.request_id: 7 for s in out.scheduled if s.needs_logits})
        manager.check_integrity()
    assert simulated == most == num_blocks // reservation
    assert manager.pool.num_free_blocks == num_blocks


def test_sliding_group_reuses_its_own_blocks_like_a_ring():
    kv = ReservingKVCacheManager(GEMMA_LIKE, 100, 4, max_model_len=40, chunk_tokens=4)
    full_blocks, sliding_blocks = kv.per_group
    assert full_blocks == 10 and sliding_blocks == cdiv(8 - 1 + 4, 4) + 1
    r = Request("a", list(range(4)), 36)
    assert kv.allocate_slots(r, 4)
    assert kv.num_used_blocks == kv.reservation_blocks
    r.num_computed_tokens = 4
    seen = set()
    for n in range(4, 40):
        r.output_token_ids.append(n)
        assert kv.allocate_slots(r, 1)
        r.num_computed_tokens += 1
        sliding = kv.block_tables(r)[1]
        first = max(0, n - 8 + 1) // 4  # the query at n reads positions n - 7 .. n
        assert all(b != NULL_BLOCK for b in sliding[first:]) and sum(b != NULL_BLOCK for b in sliding) <= 4
        seen.update(b for b in sliding if b != NULL_BLOCK)
        assert kv.num_used_blocks == kv.reservation_blocks  # never more than the reservation
        kv.check_integrity()
    assert len(seen) == cdiv(8, 4) + 1  # decoding reuses three of the four (the fourth is for a 4-token chunk)
    kv.free(r)
    assert kv.num_free_blocks == kv.pool.num_free_blocks == 100 and kv.num_filled_slots == 0


def test_samples_reserve_at_admission_and_forks_copy():
    kv = ReservingKVCacheManager(GEMMA_LIKE, 100, 4, max_model_len=40, chunk_tokens=8)
    parent = Request("p", list(range(6)), 10, num_samples=3)
    assert kv.allocate_slots(parent, 6)
    assert kv.num_used_blocks == 3 * kv.reservation_blocks
    parent.num_computed_tokens = 6
    parent.output_token_ids.append(8)
    assert kv.allocate_slots(parent, 1)  # a one-token write into the tail, then the fork copies it
    parent.num_computed_tokens = 7
    child = Request("c", list(range(6)) + [8, 9], 10)
    kv.fork(parent, child)
    copies = kv.take_copies()
    assert [s for s, _ in copies] == [b for t in kv.block_tables(parent) for b in t if b != NULL_BLOCK]
    assert not set(d for _, d in copies) & set(s for s, _ in copies)  # nothing shared
    assert kv.num_used_blocks == 3 * kv.reservation_blocks and kv.num_filled_slots == 2 * 2 * 7
    kv.check_integrity()
    for r in (parent, child):
        kv.free(r)
    assert kv.pool.num_free_blocks == 100


def test_a_reservation_that_does_not_fit_admits_nothing():
    kv = ReservingKVCacheManager(GEMMA_LIKE, 13, 4, max_model_len=40, chunk_tokens=4)
    assert kv.reservation_blocks == 14
    assert not kv.allocate_slots(Request("a", [1, 2], 3), 2)
    assert kv.pool.num_free_blocks == 13 and kv.num_blocks_held(Request("a", [1], 1)) == 0


def test_runtime_contiguous_matches_paged_tokens_and_capacity():
    """The torch engine in contiguous mode on a tiny Gemma-2: same tokens as paged, and as many
    requests at once as the simulator's contiguous run on the same layout."""
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
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 128, (n,), generator=gen).tolist() for n in (21, 9, 17, 30, 12, 25)]
    outputs, most = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for contiguous in (False, True):
            engine = LLMEngine(model, loaded.spec, EngineConfig(num_blocks=60, block_size=4, max_model_len=40,
                                                                max_num_seqs=16, max_num_batched_tokens=16,
                                                                contiguous=contiguous))
            reqs = [engine.add_request(p, max_tokens=40 - len(p) - 1) for p in prompts]
            peak = []
            engine.run(on_step=lambda eng, out: peak.append(eng.scheduler.num_running))
            outputs[contiguous], most[contiguous] = [r.output_token_ids for r in reqs], max(peak)
            assert engine.num_free_blocks == 60
    finally:
        torch.set_num_threads(threads)
    assert outputs[True] == outputs[False]
    layout = engine.layout
    sim = Simulator(layout, 60, 4, 40, SchedulerConfig(16, 16), contiguous=True)
    work = [WorkItem(index=i, arrival_time=0.0, prompt_len=len(p), output_len=40 - len(p) - 1)
            for i, p in enumerate(prompts)]
    assert most[True] == sim.run(work).peak_concurrency == 60 // reservation_blocks(layout, 40, 4, 16) == 3
