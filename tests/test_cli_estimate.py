"""The estimate command as a user runs it: exit codes, one-line errors, clean JSON, help examples."""

import json
import subprocess
import sys

import pytest

from kvplan.cli import main


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_bare_estimate_demonstrates(capsys):
    code, out, err = run(["estimate"], capsys)
    assert code == 0
    assert "llama-3.1-8b" in out and "H100" in out and "GiB" in out and "GB" in out and "Verdict" in out


def test_json_stdout_is_one_document_with_documented_keys(capsys):
    code, out, _ = run(["estimate", "llama-3.1-8b", "--gpu", "H100", "--context", "8k", "--batch", "4",
                        "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    for key in ("kv_bytes_per_token", "kv_bytes_per_request", "kv_bytes_total", "weights_bytes", "kv_budget_bytes",
                "kv_cache_tokens", "max_concurrency", "max_concurrent_users", "max_context_tokens"):
        assert key in data
    assert data["kv_bytes_per_request"] == 131072 * 8192
    assert data["kv_bytes_total"] == 4 * 131072 * 8192
    assert isinstance(data["max_concurrency"], float) and isinstance(data["max_concurrent_users"], int)


def test_raw_numbers_seed_via_cli(capsys):
    code, out, _ = run(["estimate", "--layers", "80", "--kv-heads", "64", "--head-dim", "128", "--context", "4096",
                        "--batch", "32", "--kv-dtype", "fp16", "-f", "json"], capsys)
    data = json.loads(out)
    assert code == 0 and data["kv_bytes_total"] == 343_597_383_680 and data["kv_budget_bytes"] is None


def test_csv_and_markdown(capsys):
    code, out, _ = run(["estimate", "qwen3-8b", "--gpu", "A100-80GB", "-f", "csv"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("model,gpu,tp") and len(lines) >= 3
    code, out, _ = run(["estimate", "qwen3-8b", "--gpu", "A100-80GB", "-f", "markdown"], capsys)
    assert code == 0 and "| context |" in out and "**Verdict:**" in out


@pytest.mark.parametrize("args,needle", [
    (["estimate", "no-such-model"], "unknown model"),
    (["estimate", "llama-3.1-8b", "--gpu", "H1000"], "unknown --gpu"),
    (["estimate", "llama-3.1-8b", "--gpu-memory", "80 potatoes"], "unknown unit"),
    (["estimate", "llama-3.1-8b", "--kv-dtype", "fp7"], "unknown --kv-dtype"),
    (["estimate", "llama-3.1-8b", "--dtype", "int3"], "unknown --dtype"),
    (["estimate", "llama-3.1-8b", "--tp", "0"], "--tp"),
    (["estimate", "llama-3.1-8b", "--tp", "3"], "does not divide"),
    (["estimate", "llama-3.1-8b", "--gpu-memory-utilization", "1.5"], "utilization"),
    (["estimate", "llama-3.1-8b", "--context", "-5"], "--context"),
    (["estimate", "llama-3.1-8b", "--format", "xml"], "--format"),
    (["estimate", "--layers", "32", "--kv-heads", "8"], "--head-dim"),
    (["estimate", "--layers", "32", "--kv-heads", "8", "--head-dim", "0"], "--head-dim"),
])
def test_bad_input_is_one_line_exit_2(args, needle, capsys):
    code, out, err = run(args, capsys)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert out == ""


def test_malformed_config_file(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", "num_hidden_layers": ')
    code, _, err = run(["estimate", str(bad)], capsys)
    assert code == 2 and "not valid JSON" in err


def test_help_shows_examples(capsys):
    for args in (["--help"], ["estimate", "--help"], ["models", "--help"]):
        code, out, _ = run(args, capsys)
        assert code == 0 and "Example" in out


def test_models_lists_bundled_specs(capsys):
    code, out, _ = run(["models", "-f", "json"], capsys)
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 25
    by_name = {r["name"]: r for r in rows}
    assert by_name["deepseek-v3"]["kv_bytes_per_token_bf16"] == 70_272


def test_python_m_kvplan_and_no_heavy_imports():
    code = ("import sys, runpy\n"
            "sys.argv = ['kvplan', 'estimate', 'gemma-3-27b', '--gpu', 'H100', '--format', 'json']\n"
            "try:\n    runpy.run_module('kvplan', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'pandas', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("HEAVY="), out.stdout[-200:]
