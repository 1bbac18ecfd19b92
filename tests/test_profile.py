"""`kvplan profile` on CPU with a tiny random-weight model written as a config.json by the test.

On CPU the budget comes from --kv-cache-memory, so the pool the engine allocates must be exactly
the estimate's: same bytes, same blocks; with a uniform workload whose requests never need a
block more than at admission, the most concurrent users the engine reaches is the estimate's
figure. The dynamic figures (utilization, preemptions) must equal the paging simulator's on the
same pool, since the engine drives the same allocator and scheduler.
"""

import json

import pytest
import torch

try:  # see tests/test_runtime.py: import triton while conftest's TRITON_INTERPRET=1 still holds
    import triton  # noqa: F401
except ImportError:
    pass

from kvplan.cli import main
from kvplan.runtime.replay import vocab_ids
from kvplan.simulation.workload import Distribution, SyntheticWorkload
from kvplan.plan import Deployment
from kvplan.profiling import run_profile
from kvplan.model import load_model

TINY = {"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
# 1 MiB / (16 tokens x 2 layers x 2 x 2 heads x 16 dims x 4 B = 8 KiB per block) = 128 blocks; a request of
# 20 + 8 tokens holds 2 blocks from admission to its end: 64 users fit, and 100 requests ask for more.
FLAGS = ["--device", "cpu", "--dtype", "fp32", "--kv-cache-memory", "1MiB", "--max-num-seqs", "128",
         "--max-num-batched-tokens", "2048", "--max-model-len", "64"]
WORKLOAD = ["--requests", "100", "--prompt-len", "20", "--output-len", "8"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls only lose from intra-op threads, badly so on a busy 2-core CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def torch_reference_kernels(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(TINY))
    return path


def profile_tiny(tiny, requests=100, **kwargs):
    dep = Deployment(weight_dtype="fp32", kv_cache_memory_bytes=1 << 20, max_num_seqs=128,
                     max_num_batched_tokens=2048, max_model_len=64)
    workload = SyntheticWorkload(requests, Distribution.parse("20", "p"), Distribution.parse("8", "o"))
    return run_profile(load_model(str(tiny)), dep, workload, device="cpu", warn=lambda text: None, **kwargs)


def test_predicted_equals_measured_for_pool_blocks_and_users(tiny):
    result = profile_tiny(tiny)
    p, m = result.predicted, result.measured
    assert result.phase == "done" and result.finding is None
    assert m["kv_pool_bytes"] == p["kv_pool_bytes"] == 128 * 8192 == 1 << 20
    assert m["num_blocks"] == p["num_blocks"] == 128
    assert m["max_concurrent_users"] == p["max_concurrent_users"] == p["max_concurrent_users_capacity"] == 64
    assert m["blocks_leaked"] == 0
    # Same allocator and scheduler as the simulator: identical dynamics.
    assert m["memory_utilization"] == pytest.approx(result.simulated["memory_utilization"], abs=1e-12)
    assert m["preemptions"] == p["preemptions"] == 0
    assert result.error["kv_pool_bytes"] == result.error["num_blocks"] == result.error["max_concurrent_users"] == 0
    # CPU: weights are the model's tensors (parameters + rotary buffers), activations are not measurable.
    assert abs(m["weights_bytes"] - p["weights_bytes"]) < 1024
    assert result.measured.get("activation_peak_bytes") is None and result.on_cpu
    assert any("CPU run" in n for n in result.notes)
    assert len(result.samples) == result.run["steps"] > 0


def test_compare_contiguous_reserves_max_model_len(tiny):
    result = profile_tiny(tiny, requests=40, compare="contiguous")
    cont = result.contiguous
    assert cont["max_concurrent_users"] == cont["predicted_max_concurrent_users"] == 32  # 128 blocks / 4 per request
    assert result.run["max_concurrent_users"] == 40
    assert cont["memory_utilization"] < result.run["memory_utilization"]
    assert cont["blocks_leaked"] == 0


def test_cli_json_report_dir_and_stable_keys(tiny, tmp_path, capsys):
    report = tmp_path / "report"
    rc = main(["profile", str(tiny), *FLAGS, *WORKLOAD, "--format", "json", "--report", str(report)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)
    for section in ("predicted", "measured", "error"):
        for key in ("weights_bytes", "kv_pool_bytes", "num_blocks", "max_concurrent_users", "memory_utilization",
                    "internal_fragmentation", "peak_allocated_bytes"):
            assert key in doc[section], (section, key)
    assert doc["measured"]["num_blocks"] == doc["predicted"]["num_blocks"] == 128
    assert "CPU run" in captured.err  # said loudly
    names = sorted(p.name for p in report.iterdir())
    assert names == ["memory.png", "profile.json", "profile.md", "timeline.png"]  # no temp files left
    saved = json.loads((report / "profile.json").read_text())
    assert len(saved["samples"]) == saved["run"]["steps"]
    assert "| KV blocks | 128 | 128 | 128 (c) | +0 | +0.0% |" in (report / "profile.md").read_text()


def test_cpu_needs_a_budget(tiny, capsys):
    rc = main(["profile", str(tiny), "--device", "cpu", "--dtype", "fp32", *WORKLOAD])
    assert rc == 2
    assert "--kv-cache-memory" in capsys.readouterr().err


def test_request_that_fits_no_pool_is_a_finding(tiny, capsys):
    # 16 KiB = 2 blocks of 16 tokens; a 40-token prompt needs 3.
    rc = main(["profile", str(tiny), "--device", "cpu", "--dtype", "fp32", "--kv-cache-memory", "16KiB",
               "--max-model-len", "64", "--requests", "2", "--prompt-len", "40", "--output-len", "4"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "FINDING" in captured.out and "needs 3 blocks" in captured.err


def test_out_of_memory_becomes_a_finding_with_partial_measurements(tiny, monkeypatch):
    import kvplan.runtime.engine as engine_module

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 MiB")

    monkeypatch.setattr(engine_module.KVPool, "__init__", no_memory)
    result = profile_tiny(tiny)
    assert result.phase == "pool"
    assert result.finding.startswith("out of memory during pool: the KV pool of 128 blocks")
    assert result.measured["weights_bytes"] > 0 and result.measured.get("kv_pool_bytes") is None


def test_ctrl_c_leaves_a_partial_report(tiny, monkeypatch):
    import kvplan.runtime.engine as engine_module

    real_step, calls = engine_module.LLMEngine.step, []

    def interrupted_step(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(engine_module.LLMEngine, "step", interrupted_step)
    result = profile_tiny(tiny)
    assert result.interrupted and result.phase == "run"
    assert len(result.samples) == 2 and result.run["interrupted"]
    assert result.measured["num_blocks"] == 128
    assert any("interrupted" in n for n in result.notes)


def test_out_of_memory_mid_run_names_the_step_and_keeps_the_samples(tiny, monkeypatch):
    import kvplan.runtime.engine as engine_module

    real_step, calls = engine_module.LLMEngine.step, []

    def step(self):
        calls.append(1)
        if len(calls) == 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self)

    monkeypatch.setattr(engine_module.LLMEngine, "step", step)
    result = profile_tiny(tiny)
    assert result.finding.startswith("out of memory during the run at step 3 (after a step with 64 sequences")
    assert len(result.samples) == 3 and result.measured["max_concurrent_users"] == 64


def test_unsupported_model_is_refused_before_work(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, "model_type": "deepseek_v3", "kv_lora_rank": 32, "qk_rope_head_dim": 8,
                                "qk_nope_head_dim": 16, "v_head_dim": 16}))
    assert main(["profile", str(path), *FLAGS, *WORKLOAD]) == 2
    assert "latent attention" in capsys.readouterr().err


def test_synthetic_ids_fold_into_the_vocabulary_keeping_equality():
    prefix = [(1 << 40) + j for j in range(16)]
    a = vocab_ids(prefix + [(1 << 53) + j for j in range(16)], 128)
    b = vocab_ids(prefix + [(1 << 53) + (1 << 32) + j for j in range(16)], 128)
    assert a[:16] == b[:16] and a[16:] != b[16:]
    assert all(0 <= t < 128 for t in a + b)
    assert vocab_ids([5, 127], 128) == [5, 127]


def mixed_profile(tiny, n: int, kv_bytes: int = 1 << 18, requests: int = 30):
    dep = Deployment(weight_dtype="fp32", kv_cache_memory_bytes=kv_bytes, max_num_seqs=128,
                     max_num_batched_tokens=2048, max_model_len=80)
    workload = SyntheticWorkload(requests, Distribution.parse("uniform:8:40", "p"),
                                 Distribution.parse("uniform:4:30", "o"), num_samples=n)
    return run_profile(load_model(str(tiny)), dep, workload, device="cpu", warn=lambda text: None)


@pytest.mark.parametrize("n", [1, 2])
def test_simulated_prediction_is_the_run_while_the_static_one_is_not(tiny, n):
    """Mixed lengths on a 32-block pool: the estimate's users (at the longest request) are far from
    what the run reaches; the simulator over the same workload and allocator predicts the run
    exactly, n > 1 samples included (they sample distinct tokens, as the simulator's do)."""
    result = mixed_profile(tiny, n)
    static, simulated, measured = result.predicted_static, result.predicted_simulated, result.measured
    assert result.phase == "done" and measured["preemptions"] > 0
    assert static["max_concurrent_users"] < measured["max_concurrent_users"] / 2
    for key in ("max_concurrent_users", "memory_utilization", "internal_fragmentation", "preemptions"):
        assert measured[key] == pytest.approx(simulated[key], abs=1e-12), key
        assert result.predicted[key] == simulated[key] and result.predicted_basis[key] == "simulated"
        assert result.error[key] == pytest.approx(0, abs=1e-12)


def test_every_figure_says_how_it_was_obtained_and_cpu_leaves_device_terms_unmeasured(tiny):
    from kvplan.profiling import METRICS

    result = profile_tiny(tiny, requests=20)
    basis = result.measured_basis
    assert set(METRICS) <= set(basis)
    kinds = {key: basis[key]["kind"] for key in METRICS}
    assert {k for k, v in kinds.items() if v == "not measured"} == {
        "activation_peak_bytes", "non_torch_bytes", "total_memory_bytes", "allocator_fragmentation_bytes",
        "peak_allocated_bytes"}
    assert kinds["num_blocks"] == "computed" and kinds["kv_pool_bytes"] == kinds["weights_bytes"] == "measured"
    assert "storages" in basis["kv_pool_bytes"]["how"]
    assert all(result.measured[k] is None for k, v in kinds.items() if v == "not measured")


def test_pool_bytes_are_measured_from_the_allocation_not_the_formula(tiny, monkeypatch):
    """A pool that allocated more than its layout says shows up as an error (it used to be
    `pool.nbytes`, the layout's own formula, so it equalled the prediction by construction)."""
    import kvplan.runtime.engine as engine_module

    real_init = engine_module.KVPool.__init__

    def oversized(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.k_caches[0] = torch.zeros(self.k_caches[0].numel() + 1024, dtype=self.dtype).view(-1)[:-1024].view(
            self.k_caches[0].shape)  # a view into a larger allocation: 4 KiB more storage

    monkeypatch.setattr(engine_module.KVPool, "__init__", oversized)
    result = profile_tiny(tiny, requests=4)
    assert result.measured["kv_pool_bytes"] == (1 << 20) + 4096
    assert result.error["kv_pool_bytes"] == 4096
    assert result.measured["kv_pool_layout_bytes"] == 1 << 20


def test_missing_nvml_reading_budgets_the_modelled_non_torch_term_not_zero():
    """On CUDA without NVML the non-torch figure is unmeasured; the KV budget must then subtract the
    modelled term (it used to subtract nothing: the pool was oversized by it)."""
    from kvplan.plan.overhead import Term
    from kvplan.profiling.measurement import budget_terms
    from kvplan.profiling.result import ProfileResult

    result = ProfileResult("m", "test", "cuda:0", "GPU", False, "bf16", "auto", True, {}, {})
    result.record("activation_peak_bytes", 3 << 30, "measured", "test")
    result.unmeasured("non_torch_bytes", "no NVML reading")
    modelled = [Term("activation peak", 2 << 30, "model"), Term("non-torch (CUDA/NCCL)", 256 << 20, "model"),
                Term("CUDA graphs", 0, "model")]
    terms = budget_terms(result, modelled, cuda=True, dep=Deployment())
    assert [(t.name, t.bytes) for t in terms] == [("activation peak", 3 << 30), ("non-torch", 256 << 20),
                                                  ("CUDA graphs", 0)]
    assert "modelled" in terms[1].basis and any("no driver memory reading" in n for n in result.notes)
    result.record("non_torch_baseline_bytes", 500 << 20, "measured", "NVML")
    result.record("non_torch_bytes", 200 << 20, "computed", "NVML")  # the growth since start-up
    assert budget_terms(result, modelled, cuda=True, dep=Deployment())[1].bytes == 700 << 20  # context included
    assert budget_terms(result, modelled, cuda=False, dep=Deployment()) == modelled


def test_cpu_memory_chart_draws_only_measured_terms_and_names_the_rest(tiny):
    from kvplan.report.profile_plot import memory_chart_terms

    d = profile_tiny(tiny, requests=4).to_dict()
    shown, left_out = memory_chart_terms(d)
    assert [label for _, label in shown] == ["weights", "KV pool"]
    assert [label for _, label in left_out] == ["activations", "non-torch"]


def test_cuda_total_memory_leaves_the_cuda_context_out_as_the_prediction_does(monkeypatch):
    """The predicted total has no CUDA context term, so the measured total is the most the driver
    reported less the baseline right after CUDA start-up (the context), and the basis says so."""
    from kvplan.profiling.measurement import DevicePhases
    from kvplan.profiling.result import ProfileResult
    from kvplan.runtime import memory as memory_module

    class Memory:
        used_sources, unavailable = [memory_module.NVML_DEVICE], None

        def used_basis(self):
            return self.used_sources[0]

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 9 << 30)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    result = ProfileResult("m", "test", "cuda:0", "GPU", False, "bf16", "auto", True, {}, {})
    result.record("non_torch_baseline_bytes", 600 << 20, "measured", "driver used - torch reserved at start-up")
    phases = DevicePhases(result, None, Deployment(), torch.device("cuda", 0), Memory(), torch.bfloat16,
                          random=True, seed=0, terms=[], items=[])
    phases.nvml_peak_bytes = (10 << 30) + (600 << 20)
    phases.finish()
    m, basis = result.measured, result.measured_basis
    assert m["driver_used_peak_bytes"] == (10 << 30) + (600 << 20) and basis["driver_used_peak_bytes"]["kind"] == "measured"
    assert m["total_memory_bytes"] == 10 << 30 and basis["total_memory_bytes"]["kind"] == "computed"
    assert "CUDA context" in basis["total_memory_bytes"]["how"] and "whole device" in basis["total_memory_bytes"]["how"]
    assert m["peak_allocated_bytes"] == 9 << 30


def test_the_paged_report_is_written_before_the_contiguous_rerun(tiny, tmp_path):
    """A rerun that never ends (a step timeout on the GPU check) must leave the paged run's report."""
    from kvplan.report.profile import write_report_dir

    seen = []

    def checkpoint(result):
        write_report_dir(result, tmp_path / "report")
        seen.append(json.loads((tmp_path / "report" / "profile.json").read_text()))

    result = profile_tiny(tiny, requests=8, compare="contiguous", checkpoint=checkpoint)
    (early,) = seen
    assert early["phase"] == "contiguous" and early["contiguous"] is None and early["run"]["requests"] == 8
    assert early["error"]["num_blocks"] == 0  # compared already
    assert "**PARTIAL:** written before the contiguous phase finished" in (tmp_path / "report" / "profile.md").read_text()
    assert result.phase == "done" and result.contiguous["requests"] == 8


# transformers' fp32 attention mask for 8192 batch tokens alone takes 4 x 8192 x 8192 B: the default needs more memory.
@pytest.mark.parametrize("limits,budget_bytes,expected", [
    ({}, 768 << 20, (1024, 8192)), ({"max_num_seqs": 8, "max_num_batched_tokens": 256}, 32 << 20, (8, 256))])
def test_transformers_engine_limits_reach_the_runtime_scheduler(tiny, monkeypatch, limits, budget_bytes, expected):
    """--engine transformers: the runtime's scheduler (and the simulated prediction's) runs transformers'
    max_requests_per_batch and max_batch_tokens (its defaults 1024 and 8192 when not given), the values the
    estimate sized the pool with and the report shows."""
    import kvplan.runtime.engine as engine_module

    configs, real_init = [], engine_module.Scheduler.__init__
    monkeypatch.setattr(engine_module.Scheduler, "__init__",
                        lambda self, kv, config: configs.append(config) or real_init(self, kv, config))
    dep = Deployment(engine="transformers", weight_dtype="fp32", kv_cache_memory_bytes=budget_bytes, max_model_len=64,
                     **limits)
    workload = SyntheticWorkload(40, Distribution.parse("20", "p"), Distribution.parse("8", "o"))
    result = run_profile(load_model(str(tiny)), dep, workload, device="cpu", warn=lambda text: None)
    assert result.phase == "done" and result.finding is None
    assert configs and {(c.max_num_seqs, c.max_num_batched_tokens) for c in configs} == {expected}
    assert (result.deployment["max_num_seqs"], result.deployment["max_num_batched_tokens"]) == expected
    assert (result.estimate["max_num_seqs"], result.estimate["max_num_batched_tokens"]) == expected
    assert result.measured["num_blocks"] == result.predicted["num_blocks"] == result.estimate["num_blocks"] > 0
    assert result.run["max_concurrent_users"] == min(40, expected[0])
