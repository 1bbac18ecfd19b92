"""Peak (what the engine reserves) and decode steady state per request, in every output (issue 15)."""

import csv
import io
import json

from kvplan.cli import main
from kvplan.hardware import find_gpu
from kvplan.model import load_model
from kvplan.plan import Deployment, estimate


def test_gemma2_peak_and_steady_at_8k():
    # 21 full + 21 sliding (W 4096) layers of 8 KV heads x 256, bf16: 8,192 B per token per layer.
    # Peak: one 8,192-token prefill chunk reads every earlier token, so sliding layers hold 8,192 too.
    e = estimate(load_model("gemma-2-9b"), Deployment(context_tokens=8192))
    assert e.kv_bytes_per_request == 42 * 8192 * 8192 == 2_818_572_288
    # Steady: decoding keeps W tokens in a sliding layer
    assert e.kv_bytes_per_request_steady == 21 * 8192 * 8192 + 21 * 8192 * 4096 == 2_113_929_216
    assert e.kv_bytes_per_request_steady_per_gpu == e.kv_bytes_per_request_steady


def test_steady_state_includes_the_recurrent_state_and_splits_over_tp():
    e = estimate(load_model("qwen3-next-80b-a3b"), Deployment(context_tokens=1000, tp=2, gpu=find_gpu("H100")))
    state = 36 * (8192 * 3 + 32 * 128 * 128) * 2
    assert e.kv_bytes_per_request_steady == 12 * 2 * 2 * 256 * 2 * 1000 + state
    # per GPU: one KV head of two, half the state
    assert e.kv_bytes_per_request_steady_per_gpu == 12 * 2 * 1 * 256 * 2 * 1000 + state // 2
    assert e.kv_bytes_per_request >= e.kv_bytes_per_request_steady  # block rounding only adds


def test_json_csv_and_table_carry_both(capsys):
    args = ["estimate", "gemma-2-9b", "--context", "8192"]
    assert main(args + ["--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kv_bytes_per_request"] == 2_818_572_288 and data["kv_bytes_per_request_steady"] == 2_113_929_216
    assert data["contexts"][-1]["kv_bytes_per_request_steady"] == 2_113_929_216
    assert main(args + ["--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[-1]["kv_bytes_per_request_steady"] == "2113929216"
    for fmt in ("table", "markdown"):
        assert main(args + ["--format", fmt]) == 0
        out = capsys.readouterr().out
        assert "decode steady state" in out and "2,113,929,216" in out and "peak" in out
