"""The paged-KV engine against transformers' own forward, on tiny random fp32 models (CPU).

Oracle: the same weights in a second model with attn_implementation="eager", fed each
sequence's final tokens through its default cache (DynamicCache, sliding layers included)
one token at a time after the prompt: teacher forcing, so both sides see the same tokens.
Every logits row the engine sampled from must match the oracle's row for that position.

Tolerance: fp32, atol = rtol = 1e-4. Observed differences are <= 1e-6 (summation order of
SDPA / the reference kernels vs eager attention); a wrong block, position, window or sink
shows up as O(1e-2..1).

Most tests use the kernels' torch reference path (TRITON_INTERPRET unset); one runs the Triton
kernels under the interpreter. After every run, all blocks are back in the pool, the allocator
is consistent, and the pool holds exactly num_blocks x page_bytes, as the estimate says.
"""

import os

import pytest
import torch

try:  # Triton fixes interpreter vs compiler for its own jit helpers when first imported: do it while
    import triton  # noqa: F401  # conftest's TRITON_INTERPRET=1 is still set (tests below unset it)
except ImportError:
    pass

from kvplan.runtime import EngineConfig, LLMEngine, SamplingParams, load_engine_model
from kvplan.errors import UnsupportedModelError
from kvplan.model import spec_from_config
from kvplan.model.loaders import LoadedModel

ATOL = RTOL = 1e-4
VOCAB = 128

