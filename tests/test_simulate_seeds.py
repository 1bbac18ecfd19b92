"""The seed scenarios through `kvplan simulate --format json`, each figure derived here independently."""

import json
import math

import pytest

from kvplan import Deployment, estimate, find_gpu, load_model
from kvplan.cli import main


def simulate_json(args, capsys) -> dict:
    code = main(["simulate", "llama-3.1-8b", "--gpu", "H100", *args, "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_one_500_token_request_in_a_4096_reservation(capsys):
    d = simulate_json(["--max-model-len", "4096", "--requests", "1", "--prompt-len", "500", "--output-len", "1"], capsys)
    blocks = math.ceil(500 / 16)
    assert d["memory_utilization"] == pytest.approx(500 / (blocks * 16))  # 97.7%
    assert round(100 * d["memory_utilization"], 1) == 97.7
    assert d["internal_fragmentation"] == pytest.approx(12 / 512)
    assert d["contiguous"]["memory_utilization"] == pytest.approx(500 / 4096)  # 12.2%
    assert round(100 * d["contiguous"]["memory_utilization"], 1) == 12.2
    assert round(100 * d["contiguous"]["internal_fragmentation"], 1) == 87.8
    assert d["peak_concurrency"] == d["contiguous"]["peak_concurrency"] == 1 and d["completed_requests"] == 1


@pytest.mark.parametrize("rate", ["10", None])
def test_100_requests_sharing_a_2000_token_system_prompt(capsys, rate):
    args = ["--max-model-len", "4096", "--requests", "100", "--shared-prefix", "2000", "--prompt-len", "100",
            "--output-len", "100"]
    d = simulate_json(args + (["--arrival-rate", rate] if rate else []), capsys)
    # 2000 = 125 whole blocks: every request after the first reuses all of them, those admitted in
    # the first step too (blocks are registered when allocated, as in vLLM).
    hits = 100 - 1
    assert d["prefill_tokens_saved"] == hits * 2000 == 198_000
    assert d["prefix_hit_rate"] == pytest.approx(hits * 2000 / (100 * 2100))
    assert d["preemptions"] == 0 and d["completed_requests"] == 100


def test_1000_users_common_prompt_paged_vs_contiguous(capsys):
    args = ["--max-model-len", "8192", "--requests", "1000", "--shared-prefix", "1000", "--prompt-len", "0",
            "--output-len", "uniform:50:4000"]
    d = simulate_json(args, capsys)
    est = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("H100"), max_model_len=8192))
    assert d["num_blocks"] == est.num_blocks and d["block_size"] == est.block_size == 16
    # Contiguous: each user reserves 8192 tokens of the same pool.
    contiguous_max = est.num_blocks * 16 // 8192
    assert d["contiguous"]["max_concurrency"] == d["contiguous"]["peak_concurrency"] == contiguous_max == 55
    # Paged: a new user holds 1 private block beside the 62 shared ones, so the scheduler's
    # max-num-seqs (256), not memory, caps concurrency.
    assert d["peak_concurrency"] == min(256, 1000)
    # The prompt is exactly the 1,000 shared tokens: a hit stops at (1000 - 1) // 16 = 62 blocks, and
    # every user after the first hits them (the first step's too: registered when allocated).
    assert d["prefill_tokens_saved"] == (1000 - 1) * 62 * 16 == 991_008
    assert d["prefix_hit_rate"] == pytest.approx(991_008 / (1000 * 1000))
    assert d["completed_requests"] == d["contiguous"]["completed_requests"] == 1000
    assert d["memory_utilization"] > 0.99 and d["contiguous"]["memory_utilization"] < 0.3


def test_1000_users_with_room_for_1024_sequences(capsys):
    args = ["--max-model-len", "8192", "--requests", "1000", "--shared-prefix", "1000", "--prompt-len", "0",
            "--output-len", "uniform:50:4000", "--max-num-seqs", "1024"]
    d = simulate_json(args, capsys)
    # Every user fits at admission (1 private block each + 62 shared << num_blocks), so all 1,000 run
    # at once; as answers grow the pool runs out and the newest are preempted and recomputed.
    assert 1000 + 62 <= d["num_blocks"]
    assert d["peak_concurrency"] == 1000 and d["preemptions"] > 0 and d["completed_requests"] == 1000
    assert d["contiguous"]["peak_concurrency"] == d["num_blocks"] * 16 // 8192 == 54
