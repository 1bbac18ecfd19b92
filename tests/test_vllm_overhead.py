"""vLLM's memory terms, scheduler defaults, GPU totals and release rules against published start-up logs.

Each log in tests/data/vllm_logs cites its source in its header; the figures asserted here are the
ones those logs print. The terms are predicted from the command alone (the `# kvplan:` header:
model, GPU, tp, dtype, utilization, max_model_len, vLLM release), never from what the log measured.
"""

import sys
import types
from pathlib import Path

import pytest

from kvplan.cli.options import load_model_from_flags, resolve_gpu
from kvplan.errors import InputError
from kvplan.hardware import detect_gpu, find_gpu
from kvplan.logs.explain import explain_log, vllm_version_for
from kvplan.logs.log_deployment import deployment_for_log
from kvplan.logs.explain_vllm import term_tolerance_gib
from kvplan.logs.log_deployment import gpu_from_log
from kvplan.logs.startup import parse_startup_log, read_startup_log
from kvplan.model import load_model
from kvplan.plan import Deployment, estimate
from kvplan.plan.policies import get_policy
from kvplan.plan.policies.vllm_defaults import scheduler_defaults
from kvplan.plan.policies.vllm_load_extras import rotary_cache_bytes, vision_encoder_params
from kvplan.plan.policies.vllm_overhead import cuda_graph_count
from kvplan.plan.policies.vllm_versions import resolve_vllm_version
from kvplan.units import GiB, MiB

LOGS = Path(__file__).parent / "data" / "vllm_logs"
PROFILED = sorted(p.name for p in LOGS.glob("*-v0.19-llmdplanner.log"))  # vLLM 0.19.0, H100, DEBUG memory profile
UNCOUNTED = {"phi-2-h100-v0.19-llmdplanner.log", "llama-4-scout-tp4-h100-v0.19-llmdplanner.log"}  # no parameter count
PREDICTED = [name for name in PROFILED if name not in UNCOUNTED]


def flags_of(log) -> dict:
    args = log.kvplan_args
    return {args[i].lstrip("-").replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}


def from_command(name: str):
    """(log, estimate) where the estimate knows only the command in the log's `# kvplan:` header."""
    log = read_startup_log(str(LOGS / name))
    flags = flags_of(log)
    loaded = load_model_from_flags(flags["model"])
    dep = Deployment(gpu=resolve_gpu(flags.get("gpu"), flags.get("gpu_memory"), default=None),
                     tp=int(flags.get("tp", 1)), weight_dtype=flags.get("dtype"),
                     max_model_len=int(flags["max_model_len"]),
                     gpu_memory_utilization=float(flags["gpu_memory_utilization"]),
                     max_num_seqs=None, max_num_batched_tokens=None, engine=f"vllm@{flags['engine_version']}")
    return log, estimate(loaded, dep)


def term(est, name: str) -> int:
    return next(t["bytes"] for t in est.overhead if t["name"] == name)


# --- 23 vLLM 0.19.0 logs (llm-d-planner accuracy sweep, H100, DEBUG): every term from the command ---

def test_at_least_25_v1_logs_carry_a_memory_profile():
    profiled = [p for p in LOGS.glob("*.log") if (log := read_startup_log(str(p))).weights_gib is not None
                and log.available_kv_gib and log.generation == "v1"]
    assert len(PROFILED) >= 22 and len(profiled) >= 25


@pytest.mark.parametrize("name", PROFILED)
def test_scheduler_defaults_and_cuda_total_are_the_h100_serve_ones(name):
    """Every 0.19 log: `vllm serve` on H100 -> 1024 sequences, 8192 tokens; the sizing total is 79.19 GiB."""
    log, est = from_command(name)
    assert (est.max_num_seqs, est.max_num_batched_tokens) == (1024, 8192)
    assert est.gpu_memory_bytes == round(79.19 * GiB)
    if log.requested_gib is not None:  # "Requested memory: 0.950000 (util), 75.23 GiB"
        assert f"{est.gpu_memory_bytes * est.deployment['gpu_memory_utilization'] / GiB:.2f}" == f"{log.requested_gib:.2f}"


