"""Deployment flags declared once (Deployment's fields), engine defaults for what is not given, engines' own names."""

import ast
import json
from pathlib import Path

import pytest
import typer

from kvplan.cli import app, main
from kvplan.deploy.fields import DEPLOYMENT_FIELDS, json_schema
from kvplan.deploy.file import load_deployments
from kvplan.plan import Deployment
from kvplan.plan.deployment import SETTINGS
from kvplan.units import GiB, MiB

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "data"


def run(args, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def estimate_json(args, capsys, monkeypatch):
    code, out, err = run(["estimate", *args, "-f", "json"], capsys, monkeypatch)
    assert code == 0, err
    return json.loads(out)


def options(command: str) -> dict:
    """Click parameters of a command, by their Python name."""
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


# --- one declaration ---------------------------------------------------------------------------

COMMAND_FLAGS = {
    "estimate": set(SETTINGS),
    "profile": set(SETTINGS),
    "simulate": set(SETTINGS) - {"context_tokens", "batch"},
    "sweep": {"gpu_memory_utilization", "block_size", "engine"},
    "explain-log": {"gpu", "tp", "pp", "weight_dtype", "kv_dtype", "max_model_len", "block_size",
                    "max_num_batched_tokens", "gpu_memory_utilization", "kv_cache_memory_bytes", "weights_bytes"},
}


@pytest.mark.parametrize("command", sorted(COMMAND_FLAGS))
def test_commands_take_the_declared_flags_with_no_default_of_their_own(command):
    params = options(command)
    for name in COMMAND_FLAGS[command]:
        s = SETTINGS[name]
        param = params[s.key]
        assert param.opts == [s.flag]
        assert param.default is None, f"{command} {s.flag}: the Deployment's default applies when not given"
        assert param.help.startswith(s.help)
        if s.default is not None and command != "explain-log":
            assert param.help.endswith(f"(default: {s.default})")


def test_explain_log_states_the_log_as_the_default():
    params = options("explain-log")
    assert params["tp"].help.endswith("(default: from the log)")
    assert "from the log" not in params["gpu"].help


def test_engine_dependent_defaults_are_listed_per_engine_in_help():
    help_text = options("estimate")["block_size"].help
    for engine, block in (("generic", 16), ("vllm", 16), ("sglang", 1), ("trtllm", 64), ("transformers", 256)):
        assert f"{engine} {block}" in help_text


def test_engine_defaults_resolve_on_construction():
    # Published defaults: SGLang --page-size 1, TensorRT-LLM tokens_per_block 64 (C++ runtime) / 32 (PyTorch
    # backend), transformers' paged cache page_size 256, vLLM --block-size 16; scheduler 8192 tokens / 256 seqs.
    assert Deployment().block_size == 16 and Deployment(engine="vllm").block_size == 16
    assert Deployment(engine="sglang").block_size == 1
    assert Deployment(engine="trtllm").block_size == 64 and Deployment(engine="trtllm@pytorch").block_size == 32
    assert Deployment(engine="transformers").block_size == 256
    assert (Deployment().max_num_batched_tokens, Deployment().max_num_seqs) == (8192, 256)
    assert Deployment(engine="sglang", block_size=16).block_size == 16  # given: kept, whatever the engine


def test_sglang_page_size_16_can_be_modelled(capsys, monkeypatch):
    # 1001 MiB / 131,072 B per token (Llama-3.1-8B, bf16) = 8008 tokens; pages of 16 hold 8000 of them.
    budget = ["llama-3.1-8b", "--gpu", "H100", "--engine", "sglang", "--kv-cache-memory", "1001MiB"]
    assert 1001 * MiB // 131072 == 8008
    default = estimate_json(budget, capsys, monkeypatch)
    paged = estimate_json([*budget, "--block-size", "16"], capsys, monkeypatch)
    assert (default["block_size"], default["kv_cache_tokens"]) == (1, 8008)
    assert (paged["block_size"], paged["kv_cache_tokens"], paged["num_blocks"]) == (16, 8000, 500)


@pytest.mark.parametrize("engine,block", [("transformers", 16), ("trtllm", 16), ("generic", 1)])
def test_an_explicit_block_size_is_never_read_as_the_engine_default(engine, block, capsys, monkeypatch):
    data = estimate_json(["llama-3.1-8b", "--gpu", "H100", "--engine", engine, "--kv-cache-memory", "4GiB",
                          "--block-size", str(block)], capsys, monkeypatch)
    assert data["block_size"] == block


def test_deployment_file_leaves_engine_defaults_to_the_engine(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("deployments:\n"
                    "  - {name: a, model: llama-3.1-8b, gpu: H100, engine: sglang}\n"
                    "  - {name: b, model: llama-3.1-8b, gpu: H100, engine: sglang, block_size: 16}\n")
    a, b = load_deployments([path])
    assert (a.deployment.block_size, b.deployment.block_size) == (1, 16)
    assert (a.deployment.max_num_batched_tokens, a.deployment.max_num_seqs) == (8192, 256)


def test_file_keys_and_schema_come_from_the_same_declaration():
    schema = json_schema()["$defs"]["deployment"]["properties"]
    for s in SETTINGS.values():
        if not s.in_file:
            assert s.key not in DEPLOYMENT_FIELDS
            continue
        assert DEPLOYMENT_FIELDS[s.key].kwarg == s.name and schema[s.key]["description"].startswith(s.help)
        if s.default is not None:
            assert schema[s.key]["default"] == s.default
    assert schema["tp"]["maximum"] == SETTINGS["tp"].maximum


def test_defaults_are_written_once():
    """The CLI and deployment files state no default value of their own (no 0.9, 8192, 256 or 16 literal)."""
    defaults = {0.9, 8192, 256, 16}
    files = [*sorted((ROOT / "kvplan" / "cli").glob("*.py")), ROOT / "kvplan" / "deploy" / "fields.py"]
    for path in files:
        tree = ast.parse(path.read_text())
        found = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)
                 and n.value in defaults]
        assert not found, f"{path.name}: default values written again: {found}"
        assert "locals()" not in path.read_text()


