"""The step clock: roofline durations from the deployment, or one unit per step."""

import json

import pytest

from kvplan.cli import main
from kvplan.simulation.clock import CostModel, StepClock

H100_BYTES_PER_S, H100_FLOPS = 3.35e12, 989.4e12  # the catalog's H100-SXM figures
LLAMA_8B_PARAMS = 8_030_261_248
LLAMA_8B_KV_PER_TOKEN = 32 * 2 * 8 * 128 * 2  # layers x (K, V) x KV heads x head dim x bf16 bytes = 131,072


def test_cost_model_is_the_larger_of_memory_and_compute():
    m = CostModel(weights_bytes=10**9, kv_bytes_per_token=1000, flops_per_token=2e9, bandwidth_bytes_per_s=1e12,
                  peak_flops=1e15)
    assert m.step_time(1, 10_000) == pytest.approx((10**9 + 10**7) / 1e12)  # decode: reading weights dominates
    assert m.step_time(4096, 0) == pytest.approx(2e9 * 4096 / 1e15)  # long prefill: compute dominates
    assert StepClock().step_time(4096, 10**6) == 1.0
    with pytest.raises(ValueError):
        CostModel(1, 1, 1.0, 0.0, 1.0)


def test_seed_request_duration_from_the_catalog(capsys):
    code = main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096", "--requests", "1",
                 "--prompt-len", "500", "--output-len", "1", "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["clock"]["kv_bytes_per_token"] == LLAMA_8B_KV_PER_TOKEN
    memory_s = (d["clock"]["weights_bytes"] + LLAMA_8B_KV_PER_TOKEN * 500) / H100_BYTES_PER_S
    compute_s = 2 * LLAMA_8B_PARAMS * 500 / H100_FLOPS
    assert d["simulated_time"] == pytest.approx(max(memory_s, compute_s)) and compute_s > memory_s  # 8.1 ms
    assert d["clock"]["weights_bytes"] > 2 * LLAMA_8B_PARAMS * 0.99  # bf16 weights, about 16 GB


def test_two_requests_decode_steps(capsys):
    """Prompt 100 + 3 outputs each, both at once: one prefill step of 200 tokens, then 2 decode steps."""
    code = main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096", "--requests", "2",
                 "--prompt-len", "100", "--output-len", "3", "--format", "json", "--no-contiguous"])
    d = json.loads(capsys.readouterr().out)
    w = d["clock"]["weights_bytes"]

    def step(tokens, context):
        return max((w + LLAMA_8B_KV_PER_TOKEN * context) / H100_BYTES_PER_S, 2 * LLAMA_8B_PARAMS * tokens / H100_FLOPS)

    expected = step(200, 200) + step(2, 2 * 101) + step(2, 2 * 102)
    assert code == 0 and d["steps"] == 3 and d["simulated_time"] == pytest.approx(expected)
    assert d["contiguous"] is None