@pytest.mark.parametrize("name", sorted(UNCOUNTED))
def test_families_without_a_parameter_count_say_so_instead_of_guessing(name, monkeypatch, tmp_path):
    """The light path has no count for these; without introspection (no transformers, no cached record) none is guessed."""
    monkeypatch.setattr("kvplan.model.paths.introspection_available", lambda: False)
    monkeypatch.setenv("KVPLAN_CACHE_DIR", str(tmp_path))
    _, est = from_command(name)
    assert est.weights_bytes is None and est.kv_budget_bytes is None and "weights unknown" in " ".join(est.notes)


def test_introspection_predicts_phi2_weights_within_0_10_gib():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    log, est = from_command("phi-2-h100-v0.19-llmdplanner.log")
    assert est.model_derivation.startswith("introspection")
    assert abs((est.weights_bytes_per_gpu + term(est, "rotary cos/sin cache")) / GiB - log.weights_gib) <= 0.10
# Known gaps, each pinned to its logged figure (docs/benchmarks/vllm_logs.md): the row says DIFFERS there.
WEIGHT_GAPS = {"gpt-oss-20b-tp2-h100-v0.19-llmdplanner.log": (-0.60, -0.55)}  # MXFP4 experts on Hopper
ACTIVATION_GAPS = {  # vision-encoder activations (not modelled); Qwen1.5-MoE's router and expert buffers
    "mistral-small-3.1-24b-w8a8-h100-v0.19-llmdplanner.log": (-0.27, -0.25),
    "mistral-small-3.1-24b-w8a8-tp2-h100-v0.19-llmdplanner.log": (-0.12, -0.10),
    "qwen1.5-moe-a2.7b-h100-v0.19-llmdplanner.log": (-0.25, -0.23)}
NON_TORCH_GAPS = {"granite-3.1-2b-h100-v0.19-llmdplanner.log": (-0.22, -0.20),  # Granite logs 0.46 GiB
                  "granite-3.1-8b-h100-v0.19-llmdplanner.log": (-0.22, -0.20)}


def agrees_or_is_a_known_gap(name: str, gaps: dict, term_name: str, predicted_bytes: int, logged_gib: float) -> bool:
    error = predicted_bytes / GiB - logged_gib
    if name in gaps:
        low, high = gaps[name]
        return low < error < high and abs(error) > term_tolerance_gib(term_name, predicted_bytes)
    return abs(error) <= term_tolerance_gib(term_name, predicted_bytes)


@pytest.mark.parametrize("name", PREDICTED)
def test_weights_with_rotary_caches_and_vision_encoders_agree_within_the_stated_error(name):
    """0.6% of the prediction plus the 0.005 GiB print quantum (vision towers: -0.07 GiB on 12.11 GiB at worst)."""
    log, est = from_command(name)
    loaded = est.weights_bytes_per_gpu + term(est, "rotary cos/sin cache") + next(
        (t["bytes"] for t in est.overhead if t["name"] == "vision encoder"), 0)
    assert agrees_or_is_a_known_gap(name, WEIGHT_GAPS, "weights", loaded, log.weights_gib)


@pytest.mark.parametrize("name", PREDICTED)
def test_activation_and_non_torch_agree_within_the_stated_error(name):
    """5% of the prediction plus the print quantum, except the named gaps (whose errors are pinned)."""
    log, est = from_command(name)
    assert agrees_or_is_a_known_gap(name, ACTIVATION_GAPS, "activation peak", term(est, "activation peak"),
                                    log.activation_gib)
    assert agrees_or_is_a_known_gap(name, NON_TORCH_GAPS, "non-torch (CUDA/NCCL)", term(est, "non-torch (CUDA/NCCL)"),
                                    log.non_torch_gib)
    assert term(est, "CUDA graphs") == 0  # 0.19 prints its estimate but captures after sizing the KV cache


def test_tolerances_can_fail():
    """Predicting no non-torch memory, or a CUDA-graph estimate 40% high, must not count as agreement."""
    assert term_tolerance_gib("non-torch (CUDA/NCCL)", 256 * MiB) < 0.25
    assert term_tolerance_gib("CUDA graphs", round(1.4 * GiB)) < 0.4
    assert term_tolerance_gib("weights", 50 * GiB) < 0.31


