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
from kvplan.profile import run_profile
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
    assert "| KV blocks | 128 | 128 | +0 | +0.0% |" in (report / "profile.md").read_text()


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