# --- bounds ------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag,value,bound", [
    ("--batch", "1000000000000000", "1,048,576"), ("--tp", "4096", "1,024"), ("--pp", "2048", "1,024"),
    ("--max-num-seqs", "10000000", "1,048,576"), ("--block-size", "100000", "65,536"),
    ("--context", "2g", None), ("--context", "2000000000", "1,073,741,824"),
    ("--max-model-len", "1e15", "1,073,741,824"), ("--max-num-batched-tokens", "2000000000", "1,073,741,824"),
])
def test_every_count_flag_has_a_stated_plausible_bound(flag, value, bound, capsys, monkeypatch):
    code, out, err = run(["estimate", "llama-3.1-8b", flag, value], capsys, monkeypatch)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"kvplan: error: {flag}")
    if bound is not None:
        assert f"implausibly large (at most {bound})" in err


def test_bounds_hold_in_deployment_files_with_the_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "d.yaml"
    path.write_text("model: llama-3.1-8b\ngpu: H100\ntp: 5000\n")
    code, _, err = run(["check", str(path)], capsys, monkeypatch)
    assert code == 2 and f"{path.name}:3:" in err and "tp: 5,000 is implausibly large (at most 1,024)" in err


def test_library_deployments_are_bounded_too():
    with pytest.raises(Exception, match="--batch: 2,000,000 is implausibly large"):
        Deployment(batch=2_000_000)


# --- the engines' names for the memory fraction ----------------------------------------------------

@pytest.mark.parametrize("engine,alias", [("sglang", "--mem-fraction-static"),
                                          ("trtllm", "--free-gpu-memory-fraction"),
                                          ("transformers", "--max-memory-percent")])
def test_engine_spelling_of_the_fraction_is_the_same_setting(engine, alias, capsys, monkeypatch):
    base = ["llama-3.1-8b", "--gpu", "H100", "--engine", engine]
    by_alias = estimate_json([*base, alias, "0.8"], capsys, monkeypatch)
    by_vllm_name = estimate_json([*base, "--gpu-memory-utilization", "0.8"], capsys, monkeypatch)
    assert by_alias == by_vllm_name
    name = alias[2:].replace("-", "_")
    assert any(f"{engine} reads --gpu-memory-utilization 0.8 as its {name}" in n for n in by_alias["notes"])


def test_the_fraction_note_names_nothing_for_vllm_semantics(capsys, monkeypatch):
    for engine in ("generic", "vllm"):
        data = estimate_json(["llama-3.1-8b", "--gpu", "H100", "--engine", engine], capsys, monkeypatch)
        assert not any("reads --gpu-memory-utilization" in n for n in data["notes"])


@pytest.mark.parametrize("args,message", [
    (["--mem-fraction-static", "0.8"], "--mem-fraction-static is sglang's memory fraction: add --engine sglang"),
    (["--engine", "vllm", "--free-gpu-memory-fraction", "0.8"], "add --engine trtllm (with --engine vllm"),
    (["--engine", "sglang", "--mem-fraction-static", "0.8", "--gpu-memory-utilization", "0.8"],
     "give --gpu-memory-utilization or --mem-fraction-static, not both"),
])
def test_engine_spelling_with_another_engine_is_refused(args, message, capsys, monkeypatch):
    code, out, err = run(["estimate", "llama-3.1-8b", "--gpu", "H100", *args], capsys, monkeypatch)
    assert code == 2 and out == "" and message in err


def test_explain_log_takes_sglangs_spelling_for_an_sglang_log(capsys, monkeypatch):
    log = str(LOGS / "sglang_logs" / "qwen3-30b-a3b-sglang18263.log")
    code, out, err = run(["explain-log", log, "--mem-fraction-static", "0.85", "-f", "json"], capsys, monkeypatch)
    assert code == 0, err
    assert json.loads(out)["settings"]["mem_fraction_static"] == 0.85
    code, _, err = run(["explain-log", str(LOGS / "vllm_logs" / "qwen3-14b-lmcache1739.log"),
                        "--mem-fraction-static", "0.85"], capsys, monkeypatch)
    assert code == 2 and "add --engine sglang" in err


def test_sweep_takes_the_same_flags(capsys, monkeypatch):
    pytest.importorskip("pandas")
    code, out, err = run(["sweep", "-m", "llama-3.1-8b", "--gpu", "H100", "--context", "8k", "--engine", "sglang",
                          "--mem-fraction-static", "0.8", "-f", "json"], capsys, monkeypatch)
    assert code == 0, err
    assert 0 < json.loads(out)[0]["kv_budget_bytes"] < 0.8 * 80 * GiB
