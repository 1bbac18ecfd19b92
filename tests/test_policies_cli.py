"""Reading `vllm serve` commands, `kvplan estimate --vllm-args/--from`, and `kvplan explain-log` as a user runs them."""

import json
from pathlib import Path

import pytest

from kvplan.cli import main
from kvplan.errors import InputError
from kvplan.logs.startup import parse_startup_log
from kvplan.deploy.vllm_args import parse_vllm_argv, parse_vllm_command, vllm_number

LOGS = Path(__file__).parent / "data"


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


# --- vllm serve command lines ---

SCRIPT = r"""#!/bin/bash
# serve Qwen3 on two GPUs
MODEL="Qwen/Qwen3-32B"
export PORT=8000
CUDA_VISIBLE_DEVICES=0,1 VLLM_USE_V1=1 exec vllm serve $MODEL \
    --tensor-parallel-size 2 \
    --max-model-len=32k \
    --gpu_memory_utilization 0.85 \
    --kv-cache-dtype fp8 --enable-prefix-caching \
    --port ${PORT} --served-model-name qwen  # trailing comment
"""


def test_script_with_continuations_env_and_variables():
    a = parse_vllm_command(SCRIPT)
    assert a.model == "Qwen/Qwen3-32B" and a.tensor_parallel_size == 2
    assert a.max_model_len == 32000  # vLLM: lower-case k is 1000
    assert a.gpu_memory_utilization == 0.85 and a.kv_cache_dtype == "fp8"
    assert a.env == {"CUDA_VISIBLE_DEVICES": "0,1", "VLLM_USE_V1": "1"}
    assert a.ignored == ("--enable-prefix-caching", "--port 8000", "--served-model-name qwen")
    assert a.estimate_flags() == {"model": "Qwen/Qwen3-32B", "tp": 2, "max_model_len": "32000",
                                  "gpu_memory_utilization": 0.85, "kv_dtype": "fp8"}


@pytest.mark.parametrize("text,model,tp", [
    ("python -m vllm.entrypoints.openai.api_server --model meta-llama/Llama-3.1-8B-Instruct -tp 4", "meta-llama/Llama-3.1-8B-Instruct", 4),
    ("docker run --gpus all -p 8000:8000 vllm/vllm-openai:v0.10.1 --model Qwen/Qwen3-8B --tensor_parallel_size=2", "Qwen/Qwen3-8B", 2),
    ("--model Qwen/Qwen3-8B --pipeline-parallel-size 2", "Qwen/Qwen3-8B", None),
    ("cd /srv && vllm serve ./model --tensor-parallel-size 8", "./model", 8),
])
def test_launchers(text, model, tp):
    a = parse_vllm_command(text)
    assert a.model == model and a.tensor_parallel_size == tp


def test_argv_list_as_kubernetes_args_and_quantization():
    a = parse_vllm_argv(["vllm", "serve", "org/m-AWQ", "--quantization", "awq_marlin", "--dtype", "half",
                         "--kv-cache-memory-bytes", "4G", "--max-num-seqs", "64", "--block-size", "32",
                         "--max-num-batched-tokens", "2K", "--kv-transfer-config", '{"kv_connector": "x"}'])
    assert a.kv_cache_memory_bytes == 4 * 2**30 and a.max_num_batched_tokens == 2048
    flags = a.estimate_flags()
    assert flags["dtype"] == "awq" and flags["kv_cache_memory"] == str(4 * 2**30)
    assert flags["max_num_seqs"] == 64 and flags["block_size"] == 32
    assert a.ignored == ('--kv-transfer-config {"kv_connector": "x"}',)


@pytest.mark.parametrize("text", ["echo hello", "vllm serve m --max-model-len lots", "vllm serve m --tp 'unclosed"])
def test_bad_commands_are_input_errors(text):
    with pytest.raises(InputError):
        parse_vllm_command(text)


def test_vllm_number_suffixes():
    assert (vllm_number("1k", "x"), vllm_number("1K", "x"), vllm_number("2M", "x"), vllm_number("131072", "x")) == \
        (1000, 1024, 2 * 2**20, 131072)


# --- kvplan estimate --vllm-args / --from ---