TINY = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)
FAMILIES = {
    "llama": {},
    "qwen2": {},
    "qwen3": {},
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
    "mistral": dict(sliding_window=8),
    "gemma2": dict(sliding_window=8, attn_logit_softcapping=20.0, final_logit_softcapping=30.0,
                   query_pre_attn_scalar=16),
    "gemma3_text": dict(sliding_window=8, layer_types=["sliding_attention", "full_attention"]),
    "gpt_oss": dict(sliding_window=8, num_local_experts=4, num_experts_per_tok=2,
                    layer_types=["sliding_attention", "full_attention"]),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls only lose from intra-op threads, badly so on a busy 2-core CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def torch_reference_kernels(monkeypatch):
    """The Triton interpreter is slow: use the kernels' torch path unless a test opts in."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def tiny_loaded(model_type: str, **extra) -> LoadedModel:
    config = {"model_type": model_type, **TINY, **FAMILIES.get(model_type, {}), **extra}
    return LoadedModel(spec_from_config(config, name=f"tiny-{model_type}", source="test"), None, config, None)


def make_engine(model_type="llama", *, num_blocks=64, block_size=4, seed=0, **config):
    loaded = tiny_loaded(model_type)
    model = load_engine_model(loaded, dtype=torch.float32, seed=seed)
    cfg = dict(max_num_seqs=8, max_num_batched_tokens=32)
    cfg.update(config)
    return LLMEngine(model, loaded.spec, EngineConfig(num_blocks=num_blocks, block_size=block_size, **cfg))


def prompts_of(lengths, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]


def run_recording(engine: LLMEngine, on_step=None) -> dict[str, list[torch.Tensor]]:
    """Run to completion; the logits row behind every sampled token, per request id (`on_step` sees
    each step too)."""
    rows: dict[str, list[torch.Tensor]] = {}

    def record(eng, out):
        if on_step is not None:
            on_step(eng, out)
        for i, rid in enumerate(out.logits_request_ids):
            rows.setdefault(rid, []).append(out.logits[i].clone())
        for req in eng.requests.values():  # forked children sampled their first token from the parent's row
            parent, _, _ = req.request_id.partition(".")
            if req.request_id != parent and req.request_id not in rows and parent in rows:
                rows[req.request_id] = [rows[parent][0]]

    engine.run(on_step=record)
    return rows


def oracle(engine: LLMEngine):
    """transformers' eager model with the engine's weights."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_config(engine.model.hf_config, dtype=torch.float32, attn_implementation="eager")
    ref.load_state_dict(engine.model.model.state_dict())
    return ref.eval()


@torch.inference_mode()
def oracle_rows(ref, tokens: list[int], prompt_len: int) -> torch.Tensor:
    """Logits predicting tokens[prompt_len:], via the prompt forward then one cached step per token."""
    out = ref(input_ids=torch.tensor([tokens[:prompt_len]]), use_cache=True)
    rows, cache = [out.logits[0, -1]], out.past_key_values
    for t in tokens[prompt_len:-1]:
        out = ref(input_ids=torch.tensor([[t]]), past_key_values=cache, use_cache=True)
        rows.append(out.logits[0, -1])
        cache = out.past_key_values
    return torch.stack(rows)


def assert_matches_oracle(engine: LLMEngine, rows: dict[str, list[torch.Tensor]]) -> float:
    ref = oracle(engine)
    worst = 0.0
    for rid, req in engine.requests.items():
        got = torch.stack(rows[rid])
        want = oracle_rows(ref, req.all_token_ids, req.num_prompt_tokens)
        assert got.shape == want.shape, rid
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{rid}: {m}")
        worst = max(worst, (got - want).abs().max().item())
    return worst


def assert_clean(engine: LLMEngine) -> None:
    """All blocks back, allocator consistent, pool bytes == num_blocks x page bytes."""
    assert not engine.has_unfinished_requests()
    assert engine.num_free_blocks == engine.config.num_blocks
    engine.kv_manager.check_integrity()
    page = engine.layout.page_bytes(engine.kv, 1, engine.config.block_size)
    assert engine.pool.nbytes == engine.config.num_blocks * page


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_logits_match_transformers_mixed_batch(model_type):
    # Lengths straddle block boundaries and the window (8); a 32-token budget chunks the long prompts.
    engine = make_engine(model_type)
    for prompt in prompts_of([1, 5, 12, 29, 40]):
        engine.add_request(prompt, max_tokens=10)
    rows = run_recording(engine)
    assert_matches_oracle(engine, rows)
    assert_clean(engine)


def test_prefix_cache_hits_are_read_through_the_block_table():
    engine = make_engine("llama")
    shared = prompts_of([17], seed=5)[0]
    tails = prompts_of([3, 6, 1], seed=6)
    engine.add_request(shared + tails[0], max_tokens=4)
    rows = run_recording(engine)  # first request finishes; its full blocks stay cached
    late = [engine.add_request(shared + t, max_tokens=6) for t in tails[1:]]
    late.append(engine.add_request(shared, max_tokens=3))  # whole prompt cached: the L-1 rule applies
    rows.update(run_recording(engine))
    assert [r.num_cached_tokens for r in late] == [16, 16, 16]
    assert_matches_oracle(engine, rows)
    assert_clean(engine)


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_a_hit_on_blocks_computed_in_the_same_step_reads_them_after_they_are_stored(model_type):
    """Blocks are registered when allocated (vLLM's rule): the second request, admitted in the same
    step, hits the 4 full blocks the first computes in that very forward. Its attention reads them
    only after every layer stored the batch's K/V, so its logits are still transformers' own."""
    engine = make_engine(model_type)
    shared = prompts_of([18], seed=7)[0]
    engine.add_request(shared + [5, 6, 7], max_tokens=5)
    second = engine.add_request(shared + [9], max_tokens=5)
    steps = []
    rows = run_recording(engine, on_step=lambda eng, out: steps.append(out))
    # One step: 21 prompt tokens of the first, the 3 of the second past its 16-token hit.
    assert (steps[0].num_prefill, steps[0].num_tokens) == (2, 21 + 3) and second.num_cached_tokens == 16
    assert_matches_oracle(engine, rows)
    assert_clean(engine)


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_preemption_and_recompute_keep_logits_exact(model_type):
    # 16 blocks of 4 tokens cannot hold four 30-token requests: the newest is preempted and recomputed.
    # (16: a 31-token recompute in one chunk holds 8 full + 8 sliding blocks, window 8 included.)
    engine = make_engine(model_type, num_blocks=16, max_num_batched_tokens=64)
    for prompt in prompts_of([14, 10, 12, 8], seed=3):
        engine.add_request(prompt, max_tokens=18)
    rows = run_recording(engine)
    assert sum(r.num_preemptions for r in engine.requests.values()) > 0
    assert_matches_oracle(engine, rows)
    assert_clean(engine)


def test_forked_samples_share_blocks_then_copy_on_write():
    engine = make_engine("llama")
    copies = []
    prompt = prompts_of([10], seed=7)[0]  # 10 tokens: the last block is partial and shared by the forks
    engine.add_request(prompt, max_tokens=8, sampling=SamplingParams(temperature=1.0, seed=3), n=3)
    rows: dict[str, list[torch.Tensor]] = {}
    engine.run(on_step=lambda eng, out: (copies.append(out.num_copies),
                                          [rows.setdefault(r, []).append(out.logits[i].clone())
                                           for i, r in enumerate(out.logits_request_ids)]))
    ids = sorted(engine.requests)
    assert ids == ["req-0", "req-0.1", "req-0.2"]
    for child in ids[1:]:
        rows[child].insert(0, rows["req-0"][0])
    outputs = {tuple(engine.requests[i].output_token_ids) for i in ids}
    assert len(outputs) == 3, "seeded samples should differ"
    assert sum(copies) == 2  # each child copies the shared partial block once; the parent then owns it
    assert_matches_oracle(engine, rows)
    assert_clean(engine)


def test_prefix_hits_forks_preemption_and_chunking_together():
    # 20 blocks of 4 tokens for six sequences of up to 30 tokens sharing an 8-token prefix, two of
    # them sampled twice: hits, copy-on-write, preemption and 16-token chunks interleave.
    engine = make_engine("llama", num_blocks=20, max_num_batched_tokens=16)
    shared = prompts_of([8], seed=21)[0]
    for i, tail in enumerate(prompts_of([5, 9, 2, 11], seed=22)):
        engine.add_request(shared + tail, max_tokens=12, sampling=SamplingParams(temperature=1.0, seed=i),
                           n=2 if i % 2 else 1)
    rows = run_recording(engine)
    reqs = engine.requests.values()
    assert len(engine.requests) == 6
    assert sum(r.num_preemptions for r in reqs) > 0 and any(r.num_cached_tokens for r in reqs)
    assert_matches_oracle(engine, rows)
    assert_clean(engine)


def test_greedy_batch_equals_each_request_alone():
    prompts = prompts_of([3, 9, 17, 26], seed=11)
    batch = make_engine("gemma2")
    together = batch.generate(prompts, max_tokens=12)
    assert_clean(batch)
    for prompt, out in zip(prompts, together):
        alone = make_engine("gemma2")
        assert alone.generate([prompt], max_tokens=12) == [out]


def test_seeded_sampling_is_reproducible_and_top_p_narrows():
    prompts = prompts_of([5, 8], seed=2)
    hot = SamplingParams(temperature=1.5, top_p=0.9, seed=42)
    first = make_engine("llama").generate(prompts, max_tokens=8, sampling=hot)
    again = make_engine("llama").generate(prompts, max_tokens=8, sampling=hot)
    assert first == again
    narrow = SamplingParams(temperature=1.0, top_p=1e-6, seed=1)  # only the top token survives
    assert make_engine("llama").generate(prompts, max_tokens=8, sampling=narrow) == \
        make_engine("llama").generate(prompts, max_tokens=8)


def test_triton_kernels_under_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from kvplan.kernels import kernel_backend

    assert kernel_backend("cpu") == "triton-interpret"
    engine = make_engine("gpt_oss", max_num_batched_tokens=16)  # window + sinks through the Triton decode kernel
    for prompt in prompts_of([6, 11]):
        engine.add_request(prompt, max_tokens=4)
    rows = run_recording(engine)
    assert_matches_oracle(engine, rows)
    assert_clean(engine)


def test_fp16_kv_pool_halves_bytes_and_stays_close():
    engine = make_engine("llama", kv_dtype="fp16")
    assert engine.pool.dtype == torch.float16
    assert engine.pool.nbytes == make_engine("llama").pool.nbytes // 2
    for prompt in prompts_of([7, 13]):
        engine.add_request(prompt, max_tokens=6)
    rows = run_recording(engine)
    ref = oracle(engine)
    for rid, req in engine.requests.items():
        want = oracle_rows(ref, req.all_token_ids, req.num_prompt_tokens)
        torch.testing.assert_close(torch.stack(rows[rid]), want, atol=2e-2, rtol=2e-2)
    assert_clean(engine)


def test_contiguous_baseline_reserves_max_model_len():
    engine = make_engine("llama", num_blocks=24, contiguous=True, max_model_len=32)  # 8 blocks per request
    for prompt in prompts_of([5, 6, 7, 8, 9]):
        engine.add_request(prompt, max_tokens=4)
    most = []
    engine.run(on_step=lambda eng, out: most.append(eng.scheduler.num_running))
    assert max(most) == 3
    assert engine.num_free_blocks == engine.config.num_blocks


def test_local_checkpoint_loads_offline(tmp_path):
    from kvplan.model import load_model

    source = make_engine("qwen3")
    source.model.model.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.checkpoint is not None
    model = load_engine_model(loaded, dtype=torch.float32)
    assert not model.random_weights
    for name, tensor in source.model.model.state_dict().items():
        torch.testing.assert_close(model.model.state_dict()[name], tensor, atol=0, rtol=0)
    engine = LLMEngine(model, loaded.spec, EngineConfig(num_blocks=32, block_size=4, max_num_seqs=4,
                                                        max_num_batched_tokens=16))
    assert engine.generate(prompts_of([6]), max_tokens=5) == source.generate(prompts_of([6]), max_tokens=5)


@pytest.mark.parametrize("config, what", [
    (dict(model_type="deepseek_v3", kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
          q_lora_rank=None, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
          first_k_dense_replace=1), "latent"),
    (dict(model_type="qwen3_next", linear_num_key_heads=2, linear_key_head_dim=16, linear_num_value_heads=2,
          linear_value_head_dim=16, full_attention_interval=2, num_experts=4, num_experts_per_tok=2,
          moe_intermediate_size=32), "linear-attention"),
    (dict(model_type="llama4_text", attention_chunk_size=16, num_local_experts=2, num_experts_per_tok=1,
          intermediate_size_mlp=96, no_rope_layers=[1, 0]), "chunked"),
    (dict(model_type="phi3"), "not validated"),
])
def test_unsupported_attention_fails_loudly(config, what):
    config = {**TINY, **config}
    loaded = LoadedModel(spec_from_config(config, name="x", source="test"), None, config, None)
    with pytest.raises(UnsupportedModelError, match=what):
        load_engine_model(loaded, dtype=torch.float32)


def test_window_mismatch_between_spec_and_model_is_refused():
    loaded = tiny_loaded("mistral")
    model = load_engine_model(loaded, dtype=torch.float32)
    wider = tiny_loaded("mistral", sliding_window=16).spec  # the allocator would page for a 16-token window
    engine = LLMEngine(model, wider, EngineConfig(num_blocks=16, block_size=4, max_num_seqs=8, max_num_batched_tokens=32))
    engine.add_request([5, 6, 7], max_tokens=2)
    with pytest.raises(UnsupportedModelError, match="window"):
        engine.run()


def test_engine_never_imported_by_kvplan():
    import subprocess
    import sys

    code = "import sys, kvplan, kvplan.plan, kvplan.model; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.split() == ["False", "False"]


def test_contiguous_forks_get_their_own_reservations():
    """Forked samples in the contiguous baseline share only the computed blocks, never the reservation."""
    outputs = {}
    for contiguous in (False, True):
        engine = make_engine("llama", num_blocks=64, max_model_len=48, contiguous=contiguous, max_num_batched_tokens=64)
        engine.add_request(list(range(3, 13)), 20, SamplingParams(temperature=1.0, seed=123), request_id="p", n=3)
        engine.run()
        outputs[contiguous] = {rid: list(r.output_token_ids) for rid, r in engine.requests.items()}
        assert_clean(engine)
    assert outputs[True] == outputs[False] and len(outputs[True]) == 3


def test_contiguous_reservation_size_is_what_admission_allocates():
    from kvplan.paging.contiguous import ReservingKVCacheManager, reservation_blocks
    from kvplan.model.grouping import page_layout
    from kvplan.paging import Request

    loaded = tiny_loaded("gemma2")  # a full and a sliding page group (window 8)
    layout = page_layout(loaded.spec)
    manager = ReservingKVCacheManager(layout, 64, 4, max_model_len=40, chunk_tokens=4)
    assert manager.allocate_slots(Request("a", list(range(5)), 3), 5)
    # Full: 40 tokens = 10 blocks; sliding: a 4-token chunk reads 8 - 1 + 4 = 11 positions, at most 4 blocks.
    assert manager.num_used_blocks == reservation_blocks(layout, 40, 4, 4) == 10 + 4


def test_another_model_from_the_same_config_leaves_the_engine_alone():
    """transformers sets attn_implementation on the config object it builds from: a second model
    built from the engine's config must not switch the engine's attention."""
    from transformers import AutoModelForCausalLM

    prompts = prompts_of([6, 9], seed=4)
    engine = make_engine("llama")
    before = engine.generate(prompts, max_tokens=5)
    AutoModelForCausalLM.from_config(engine.model.hf_config, attn_implementation="eager")
    assert engine.model.model.config._attn_implementation == "kvplan_paged"
    assert engine.generate(prompts, max_tokens=5) == before
    assert_clean(engine)


def test_attention_rerouted_mid_run_fails_at_that_step():
    """Routing is checked on every step, not only the first: a layer that stops calling the paged
    function (here: the model's own config switched to eager) is an error, not garbage tokens."""
    from kvplan.errors import UnsupportedModelError

    engine = make_engine("llama")
    engine.add_request(prompts_of([6])[0], max_tokens=6)
    engine.step()
    engine.model.model.config._attn_implementation = "eager"
    with pytest.raises(UnsupportedModelError, match=r"did not route attention of layers \[0, 1\].*'eager'"):
        engine.step()


def test_kernel_warm_up_launches_every_split_variant_and_leaves_the_pool_alone(monkeypatch):
    """Before a timed run the engine compiles each NUM_SPLITS variant through every layer (decode and
    store); the warm-up token is stored nowhere and no block is allocated."""
    pytest.importorskip("triton")
    import kvplan.kernels.triton_decode as triton_decode
    import kvplan.kernels.triton_store as triton_store

    engine = make_engine("gpt_oss")  # a sliding and a full group, sinks: every feature constexpr
    assert engine.warm_up() == 0  # torch reference path: nothing to compile
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    splits, stores = [], []
    real_decode, real_store = triton_decode.paged_decode_triton, triton_store.store_kv_triton
    monkeypatch.setattr(triton_decode, "paged_decode_triton",
                        lambda *a, **k: (splits.append((k["num_splits"], k["window"])), real_decode(*a, **k))[1])
    monkeypatch.setattr(triton_store, "store_kv_triton", lambda *a: (stores.append(a[-1].tolist()), real_store(*a)))
    assert engine.warm_up() == len(triton_decode.SPLIT_BUCKETS)
    assert sorted(set(splits)) == sorted((s, w) for s in triton_decode.SPLIT_BUCKETS for w in (0, 8))
    assert stores and all(slots == [-1] for slots in stores)
    assert all(not t.any() for t in engine.pool.k_caches + engine.pool.v_caches)
    assert_clean(engine)


def test_cpu_threads_follow_the_cores_this_process_may_use(monkeypatch, tmp_path):
    from kvplan.runtime import threads

    proc, root = tmp_path / "cgroup", tmp_path / "fs"
    # v2: the process sits in /a/b; the quota is set on its parent, not on the hierarchy's root
    proc.write_text("0::/a/b\n")
    (root / "a" / "b").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "a" / "b" / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(proc, root) is None
    (root / "a" / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(proc, root) == 1.5
    (root / "a" / "b" / "cpu.max").write_text("350000 100000\n")
    assert threads.cgroup_cpu_limit(proc, root) == 1.5  # the tightest on the path binds
    # v1: the cpu controller's own hierarchy
    proc.write_text("5:memory:/x\n4:cpu,cpuacct:/docker/c1\n0::/\n")
    job = root / "cpu,cpuacct" / "docker" / "c1"
    job.mkdir(parents=True)
    (job / "cpu.cfs_quota_us").write_text("300000\n")
    (job / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu.max").unlink()
    assert threads.cgroup_cpu_limit(proc, root) == 3.0
    (job / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_limit(proc, root) is None
    assert threads.cgroup_cpu_limit(tmp_path / "absent", root) is None

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.available_cores() == 1
    torch.set_num_threads(2)  # the autouse fixture restores the count
    assert threads.limit_torch_threads() == 1 == torch.get_num_threads()
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.available_cores() == 4
    assert threads.limit_torch_threads() == 1  # never raised