def test_available_kv_within_1_percent_for_80_percent_of_the_logs_and_3_percent_for_all():
    errors = {}
    for name in PREDICTED:
        log, est = from_command(name)
        errors[name] = (est.kv_budget_bytes / GiB - log.min_available_kv_gib()) / log.min_available_kv_gib()
    assert len(errors) >= 20
    assert max(abs(e) for e in errors.values()) <= 0.03, errors
    assert sum(abs(e) <= 0.01 for e in errors.values()) >= 0.8 * len(errors), errors


@pytest.mark.parametrize("name", PROFILED + ["opt-2.7b-tp4-v0.11-vllm29070.log", "qwen2-7b-tp2-a100-80gb-vllmbench.log"])
def test_pool_lines_reproduced_from_the_logged_available_memory(name):
    """Tokens and concurrency, hybrid groups included (Gemma 2/3, gpt-oss sliding 128, Llama-4 chunked at 0.19)."""
    log = read_startup_log(str(LOGS / name))
    flags = flags_of(log)
    raw = [flags.get(k) for k in ("layers", "kv_heads", "head_dim", "heads")]
    loaded = load_model_from_flags(None, *map(int, raw)) if raw[0] else load_model_from_flags(flags["model"])
    gpu = resolve_gpu(flags.get("gpu"), flags.get("gpu_memory"), default=None)
    dep, mml = deployment_for_log(log, loaded.spec, flags, flags.get("engine_version") or vllm_version_for(log), gpu)
    rows = {r.figure: r for r in explain_log(log, loaded, dep, mml).rows}
    pool = [r for f, r in rows.items() if f.startswith(("GPU KV cache size", "max concurrency"))]
    assert len(pool) == (2 if log.concurrency is not None else 1) and all(r.agrees for r in pool), pool


def benchmark_cases():
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    try:
        import vllm_log_errors as bench
    finally:
        sys.path.pop(0)
    return bench, [c for p in sorted(LOGS.glob("*.log")) if (c := bench.predict(p)) is not None]


def test_the_benchmark_fits_with_the_policys_scheduler_defaults():
    """One scheduler rule: the benchmark's rows are the policy's defaults for each log's GPU and release (the A100
    log of 0.10.1.1 printed max_num_batched_tokens=2048 and gets 256 rows, not an H100-name test's)."""
    _, cases = benchmark_cases()
    by_name = {c.name: c for c in cases}
    assert by_name["qwen2-7b-tp2-a100-80gb-vllmbench.log"].scheduler == (256, 2048)
    assert all(c.scheduler == (1024, 8192) for c in cases if c.gpu == "H100-SXM")


def test_the_constants_were_fitted_on_the_fit_logs_only():
    """benchmarks/vllm_log_errors.py --fit recomputes them from its FIT logs; the code holds what they give."""
    bench, cases = benchmark_cases()
    fitted = bench.fit_constants(cases)
    assert "13.42 from 4 logs (code: 13.4)" in fitted and "243 KiB" in fitted and "(code: 243 KiB)" in fitted
    assert sum(c.fit for c in cases) == len(bench.FIT) and sum(not c.fit for c in cases) >= 15


# --- rotary cos/sin caches: vLLM's weights memory minus the parameters ---

def test_rotary_cache_is_the_0_03_gib_between_llama_3_1_8b_parameters_and_the_logged_weights():
    """vllm #10517 (tests/data/vllm_logs/llama-3.1-8b-v0-20k-vllm10517.log): "Loading model weights took 14.9888 GB";
    8,030,261,248 params x 2 B + 131,072 positions x 128 dims x 2 B = 14.98891 GiB."""
    model = load_model("llama-3.1-8b")
    rotary = rotary_cache_bytes(model.spec, model.config, 2)
    assert rotary == 131072 * 128 * 2 == 32 * MiB
    assert abs((8_030_261_248 * 2 + rotary) / GiB - 14.9888) < 2e-4
    log = read_startup_log(str(LOGS / "llama-3.1-8b-v0-20k-vllm10517.log"))
    dep, mml = deployment_for_log(log, model.spec, {}, "v0", None)
    weights = next(r for r in explain_log(log, model, dep, mml).rows if r.figure.startswith("weights"))
    assert weights.agrees and weights.predicted == "14.99"


