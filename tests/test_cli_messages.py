"""Messages that fit the situation: defaults named only when used, no silent defaults, help offers what runs."""

import re

import pytest
import typer

from kvplan.cli import app, main


def run(args, capsys, monkeypatch, columns=120):
    monkeypatch.setenv("COLUMNS", str(columns))
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def flat(text: str) -> str:
    return " ".join(text.split())


# --- the bundled default is announced only for what was defaulted -------------------------------

def test_bare_estimate_names_both_defaults(capsys, monkeypatch):
    code, out, _ = run(["estimate"], capsys, monkeypatch)
    assert code == 0 and "no model or GPU given: showing the bundled default llama-3.1-8b on one H100-SXM" in flat(out)


@pytest.mark.parametrize("gpu", [["--gpu", "L4"], ["--gpu-memory", "24GiB"]])
def test_a_gpu_without_a_model_is_not_called_no_gpu(gpu, capsys, monkeypatch):
    code, out, _ = run(["estimate", *gpu], capsys, monkeypatch)
    text = flat(out)
    assert code == 0 and "no model or GPU given" not in text and "H100" not in text
    assert "no model given: showing the bundled default llama-3.1-8b (pass MODEL)" in text


def test_a_model_without_a_gpu_gets_no_default_gpu(capsys, monkeypatch):
    code, out, _ = run(["estimate", "qwen3-8b"], capsys, monkeypatch)
    text = flat(out)
    assert code == 0 and "bundled default" not in text and "H100" not in text and "no GPU given" in text


# --- a vllm serve command must name the model ---------------------------------------------------

@pytest.mark.parametrize("command", ["vllm serve", "vllm serve --tensor-parallel-size 2 --max-model-len 8k"])
def test_vllm_args_without_a_model_is_refused(command, capsys, monkeypatch):
    code, out, err = run(["estimate", "--vllm-args", command, "--gpu", "H100"], capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err.strip() == ("kvplan: error: the `vllm serve` command names no model: give MODEL, or the model after "
                           "`vllm serve`")


def test_from_a_script_without_a_model_is_refused(tmp_path, capsys, monkeypatch):
    script = tmp_path / "serve.sh"
    script.write_text("#!/bin/sh\nexec vllm serve --max-model-len 4096\n")
    code, _, err = run(["estimate", "--from", str(script), "--gpu", "H100"], capsys, monkeypatch)
    assert code == 2 and "names no model" in err


def test_the_model_may_come_from_kvplans_command_line(capsys, monkeypatch):
    code, out, err = run(["estimate", "qwen3-8b", "--vllm-args", "vllm serve --max-model-len 8k", "--gpu", "H100",
                          "-f", "json"], capsys, monkeypatch)
    assert code == 0, err
    assert '"model": "qwen3-8b"' in out and '"max_model_len": 8000' in out and '"engine": "vllm"' in out  # vLLM: k = 1000


# --- help offers only what the command accepts ----------------------------------------------------

COMMANDS = typer.main.get_command(app).commands
# Flags named in a help text that are not the command's own: another tool's flag, labelled as such.
FOREIGN = {"--kv-cache-memory-bytes"}  # "vLLM --kv-cache-memory-bytes"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_only_the_commands_own_flags(name):
    cmd = COMMANDS[name]
    own = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    helps = [getattr(p, "help", None) or "" for p in cmd.params]
    if name != "gpus":  # `kvplan gpus` lists what --gpu of the other commands accepts
        helps.append(cmd.help or "")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", " ".join(helps)))
    assert named - own - FOREIGN == set()


def test_profile_takes_no_hub_clock_or_parallelism_flags(capsys, monkeypatch):
    for flag in ("--online", "--clock", "--tp", "--pp"):
        code, _, err = run(["profile", flag, "1"], capsys, monkeypatch)
        assert code == 2 and f"No such option: {flag}" in err


@pytest.mark.parametrize("name", sorted(n for n, c in COMMANDS.items() if any(p.name == "fmt" for p in c.params)))
def test_formats_in_help_are_exactly_the_accepted_ones(name, tmp_path, capsys, monkeypatch):
    fmt = next(p for p in COMMANDS[name].params if p.name == "fmt")
    vocabulary = ("table", "json", "csv", "markdown", "junit", "github", "parquet")
    offered = [f for f in vocabulary if re.search(rf"\b{f}\b", fmt.help)]
    for candidate in vocabulary:
        args = {"check": ["check", "examples/passing.yaml"], "explain-log": ["explain-log", "examples/vllm-startup.log"],
                "simulate": ["simulate", "--requests", "2"], "sweep": ["sweep", "--gpu", "L4", "--context", "1k"],
                "profile": ["profile", "--device", "cpu"]}.get(name, [name])
        if name == "profile" and candidate in offered:
            continue  # accepted formats run the engine; the refusal below is what matters here
        binary = ["-o", str(tmp_path / "grid.parquet")] if (name, candidate) == ("sweep", "parquet") else []
        code, _, err = run([*args, "--format", candidate, *binary], capsys, monkeypatch)
        if candidate in offered:
            assert code in (0, 1), f"{name} --format {candidate}: {err}"
        else:
            assert code == 2 and "--format" in err, f"{name} offers no {candidate} yet took it"