def test_estimate_reads_vllm_args_and_command_line_wins(capsys, tmp_path):
    script = tmp_path / "serve.sh"
    script.write_text("vllm serve llama-3.1-8b --max-model-len 8192 --kv-cache-memory-bytes 4G --tensor-parallel-size 2 "
                      "--port 9000\n")
    code, out, _ = run(["estimate", "--from", str(script), "--tp", "1", "-f", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["engine"] == "vllm" and data["deployment"]["tp"] == 1
    assert data["max_model_len"] == 8192 and data["kv_budget_bytes"] == 4 * 2**30
    assert data["kv_cache_tokens"] == 4 * 2**30 // (2 * 8 * 128 * 2 * 32 * 16) * 16  # 2 MiB blocks of 16 tokens
    assert any("ignored: --port 9000" in n for n in data["notes"])
    assert any("instead of the vllm args: tp" in n for n in data["notes"])


def test_estimate_vllm_args_string_and_engine_override(capsys):
    code, out, _ = run(["estimate", "--vllm-args", "vllm serve llama-3.1-8b --max-model-len 4096 "
                        "--kv-cache-memory-bytes 1073741824", "--engine", "generic", "-f", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["engine"] == "generic" and data["engine_report"] is None


def test_estimate_from_and_vllm_args_together_is_an_error(capsys, tmp_path):
    (tmp_path / "s.sh").write_text("vllm serve llama-3.1-8b\n")
    code, _, err = run(["estimate", "--from", str(tmp_path / "s.sh"), "--vllm-args", "vllm serve x"], capsys)
    assert code == 2 and "not both" in err and "Traceback" not in err


def test_estimate_from_missing_file(capsys):
    code, _, err = run(["estimate", "--from", "/no/such/serve.sh"], capsys)
    assert code == 2 and "cannot read" in err


def test_estimate_vllm_refusal_in_table(capsys):
    code, out, _ = run(["estimate", "llama-3.1-8b", "--engine", "vllm", "--kv-cache-memory", "2GiB",
                        "--max-model-len", "64k"], capsys)
    assert code == 0 and "would refuse to start" in out and "16384" in out


# --- kvplan explain-log ---

def test_explain_log_table_and_json(capsys):
    log = str(LOGS / "vllm_logs" / "qwen3-14b-lmcache1739.log")
    code, out, _ = run(["explain-log", log], capsys)
    assert code == 0 and "42,656" in out and "agrees" in out and "DIFFERS" not in out
    code, out, _ = run(["explain-log", log, "-f", "json"], capsys)
    data = json.loads(out)
    tokens = next(r for r in data["rows"] if r["figure"].startswith("GPU KV cache size"))
    assert tokens["logged"] == "42,656" and tokens["agrees"] is True and data["engine_version"] == "0.11 (0.10.1 rules)"


def test_explain_log_flags_override_the_header(capsys):
    log = str(LOGS / "vllm_logs" / "qwen3-14b-lmcache1739.log")
    code, out, _ = run(["explain-log", log, "--kv-dtype", "fp8", "-f", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["settings"]["kv_dtype"] == "fp8"
    assert not next(r for r in data["rows"] if r["figure"].startswith("GPU KV cache size"))["agrees"]


def test_explain_log_names_missing_lines(capsys, tmp_path):
    log = tmp_path / "partial.log"
    log.write_text("INFO 10-03 [gpu_worker.py:298] Available KV cache memory: 6.51 GiB\n")
    code, out, _ = run(["explain-log", str(log), "--layers", "40", "--kv-heads", "8", "--head-dim", "128",
                        "--max-model-len", "32768", "-f", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and "KV cache size (tokens or blocks)" in data["missing"]
    assert "maximum concurrency" in data["missing"]
    assert data["predicted_lines"][1] == "GPU KV cache size: 42,656 tokens"


def test_explain_log_sglang(capsys):
    code, out, _ = run(["explain-log", str(LOGS / "sglang_logs" / "qwen3-235b-a22b-fp8-tp4-vllm21348.log"), "-f",
                        "markdown"], capsys)
    assert code == 0 and "| K size (GiB, printed GB) | 8.23 | 8.23 |" in out


@pytest.mark.parametrize("text,needle", [("just some text\n", "no vLLM or SGLang"),
                                         ("INFO Available KV cache memory: 1.00 GiB\n", "--model")])
def test_explain_log_errors_are_one_line(capsys, tmp_path, text, needle):
    log = tmp_path / "x.log"
    log.write_text(text)
    code, _, err = run(["explain-log", str(log)], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_log_templates_across_versions():
    v0 = parse_startup_log("INFO 04-15 [worker.py:267] the current vLLM instance can use total_gpu_memory (39.38GiB) "
                           "x gpu_memory_utilization (0.95) = 37.41GiB\n"
                           "INFO [worker.py:267] model weights take 34.43GiB; non_torch_memory takes 0.43GiB; PyTorch "
                           "activation peak memory takes 2.51GiB; the rest of the memory reserved for KV Cache is 0.04GiB.\n"
                           "INFO [executor_base.py:112] # cuda blocks: 364, # CPU blocks: 2048\n")
    assert (v0.generation, v0.total_gpu_gib, v0.min_available_kv_gib(), v0.num_gpu_blocks) == ("v0", 39.38, 0.04, 364)
    v1 = parse_startup_log("(Worker_PP1_TP0 pid=7) INFO [gpu_worker.py:298] Available KV cache memory: 3.50 GiB\n"
                           "INFO [gpu_model_runner.py:1985] Model loading took 2.8871 GiB and 5.965132 seconds\n"
                           "INFO Initializing a V1 LLM engine (v0.10.1.1) with config: model='Qwen/Qwen3-8B', "
                           "tensor_parallel_size=1, pipeline_parallel_size=2, kv_cache_dtype=auto, max_seq_len=4096\n")
    w = v1.available_kv_gib[0]
    assert (w.pp_rank, w.tp_rank, v1.weights_gib, v1.version, v1.model) == (1, 0, 2.8871, "0.10.1.1", "Qwen/Qwen3-8B")
    assert v1.settings["pipeline_parallel_size"] == "2" and v1.settings["max_seq_len"] == "4096"