def test_linear_rope_scaling_stretches_the_cache_and_gemma3_keeps_a_local_one():
    """Gemma 3 (linear scaling, factor 8): 131,072 x 8 + 131,072 positions x 256 dims x 2 B = 576 MiB."""
    model = load_model("gemma-3-4b")
    assert rotary_cache_bytes(model.spec, model.config, 2) == (131072 * 8 + 131072) * 256 * 2


def test_vision_towers_counted_from_vision_config():
    """SigLIP so400m (Gemma 3): 27 layers of 1152 wide; the projector maps 1152 -> the text hidden size."""
    siglip = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
              "num_hidden_layers": 27, "patch_size": 14, "image_size": 896}
    per_layer = 4 * (1152 * 1152 + 1152) + 2 * 1152 * 4304 + 4304 + 1152 + 4 * 1152
    tower = 3 * 14 * 14 * 1152 + 1152 + 64 * 64 * 1152 + 27 * per_layer + 2 * 1152
    assert vision_encoder_params({"model_type": "gemma3", "vision_config": siglip,
                                  "text_config": {"hidden_size": 2560}}) == tower + 1152 * 2560 + 1152
    assert vision_encoder_params({"model_type": "llama"}) == 0
    assert vision_encoder_params({"vision_config": {"model_type": "some_new_tower"}}) is None


# --- scheduler defaults (vllm/engine/arg_utils.py _set_default_args_v1, later get_batch_defaults) ---

@pytest.mark.parametrize("gpu,offline,release,expected", [
    ("H100", False, "0.19", (1024, 8192)), ("H200", False, "0.19", (1024, 8192)),
    ("MI300X", False, "0.19", (1024, 8192)), ("A100-80GB", False, "0.19", (256, 2048)),
    ("A100-40GB", False, "0.19", (256, 2048)), ("L40S", False, "0.19", (256, 2048)), ("L4", False, "0.19", (256, 2048)),
    ("H100", True, "0.19", (1024, 16384)), ("L4", True, "0.19", (256, 8192)),
    # PR #17885 (0.9.0): >= 70 GiB and not an A100 -- 0.9.0 and 0.9.1 share the 0.8.4 layout family, not its defaults
    ("A100-80GB", False, "0.9.0", (256, 2048)), ("A100-80GB", False, "0.9.1", (256, 2048)),
    ("B200", False, "0.9.1", (1024, 8192)),
    # PR #17073 (0.8.5): device memory >= 70 GiB, the A100-80GB included
    ("A100-80GB", False, "0.8.5", (1024, 8192)), ("MI300X", False, "0.8.5", (1024, 8192)),
    # PR #16158 (0.8.4): "h100"/"h200" in the device name; 1024 sequences there only
    ("H100", False, "0.8.4", (1024, 8192)), ("A100-80GB", False, "0.8.4", (256, 2048)),
    ("MI300X", False, "0.8.4", (256, 2048)), ("B200", True, "0.8.4", (256, 8192)),
    # 0.8.0-0.8.3: V1's 1024 sequences everywhere (0.8.2 on an RTX 4090 warms up "sampler with 1024 dummy
    # requests", vllm #15617), the token budget by name (PR #12369)
    ("RTX-4090", False, "0.8.2", (1024, 2048)), ("H200", False, "0.8.0", (1024, 8192)),
])
def test_scheduler_defaults_per_gpu_entry_point_and_release(gpu, offline, release, expected):
    d = scheduler_defaults(resolve_vllm_version(release), find_gpu(gpu), offline, 8192)
    assert (d.max_num_seqs, d.max_num_batched_tokens) == expected


def test_v0_batch_defaults_follow_chunked_prefill():
    rules = resolve_vllm_version("v0")
    assert scheduler_defaults(rules, find_gpu("H100"), False, 20000).max_num_batched_tokens == 20000
    assert scheduler_defaults(rules, find_gpu("H100"), False, 65536).max_num_batched_tokens == 2048


