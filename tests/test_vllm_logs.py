"""`--engine vllm` against published vLLM start-up logs (tests/data/vllm_logs, each citing its source).

vLLM prints the memory it leaves for KV rounded to 0.01 GiB, so the budget behind a log is known
only to +/- 0.005 GiB. Each case checks, with exact integers and the exact 2-decimal string:
1. the logged figures are reproduced exactly by some budget inside that rounding interval (found by
   bisection on kvplan's own pool arithmetic), and
2. kvplan's figure at the printed value is within one rounding quantum of the logged one.
The per-token KV bytes are computed here by hand from each model's config, independently of kvplan.
"""

import re
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from kvplan.dtypes import kv_format
from kvplan.plan.deployment import pp_partition
from kvplan.plan.policies import get_policy
from kvplan.logs.explain import explain_log, vllm_version_for
from kvplan.logs.log_deployment import deployment_for_log
from kvplan.logs.startup import read_startup_log
from kvplan.cli.options import load_model_from_flags, resolve_gpu
from kvplan.units import GiB

DATA = Path(__file__).parent / "data" / "vllm_logs"
Q = Fraction(1, 200)  # half of the 0.01 GiB vLLM prints

# log file -> KV bytes of one block on the binding GPU, by hand:
#   full attention: 2 (K,V) x kv_heads_per_rank x head_dim x bytes x block_size x layers on the GPU
#   MLA: (512 + 64) latent x bytes x block_size x layers (not split by tp)
HAND_BLOCK_BYTES = {
    "qwen3-14b-lmcache1739.log": 2 * 8 * 128 * 2 * 16 * 40,
    "qwen3-30b-a3b-fp8kv-vllm25350.log": 2 * 4 * 128 * 1 * 16 * 48,
    "deepseek-v2-lite-tp2-pp2-vllm20665.log": 576 * 2 * 16 * 14,  # stage 0 holds 14 of 27 layers
    "llama-3.1-8b-v0-20k-vllm10517.log": 2 * 8 * 128 * 2 * 16 * 32,
    "llama-3.1-8b-v0-29k-vllm10517.log": 2 * 8 * 128 * 2 * 16 * 32,
    # Qwen2-7B at tp 2: its 4 KV heads split 2 per rank
    "qwen2-7b-tp2-a100-80gb-vllmbench.log": 2 * 2 * 128 * 2 * 16 * 28,
    "qwen2-7b-tp2-two-nodes-a100-40gb-vllmbench.log": 2 * 2 * 128 * 2 * 16 * 28,
    # Gemma 3 4B: 7 groups of 5 layers share each block: 5 layers x 2 x 4 heads x 256 x 2 B x 16 tokens
    "gemma-3-4b-hybrid-kvcached215.log": 5 * 2 * 4 * 256 * 2 * 16,
}
POOL_CASES = ["qwen3-14b-lmcache1739.log", "qwen3-30b-a3b-fp8kv-vllm25350.log",
              "deepseek-v2-lite-tp2-pp2-vllm20665.log", "llama-3.1-8b-v0-20k-vllm10517.log",
              "llama-3.1-8b-v0-29k-vllm10517.log", "qwen2-7b-tp2-a100-80gb-vllmbench.log",
              "qwen2-7b-tp2-two-nodes-a100-40gb-vllmbench.log"]
TP_CASES = ["qwen2-7b-tp2-a100-80gb-vllmbench.log", "qwen2-7b-tp2-two-nodes-a100-40gb-vllmbench.log"]
REFUSAL_CASES = ["qwen3-30b-a3b-fp8kv-refusal-vllm25350.log", "deepseek-v2-lite-refusal-vllm15871.log",
                 "qwen3-coder-480b-dp8-refusal-recipes12-a.log", "qwen3-coder-480b-dp8-refusal-recipes12-b.log"]


def setup(name):
    """Parse the log and build what `kvplan explain-log` would: model, deployment, policy, stages."""
    log = read_startup_log(str(DATA / name))
    flags = {}
    args = log.kvplan_args
    for flag, value in zip(args[::2], args[1::2]):
        flags[flag.lstrip("-").replace("-", "_")] = value
    raw = [flags.get(k) for k in ("layers", "kv_heads", "head_dim", "heads")]
    if raw[0] is not None:
        loaded = load_model_from_flags(None, *[int(v) for v in raw])
    else:
        loaded = load_model_from_flags(flags.get("model") or log.model)
    gpu = resolve_gpu(flags.get("gpu"), None, default=None)
    dep, mml = deployment_for_log(log, loaded.spec, flags, flags.get("engine_version") or vllm_version_for(log), gpu)
    policy = get_policy(dep.engine).bind(loaded.spec, loaded.config)
    dep, _ = policy.resolve_deployment(loaded.spec, dep, mml)  # scheduler settings the log leaves to vLLM
    kv = kv_format(dep.kv_dtype, "bf16")
    stages = [loaded.spec.restricted_to(set(r)) for r in pp_partition(loaded.spec.num_layers, dep.pp)]
    return log, loaded, dep, mml, policy, kv, stages


