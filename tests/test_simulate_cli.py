"""`kvplan simulate` as a user runs it: documented JSON keys, formats, plot, reproducibility, exit 2."""

import json
from pathlib import Path

import pytest

from kvplan.cli import main

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "trace.jsonl")
BASE = ["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096"]
SMALL = ["--requests", "30", "--prompt-len", "uniform:10:600", "--output-len", "uniform:1:300"]

DOCUMENTED = {"peak_concurrency": int, "mean_concurrency": float, "memory_utilization": float,
              "internal_fragmentation": float, "prefix_hit_rate": float, "prefill_tokens_saved": int,
              "preemptions": int, "completed_requests": int, "effective_batch": float, "queueing_delay": dict,
              "simulated_time": float, "steps": int, "num_blocks": int, "block_size": int, "time_unit": str,
              "workload": dict, "contiguous": dict, "notes": list}


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_documented_keys(capsys):
    code, out, _ = run(BASE + SMALL + ["--shared-prefix", "64", "--format", "json"], capsys)
    assert code == 0
    d = json.loads(out)
    for key, kind in DOCUMENTED.items():
        assert isinstance(d[key], kind), key
    for key in ("memory_utilization", "internal_fragmentation", "prefix_hit_rate", "effective_batch"):
        assert 0 <= d[key] <= 1
    assert set(d["queueing_delay"]) == {"mean", "p50", "p90", "p99", "max"}
    assert {"memory_utilization", "peak_concurrency", "max_concurrency"} <= set(d["contiguous"])
    assert d["memory_utilization"] + d["internal_fragmentation"] == pytest.approx(1)
    assert d["completed_requests"] == 30 and d["time_unit"] == "s"


def test_same_seed_same_report_and_event_equals_step(capsys):
    outs = [run(BASE + SMALL + ["--n", "2", "--format", "json", *extra], capsys)[1]
            for extra in ([], [], ["--mode", "step"], ["--seed", "1"])]
    assert outs[0] == outs[1]
    event, step = json.loads(outs[0]), json.loads(outs[2])
    assert event.pop("mode") == "event" and step.pop("mode") == "step" and event == step
    assert json.loads(outs[3]) != event


@pytest.mark.parametrize("fmt,needle", [("table", "memory utilization"), ("csv", "metric,paged,contiguous"),
                                        ("markdown", "| metric | paged | contiguous |")])
def test_other_formats(capsys, fmt, needle):
    code, out, _ = run(BASE + SMALL + ["--format", fmt], capsys)
    assert code == 0 and needle in out


def test_trace_and_plot(capsys, tmp_path):
    png = tmp_path / "sim.png"
    code, out, err = run(BASE + ["--trace", EXAMPLE, "--plot", str(png), "--format", "json"], capsys)
    assert code == 0, err
    assert json.loads(out)["completed_requests"] == 24 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_step_clock(capsys):
    code, out, _ = run(BASE + SMALL + ["--clock", "steps", "--format", "json"], capsys)
    d = json.loads(out)
    assert d["time_unit"] == "step" and d["simulated_time"] == d["steps"]