def test_estimate_carries_the_scheduler_settings_it_used_and_names_the_rule():
    """qwen2-7b-tp2-a100-80gb-vllmbench.log (0.10.1.1 on A100 80GB) printed max_num_batched_tokens=2048."""
    e = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("A100-80GB"), engine="vllm@0.10.1",
                                                        max_num_seqs=None, max_num_batched_tokens=None))
    assert (e.max_num_seqs, e.max_num_batched_tokens) == (256, 2048) == \
        (e.deployment["max_num_seqs"], e.deployment["max_num_batched_tokens"])
    assert any("A100s are excluded" in n and "max_num_batched_tokens 2048" in n for n in e.notes)
    given = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("A100-80GB"), engine="vllm@0.10.1",
                                                            max_num_seqs=64, max_num_batched_tokens=4096))
    assert (given.max_num_seqs, given.max_num_batched_tokens) == (64, 4096)


def test_later_releases_print_weights_and_non_torch_as_one_consumed_figure():
    log = parse_startup_log(
        "(EngineCore_DP0 pid=1) INFO 08-22 [gpu_worker.py:789] Free memory on device (22.45/23.99 GiB) on startup. "
        "Desired GPU memory utilization is (0.92, 22.07 GiB). Actual usage is 1.23 GiB for consumed memory (weights + "
        "non-torch), 0.31 GiB for peak activation, and 0.0 GiB for CUDAGraph memory.\n")
    assert (log.weights_and_non_torch_gib, log.activation_gib, log.cuda_graph_gib, log.total_gpu_gib) == \
        (1.23, 0.31, 0.0, 23.99)


@pytest.mark.parametrize("prefix", ["(EngineCore_DP0 pid=1133552) ", "(VllmWorker TP1 pid=3975) ", "[Worker_TP3 pid=540] ",
                                    "(RayWorkerWrapper pid=374, ip=10.0.0.1) ", "(Worker_PP1_TP0 pid=3) ", ""])
def test_memory_profile_lines_read_behind_any_worker_prefix(prefix):
    log = parse_startup_log(f"{prefix}DEBUG 04-22 15:57:45 [v1/worker/gpu_worker.py:435] Memory profiling takes 21.51 "
                            "seconds. Total non KV cache memory: 21.11GiB; torch peak memory increase: 3.65GiB; "
                            "non-torch forward increase memory: 0.25GiB; weights memory: 17.22GiB.\n"
                            f"{prefix}INFO 04-22 15:57:45 [v1/worker/gpu_worker.py:436] Available KV cache memory: "
                            "54.12 GiB\n")
    assert (log.weights_gib, log.activation_gib, log.non_torch_gib) == (17.22, 3.65, 0.25)
    assert [w.value for w in log.available_kv_gib] == [54.12]


def test_offline_engine_reads_from_llm_class_logs():
    log = parse_startup_log("DEBUG 04-22 [engine/arg_utils.py:2242] Defaulting max_num_seqs to 1024 for LLM_CLASS "
                            "usage context.\nINFO [gpu_worker.py:436] Available KV cache memory: 60.00 GiB\n")
    dep, _ = deployment_for_log(log, load_model("llama-3.1-8b").spec, {"max_model_len": 8192}, "0.19", None)
    assert dep.engine == "vllm-offline@0.19" and dep.max_num_seqs == 1024


# --- release rules ---

@pytest.mark.parametrize("text", ["99.0", "0.25.0", "1.0", "banana"])
def test_unknown_release_is_refused_not_guessed(text):
    with pytest.raises(InputError, match=r"vllm@|vLLM release"):
        get_policy(f"vllm@{text}")


def test_source_builds_get_the_newest_rules_with_a_note():
    e = estimate(load_model("llama-3.1-8b"), Deployment(kv_cache_memory_bytes=GiB, max_model_len=4096,
                                                        engine="vllm@0.1.dev7548+gbaba038"))
    assert e.engine_version == "0.21" and any("source build" in n for n in e.notes)