def stage_intervals(log, dep):
    """Per pipeline stage: the budgets (bytes) consistent with the smallest value its workers printed."""
    values = {}
    for w in log.available_kv_gib:
        stage = w.global_rank // dep.tp if (w.global_rank is not None and w.label) else None
        for s in ([stage] if stage is not None else range(dep.pp)):
            values[s] = min(values.get(s, 10**9), w.value)
    if not values and log.refusal:
        values = {s: log.refusal["available_gib"] for s in range(dep.pp)}
    out = []
    for s in range(dep.pp):
        x = Fraction(str(values[s]))
        out.append((int((x - Q) * GiB), int((x + Q) * GiB)))
    return out


def bisect_min(lo, hi, ok):
    """Smallest b in [lo, hi) with ok(b) (ok monotone), or None."""
    if not ok(hi - 1):
        return None
    while lo < hi - 1:
        mid = (lo + hi - 1) // 2
        if ok(mid):
            hi = mid + 1
        else:
            lo = mid + 1
    return lo if ok(lo) else hi - 1


@pytest.mark.parametrize("name", POOL_CASES)
def test_pool_figures_reproduced_exactly_within_the_logs_rounding(name):
    log, loaded, dep, mml, policy, kv, stages = setup(name)
    binding = min(range(dep.pp), key=lambda s: stage_intervals(log, dep)[s][1] // policy.block_bytes(stages[s], kv, dep))
    assert policy.block_bytes(stages[binding], kv, dep) == HAND_BLOCK_BYTES[name]
    block_size = policy.block_size(loaded.spec, dep)
    target_blocks = log.num_gpu_blocks if log.num_gpu_blocks is not None else log.kv_cache_tokens // block_size
    budgets = []
    for stage, (lo, hi) in zip(stages, stage_intervals(log, dep)):
        b = bisect_min(lo, hi, lambda x, s=stage: policy.pool(s, x, kv, dep).num_blocks >= target_blocks)
        assert b is not None, f"{name}: no budget inside the printed rounding gives {target_blocks} blocks"
        budgets.append(b)
    report = policy.report_for_budgets(stages, budgets, kv, dep, mml)
    if log.kv_cache_tokens is not None:
        assert report.figures["kv_cache_tokens"] == log.kv_cache_tokens
    assert report.figures["num_blocks"] == target_blocks
    assert f"{report.figures['max_concurrency']:.2f}" == log.concurrency_text
    assert log.concurrency_max_model_len == mml
    if log.refusal:  # V0: max_model_len beyond the pool
        assert log.refusal["kv_cache_tokens"] == target_blocks * block_size and report.refusal


@pytest.mark.parametrize("name", POOL_CASES)
def test_prediction_at_the_printed_value_is_within_one_rounding_quantum(name):
    log, loaded, dep, mml, policy, kv, stages = setup(name)
    ex = explain_log(log, loaded, dep, mml)
    compared = [r for r in ex.rows if r.figure.startswith(("GPU KV cache size", "GPU blocks", "max concurrency"))]
    assert compared and all(r.agrees for r in compared), [r for r in compared if not r.agrees]
    quantum_blocks = -(-int(2 * Q * GiB) // min(policy.block_bytes(s, kv, dep) for s in stages)) + 1
    predicted = policy.report_for_budgets(stages, [int(Fraction(str(v)) * GiB) for v in
                                                   [log.min_available_kv_gib()] * dep.pp], kv, dep, mml)
    logged_blocks = log.num_gpu_blocks or log.kv_cache_tokens // policy.block_size(loaded.spec, dep)
    if dep.pp == 1:
        assert abs(predicted.figures["num_blocks"] - logged_blocks) <= quantum_blocks


@pytest.mark.parametrize("name", REFUSAL_CASES)
def test_refusal_and_largest_max_model_len(name):
    log, loaded, dep, mml, policy, kv, stages = setup(name)
    ((lo, hi),) = stage_intervals(log, dep)[:1]
    stage = stages[0]
    needed = policy.needed_bytes(stage, mml, kv, dep)
    assert f"{needed / GiB:.2f}" == f"{log.refusal['needed_gib']:.2f}"
    assert needed > hi  # refused anywhere inside the rounding interval
    estimated = log.refusal["estimated_max_model_len"]
    if estimated is None:  # vLLM 0.8.0-0.8.3 printed no estimate; kvplan follows the version
        assert policy.version == "0.8.0" and "largest" not in policy.report(stages, lo, kv, dep, mml).refusal
        return
    b = bisect_min(lo, hi, lambda x: policy.largest_max_model_len(stage, x, kv, dep, mml) >= estimated)
    assert b is not None and policy.largest_max_model_len(stage, b, kv, dep, mml) == estimated
    assert f"largest max_model_len that fits is {estimated}" in policy.report(stages, b, kv, dep, mml).refusal


@pytest.mark.parametrize("name", TP_CASES)
def test_tensor_parallel_pool_is_the_logged_block_count_with_kv_heads_split(name):
    """Dense GQA at tp 2: the pool vLLM kept ("num_gpu_blocks is: N", read here from the raw text) is what the
    logged tokens and concurrency say, and only a per-rank page of kv_heads / tp heads reaches it."""
    log, loaded, dep, mml, policy, kv, stages = setup(name)
    assert dep.tp == 2 and dep.pp == 1
    blocks = int(re.search(r"num_gpu_blocks is: (\d+)", (DATA / name).read_text()).group(1))
    assert log.kv_cache_tokens == blocks * 16
    assert log.concurrency_text == f"{blocks / -(-mml // 16):.2f}"  # blocks / cdiv(16,384, 16)
    ((lo, hi),) = stage_intervals(log, dep)
    assert policy.pool(stages[0], lo, kv, dep).num_blocks <= blocks <= policy.pool(stages[0], hi, kv, dep).num_blocks
    # Unsplit heads (a tp 1 page, twice the bytes) fall short of the logged pool even at the top of the rounding.
    unsplit = replace(dep, tp=1)
    assert policy.block_bytes(stages[0], kv, unsplit) == 2 * HAND_BLOCK_BYTES[name]
    assert policy.pool(stages[0], hi, kv, unsplit).num_blocks < blocks


def test_hybrid_sliding_window_one_block_count_explains_both_lines():
    """Gemma 3 4B (vLLM 0.11 semantics): tokens = blocks // 7 groups x 16 and concurrency = blocks / (192 + 6 x 193)."""
    log, loaded, dep, mml, policy, kv, stages = setup("gemma-3-4b-hybrid-kvcached215.log")
    groups = policy.kv_groups(loaded.spec, kv, dep)
    # 29 sliding layers in 6 strided groups (the last one padded), then the 5 full layers
    assert [(g.spec.kind, len(g.layers)) for g in groups] == [("sliding", 5)] * 5 + [("sliding", 4), ("full", 5)]
    assert groups[0].layers[:3] == (0, 7, 14)
    assert policy.block_bytes(stages[0], kv, dep) == HAND_BLOCK_BYTES["gemma-3-4b-hybrid-kvcached215.log"]
    # one 3,072-token request: full group cdiv(3072, 16) = 192 blocks; sliding groups cdiv(min(1023 + 8192, 3072), 16) + 1
    assert policy.request_blocks(groups, 3072, dep) == 192 + 6 * 193
    matches = []
    for blocks in policy.block_counts_for_tokens(stages[0], log.kv_cache_tokens, kv, dep, mml):
        r = policy.report_for_budgets(stages, [blocks * HAND_BLOCK_BYTES["gemma-3-4b-hybrid-kvcached215.log"]], kv,
                                      dep, mml)
        if r.figures["kv_cache_tokens"] == log.kv_cache_tokens and f"{r.figures['max_concurrency']:.2f}" == "102.78":
            matches.append(blocks)
    assert matches == list(range(138747, 138754))  # every count giving 317,136 tokens also gives 102.78x
    without_window = matches[0] / (7 * 192)
    assert f"{without_window:.2f}" != log.concurrency_text  # the +1 sliding block is what the log shows


def test_versions_differ_where_the_logs_say_they_do():
    """0.8 logged concurrency as tokens / max_model_len; 0.9.2+ as blocks / blocks per request."""
    _, loaded, dep, _, _, kv, stages = setup("qwen3-14b-lmcache1739.log")
    new, old = get_policy("vllm@0.11").bind(loaded.spec), get_policy("vllm@0.8.5").bind(loaded.spec)
    budget = 2666 * HAND_BLOCK_BYTES["qwen3-14b-lmcache1739.log"]
    assert new.report(stages, budget, kv, dep, 29000).figures["max_concurrency"] == 2666 / 1813
    assert old.report(stages, budget, kv, dep, 29000).figures["max_concurrency"] == 2666 * 16 / 29000
    v0 = get_policy("vllm@v0").bind(loaded.spec).report(stages, budget, kv, dep, 29000)
    assert v0.lines[1] == "# GPU blocks: 2666"


@pytest.mark.parametrize("prefix,tp,pp", [
    ("(VllmWorker TP1 pid=3975)", 1, None), ("(VllmWorker PP1_TP0 pid=3)", 0, 1), ("(Worker_PP1_TP2 pid=3)", 2, 1),
    ("(Worker_TP3 pid=9)", 3, None),
])
def test_worker_prefixes_name_their_ranks(prefix, tp, pp):
    from kvplan.logs.startup import parse_startup_log

    log = parse_startup_log(f"{prefix} INFO 09-03 02:12:25 [gpu_worker.py:276] Available KV cache memory: 31.83 GiB\n")
    [worker] = log.available_kv_gib
    assert worker.value == 31.83 and (worker.tp_rank, worker.pp_rank) == (tp, pp)