@pytest.mark.parametrize("extra,match", [
    (["--prompt-len", "uniform:9:3"], "--prompt-len"),
    (["--output-len", "lognormal:x:1"], "--output-len"),
    (["--requests", "0"], "--requests"),
    (["--arrival-rate", "-2"], "--arrival-rate"),
    (["--trace", EXAMPLE, "--requests", "5"], "drop --requests"),
    (["--mode", "fast"], "mode"),
    (["--max-num-seqs", "9000"], "--max-num-batched-tokens"),
    (["--kv-cache-memory", "64MiB", "--prompt-len", "3000"], "does not fit in the KV pool"),
    # flags transformers has no knob for are refused with --engine transformers, not echoed and ignored
    (["--engine", "transformers", "--no-chunked-prefill"], "--no-chunked-prefill has no equivalent in transformers"),
    (["--engine", "transformers", "--activation-memory", "1GiB"], "--activation-memory has no equivalent in "),
    (["--engine", "transformers", "--cuda-graph-memory", "1GiB"], "--cuda-graph-memory has no equivalent in "),
    (["--engine", "sglang", "--activation-memory", "1GiB"], "--activation-memory has no equivalent in sglang"),
    (["--engine", "transformers", "--max-num-batched-tokens", "512"], "give --max-num-seqs 512 or less"),
])
def test_invalid_input_exits_2_with_one_line(capsys, tmp_path, extra, match):
    png = tmp_path / "never.png"
    code, out, err = run(BASE + extra + ["--plot", str(png)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and match in err
    assert not png.exists()


def test_cost_clock_needs_a_known_gpu(capsys):
    code, out, err = run(["simulate", "llama-3.1-8b", "--gpu-memory", "80GiB", "--clock", "cost"], capsys)
    assert code == 2 and out == "" and "--clock cost needs GPU bandwidth" in err
    code, out, _ = run(["simulate", "llama-3.1-8b", "--gpu-memory", "80GiB", "--requests", "3", "--format", "json"],
                       capsys)
    d = json.loads(out)
    assert d["time_unit"] == "step" and any("scheduler steps" in n for n in d["notes"])


def test_malformed_trace_line_exit_2_nothing_written(capsys, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt_len": 10, "output_len": 5}\n{"prompt_len": 10, "output_len": "5"}\n')
    png = tmp_path / "p.png"
    code, out, err = run(BASE + ["--trace", str(trace), "--plot", str(png)], capsys)
    assert code == 2 and out == "" and "t.jsonl:2:" in err and "'output_len'" in err and not png.exists()


def test_contiguous_that_cannot_hold_one_request(capsys):
    code, out, _ = run(BASE + ["--kv-cache-memory", "256MiB", "--requests", "20", "--prompt-len", "100",
                               "--output-len", "20", "--format", "json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["completed_requests"] == 20
    assert d["num_blocks"] * 16 < 4096 and d["contiguous"]["peak_concurrency"] == 0
    assert any(n.startswith("contiguous:") for n in d["notes"])


def test_peak_at_the_max_num_seqs_cap_is_said(capsys):
    """Issue 19.4: a peak equal to --max-num-seqs is the scheduler's cap, and the output says so."""
    args = BASE + ["--requests", "100", "--prompt-len", "50", "--output-len", "20"]
    d = json.loads(run(args + ["--max-num-seqs", "16", "--format", "json"], capsys)[1])
    assert d["peak_concurrency"] == d["max_num_seqs"] == 16
    for fmt in ("table", "markdown"):
        out = run(args + ["--max-num-seqs", "16", "--format", fmt], capsys)[1]
        assert "peak 16 = --max-num-seqs cap" in out
    d = json.loads(run(args + ["--max-num-seqs", "512", "--format", "json"], capsys)[1])
    assert d["peak_concurrency"] < 512
    assert "--max-num-seqs cap" not in run(args + ["--max-num-seqs", "512"], capsys)[1]


def test_transformers_engine_runs_the_limits_it_reports(capsys):
    """--engine transformers: the limits the JSON shows are transformers' own defaults when not given and the
    user's when given (max_batch_tokens, max_requests_per_batch); the pool is sized with them and the scheduler
    runs them."""
    from kvplan import Deployment, estimate, find_gpu, load_model

    args = BASE + ["--engine", "transformers", "--requests", "100", "--prompt-len", "50", "--output-len", "20",
                   "--clock", "steps", "--format", "json"]
    default = json.loads(run(args, capsys)[1])
    assert (default["max_num_seqs"], default["max_num_batched_tokens"], default["block_size"]) == (1024, 8192, 256)
    given = json.loads(run(args + ["--max-num-batched-tokens", "2048", "--max-num-seqs", "16"], capsys)[1])
    assert (given["max_num_seqs"], given["max_num_batched_tokens"]) == (16, 2048)
    assert given["peak_concurrency"] == 16 < default["peak_concurrency"]
    e = estimate(load_model("llama-3.1-8b"), Deployment(gpu=find_gpu("H100"), max_model_len=4096, engine="transformers",
                                                        max_num_batched_tokens=2048, max_num_seqs=16))
    assert given["num_blocks"] == e.engine_report["figures"]["num_sectors"] > default["num_blocks"]