def test_chunked_local_keeps_every_token_in_0_10_1_to_0_11():
    """PR 21761 (0.10.1) turned the hybrid manager off for chunked-local attention; PR 29627 turned it back on.
    Llama-4-Scout at 131,072 tokens: 12 global of 48 layers -> about 2.9x the requests with it on."""
    scout = load_model(str(LOGS / "configs" / "llama-4-scout.json"))
    dep = dict(tp=4, kv_cache_memory_bytes=16 * GiB, max_model_len=131072, max_num_batched_tokens=8192)
    old = estimate(scout, Deployment(engine="vllm@0.11", **dep))
    new = estimate(scout, Deployment(engine="vllm@0.19", **dep))
    assert old.max_concurrency == pytest.approx(old.num_blocks * 16 / 131072, rel=1e-3)  # every layer full
    assert 2.8 < new.max_concurrency / old.max_concurrency < 3.0
    assert any("hybrid KV cache manager off" in n for n in old.notes)


@pytest.mark.parametrize("release,tp,pp,gib,basis", [
    ("0.19.0", 1, 1, 0.25, "measured on the vLLM 0.19 logs"),  # 0.24-0.26 GiB in every tp=1 0.19 log
    ("0.19.0", 2, 1, 2150 / 1024, "measured on the vLLM 0.19 logs"),  # 2.07-2.17 GiB at tp 2 and 4
    ("0.19.0", 1, 2, 0.25, "assumed"),  # pipeline stages alone: no all-reduce workspace, and no log
    ("0.14.0", 2, 1, 2150 / 1024, "assumed from the vLLM 0.19 logs"),  # no 0.12-0.18 log prints the profile
    ("0.21.0", 2, 1, 2150 / 1024, "assumed from the vLLM 0.19 logs"),
    ("0.11.1", 4, 1, 96 / 1024, "measured on one vLLM 0.11.1 log"),  # opt-2.7b-tp4-v0.11-vllm29070.log: 0.09 GiB
    ("0.10.1", 2, 1, 96 / 1024, "assumed from one vLLM 0.11.1 log"),
])
def test_non_torch_is_keyed_on_tp_and_says_where_it_was_measured(release, tp, pp, gib, basis):
    e = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("H100"), engine=f"vllm@{release}", tp=tp, pp=pp,
                                                        max_model_len=8192))
    t = next(t for t in e.overhead if t["name"] == "non-torch (CUDA/NCCL)")
    assert t["bytes"] == round(gib * GiB) and t["basis"].startswith(basis)


def test_cuda_graphs_subtracted_from_0_21_only():
    """0.21 prints "CUDA graph memory profiling is enabled (default since v0.21.0)" (vllm #41789); 0.19 prints the
    estimate and does not subtract it. The estimate is checked against the logged one, not against its own formula."""
    kw = dict(gpu=find_gpu("H100"), max_model_len=16384, gpu_memory_utilization=0.95, max_num_seqs=None,
              max_num_batched_tokens=None)
    old = estimate(load_model("llama-3.1-8b"), Deployment(engine="vllm@0.19", **kw))
    new = estimate(load_model("llama-3.1-8b"), Deployment(engine="vllm@0.21", **kw))
    graphs = term(new, "CUDA graphs")
    assert term(old, "CUDA graphs") == 0 and old.kv_budget_bytes - new.kv_budget_bytes == graphs
    # llama-3.1-8b-16k-h100-v0.19-llmdplanner.log: "Estimated CUDA graph memory: 0.84 GiB total" (a FIT log: the
    # fitted constant lands within its fit error there, -10%)
    assert abs(graphs / GiB - 0.84) <= 0.10 * 0.84
    assert "fitted" in next(t["basis"] for t in new.overhead if t["name"] == "CUDA graphs")


def _logged_graph_counts(path) -> int | None:
    """PIECEWISE + FULL graphs of a log's "Profiling CUDA graph memory: PIECEWISE=51 (largest=512), FULL=35 ..."."""
    import re
    m = re.search(r"Profiling CUDA graph memory: PIECEWISE=(\d+)[^,\n]*(?:, FULL=(\d+))?", path.read_text())
    return None if m is None else int(m.group(1)) + int(m.group(2) or 0)


@pytest.mark.parametrize("name", [n for n in PROFILED if _logged_graph_counts(LOGS / n) is not None])
def test_cuda_graph_count_is_the_logged_one(name):
    """Every 0.19 log's own count: 51 + 51 at 1,024 sequences, gpt-oss's 83 + 83 (its config raises the largest
    capture size to 1,024), Llama-4's 51 PIECEWISE only (chunked-local attention)."""
    log = read_startup_log(str(LOGS / name))
    loaded = load_model_from_flags(flags_of(log)["model"])
    assert cuda_graph_count(loaded.spec, Deployment(max_num_seqs=1024, max_num_batched_tokens=8192), loaded.config) \
        == _logged_graph_counts(LOGS / name)


@pytest.mark.parametrize("seqs,logged", [
    (256, 51 + 35),  # "PIECEWISE=51 (largest=512), FULL=35 (largest=256)": vLLM 0.21+ logs at 256 sequences
    (2, 3 + 2),  # "PIECEWISE=3 (largest=4), FULL=2 (largest=2)": a v0.20.2 log with --max-num-seqs 2
])
def test_full_decode_graphs_stop_at_max_num_seqs(seqs, logged):
    """capture_model captures FULL decode graphs only for sizes <= max_num_seqs x uniform_decode_query_len."""
    spec = load_model("llama-3.1-8b").spec
    assert cuda_graph_count(spec, Deployment(max_num_seqs=seqs, max_num_batched_tokens=2048)) == logged


# --- memory as CUDA sees it ---

@pytest.mark.parametrize("gpu,printed", [
    ("H100", 79.19), ("A100-80GB", 79.15), ("H200", 139.72), ("L40S", 44.31), ("RTX-3090", 23.58),
    ("A100-40GB", 39.39), ("L4", 22.03), ("RTX-4090", 23.64),  # PyTorch OOM messages: "total capacity of X GiB"
])
def test_cuda_visible_totals_are_the_printed_ones(gpu, printed):
    assert find_gpu(gpu).engine_total()[0] == round(printed * GiB)


def test_the_fallback_note_states_the_catalogs_own_gap():
    """Where the CUDA total is unknown the note gives the gap the catalog shows (0.49% on the H200 to 2.06% on the
    L4: 22.49 vs 22.03 GiB), not a round guess."""
    total, basis = find_gpu("A10G").engine_total()
    assert total == find_gpu("A10G").memory_bytes and "unknown (0.49-2.06% less" in basis


def test_sglang_sizes_from_the_cuda_visible_total_too():
    """SGLang's free-memory figures come from cudaMemGetInfo: an H100 is 79.19 GiB to it, not nvidia-smi's 79.65."""
    e = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("H100"), engine="sglang", max_model_len=8192))
    assert e.gpu_memory_bytes == round(79.19 * GiB)


def test_gpu_auto_takes_the_cuda_total_from_nvml_v2(monkeypatch):
    info = {1: types.SimpleNamespace(total=85_520_809_984),
            2: types.SimpleNamespace(total=85_520_809_984, reserved=491_896_832)}
    fake = types.SimpleNamespace(
        NVMLError=type("NVMLError", (Exception,), {}), nvmlMemory_v2=2,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: object(),
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetMemoryInfo=lambda h, version=1: info[version])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpu = detect_gpu()
    assert gpu.memory_bytes == 85_520_809_984 and gpu.cuda_total_bytes == 85_520_809_984 - 491_896_832


# --- verdicts that agree with their notes ---

def test_max_model_len_above_the_model_is_a_refusal_not_a_fit():
    e = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("H100"), engine="vllm", max_model_len=200_000))
    assert e.fits is False and "greater than the model's derived maximum 131,072" in e.verdict


def test_gemma3_max_model_len_is_not_scaled_again():
    """vLLM's _get_and_verify_max_len skips rope scaling when "gemma3" is in model_type ("Gemma3's max_model_len
    (128K) is already scaled"): 131,072, not 131,072 x 8; its rotary cache still covers the scaled range."""
    e = estimate(load_model("gemma-3-27b"), Deployment(gpu=find_gpu("H200"), engine="vllm", max_model_len=200_000))
    assert e.fits is False and "derived maximum 131,072" in e.verdict
    assert estimate(load_model("gemma-3-27b"), Deployment(gpu=find_gpu("H200"), engine="vllm",
                                                          max_model_len=131_072)).fits is True


def test_a_log_without_a_gpu_flag_is_sized_from_the_total_it_printed():
    """llama-3.3-70b-fp8-tp2 0.19 log: "Requested memory: 0.950000 (util), 75.23 GiB" gives a 79.19 GiB total, which
    takes the >= 70 GiB scheduler row (1024 sequences) without naming the GPU."""
    text = "\n".join(l for l in (LOGS / "llama-3.3-70b-fp8-tp2-h100-v0.19-llmdplanner.log").read_text().splitlines()
                     if not l.startswith("#"))
    log = parse_startup_log(text)
    model = load_model("llama-3.3-70b")
    dep, mml = deployment_for_log(log, model.spec, {"dtype": "fp8"}, vllm_version_for(log), None)
    rows = {r.figure: r for r in explain_log(log, model, dep, mml).rows}
    assert log.total_gpu_gib == 79.19 and dep.gpu.cuda_total_bytes == round(79.19 * GiB)
    assert all(r.agrees for r in rows.values()), rows
    assert rows["activation peak (GiB)"].predicted == "1.88"  # 1,024 x 128,256 x 15.4 B


def _log_with_total(total_gib: float):
    return parse_startup_log(
        f"(EngineCore_DP0 pid=1) INFO 08-22 [gpu_worker.py:789] Free memory on device ({total_gib - 1:.2f}/"
        f"{total_gib:.2f} GiB) on startup. Desired GPU memory utilization is (0.9, {0.9 * total_gib:.2f} GiB). "
        "Actual usage is 16.00 GiB for consumed memory (weights + non-torch), 1.00 GiB for peak activation, and 0.0 "
        "GiB for CUDAGraph memory.\n")


def test_a_log_printing_an_a100_total_gets_the_a100_scheduler_row():
    """79.15 GiB is the A100 80GB's CUDA-visible total (vllm #4408) and no other catalog GPU's: vLLM 0.19 gives the
    A100 the small-GPU row (256 / 2048), though 79.15 GiB is over 70 GiB; the explanation says how it chose."""
    log = _log_with_total(79.15)
    model = load_model("llama-3.1-8b")
    dep, mml = deployment_for_log(log, model.spec, {"max_model_len": 8192}, "0.19.0", None)
    out = explain_log(log, model, dep, mml)
    assert dep.gpu.name == "A100-80GB" and (out.settings["max_num_seqs"], out.settings["max_num_batched_tokens"]) \
        == (256, 2048)
    assert any("79.15 GiB total is the CUDA-visible total of A100-80GB" in n and "--gpu NAME" in n for n in out.notes)


def test_a_log_total_matching_no_catalog_gpu_says_the_gpu_is_ambiguous():
    log = _log_with_total(23.50)  # opt-2.7b-tp4-v0.11-vllm29070.log's GPU: no catalog entry prints 23.50 GiB
    model = load_model("llama-3.1-8b")
    dep, mml = deployment_for_log(log, model.spec, {"max_model_len": 8192}, "0.19.0", None)
    notes = explain_log(log, model, dep, mml).notes
    assert any("matches no single catalog GPU" in n and "pass --gpu NAME" in n for n in notes), notes


def test_explain_log_names_the_release_and_the_rules_it_follows():
    log = read_startup_log(str(LOGS / "llama-3.1-8b-16k-h100-v0.19-llmdplanner.log"))
    model = load_model("llama-3.1-8b")
    dep, mml = deployment_for_log(log, model.spec, {"gpu_memory_utilization": 0.95}, "0.19.0", find_gpu("H100"))
    out = explain_log(log, model, dep, mml)
    assert out.engine_version == "0.19.0 (0.18 rules)" and any(n.endswith("by vLLM 0.19.0 (0.18 rules)") for n in out.notes)


def test_a_log_naming_its_gpu_is_matched_to_the_catalog():
    log = parse_startup_log("(Worker_TP0 pid=668) WARNING [fused_moe.py:1090] Config file not found at "
                            "/x/E=16,N=2048,device_name=NVIDIA_H100_80GB_HBM3.json\n")
    assert gpu_from_log(log).name == "H100-SXM"
