"""Hostile inputs, second pass (issue 13 re-checked as an attacker): names that carry terminal escapes,
the system refusing a path or a write, environments huggingface_hub cannot start in, and outputs that
are not plain files. Each ends as one line with exit 2 (or a correct answer), nothing written elsewhere."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvplan.cli import main
from kvplan.inputs import printable

REPO = Path(__file__).resolve().parents[1]
PASSING = REPO / "examples" / "passing.yaml"
LOG = REPO / "tests" / "data" / "vllm_logs" / "llama-3.1-8b-v0-20k-vllm10517.log"
ESC = "\x1b[31mRED\x1b]0;title\x07"
# What a terminal acts on: C0/C1 controls, DEL, line separators, bidi overrides and isolates.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def fails(capsys, *args) -> str:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out[-500:], err)
    assert err.startswith("kvplan: error: ") and err.count("\n") == 1, err
    assert not RAW_CONTROL.search(err), err
    return err


def cli(args: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """kvplan in a fresh interpreter: for what happens at import, and for stdout as a file descriptor."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full.pop("KVPLAN_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "kvplan", *args], env=full, capture_output=True, text=True,
                          timeout=60, **kwargs)


# --- terminal escapes in anything a message echoes ------------------------------------------------------

def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("a\x1b[31m\nb\u202ec\x9bd\x7f\t") == "a\\x1b[31m\\nb\\u202ec\\x9bd\\x7f\\t"
    assert printable("ünïcödé/日本/ｘ") == "ünïcödé/日本/ｘ"  # printable text stays as it is


@pytest.mark.parametrize("argv", [
    ["estimate", "{dir}/model" + ESC, "--gpu", "H100"],  # a model directory without config.json
    ["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", "{dir}/t" + ESC + ".jsonl"],  # missing trace
    ["explain-log", "{dir}/fifo" + ESC],  # a FIFO
    ["check", "{dir}/bad" + ESC + ".yaml"],  # malformed YAML, named by its file
    ["check", str(PASSING), "-f", "json", "-o", "{dir}/file/" + ESC + "/o.json"],  # a parent that is a file
    ["check", "{dir}/key.yaml"],  # an unknown key that is an escape sequence
    ["explain-log", "{dir}/fifo\nkvplan: error: forged line"],  # inputs.py escapes a newline too
])
def test_messages_escape_control_characters_in_names(tmp_path, capsys, argv):
    (tmp_path / ("model" + ESC)).mkdir()
    os.mkfifo(tmp_path / ("fifo" + ESC))
    (tmp_path / ("bad" + ESC + ".yaml")).write_text("model: [\n")
    (tmp_path / "file").write_text("x")
    (tmp_path / "key.yaml").write_text('model: llama-3.1-8b\ngpu: H100\n"\\e[2J\\e[31mkey": 1\n')
    os.mkfifo(tmp_path / "fifo\nkvplan: error: forged line")
    err = fails(capsys, *[a.replace("{dir}", str(tmp_path)) for a in argv])
    assert "\\x1b" in err or "\\n" in err


def test_a_hub_endpoint_with_escapes_is_escaped(capsys, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/" + ESC)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert "\\x1b[31m" in fails(capsys, "estimate", "acme/x", "--online")


# --- the system refusing a path or a write ----------------------------------------------------------------

def test_a_name_too_long_for_the_file_system(tmp_path, capsys):
    assert "File name too long" in fails(capsys, "estimate", tmp_path / ("a" * 300), "--gpu", "H100")


def test_a_symlink_loop_is_one_line(tmp_path, capsys):
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    assert "Too many levels of symbolic links" in fails(capsys, "check", tmp_path / "a.yaml")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_one_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "kvplan", "gpus"], env=env, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60)
    assert done.returncode == 2 and done.stderr == "kvplan: error: writing the output: No space left on device\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_plot_written_through_to_a_full_device_is_one_line(capsys):
    pytest.importorskip("matplotlib")
    err = fails(capsys, "simulate", "llama-3.1-8b", "--gpu", "H100", "--requests", "3", "--plot", "/dev/full")
    assert "/dev/full: cannot write (No space left on device)" in err


def test_a_stale_temp_file_with_an_absurd_pid_is_left_alone(tmp_path, capsys):
    odd = tmp_path / (".r.json." + "9" * 200 + ".x.kvplan.tmp")
    odd.write_text("x")
    assert main(["check", str(PASSING), "-f", "json", "-o", str(tmp_path / "r.json")]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text()) and odd.exists()


# --- output targets ---------------------------------------------------------------------------------------

def test_output_dash_is_standard_output(tmp_path):
    done = cli(["check", str(PASSING), "-f", "json", "-o", "-"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [
    ["simulate", "llama-3.1-8b", "--gpu", "H100", "--requests", "3", "--plot", "{dir}/blocks.json"],
    ["sweep", "-m", "qwen3-8b", "--gpu", "H100", "--context", "4k", "--plot", "{dir}/users.txt"],
    ["sweep", "-m", "qwen3-8b", "--gpu", "H100", "--context", "4k", "--plot", "-"],
])
def test_a_plot_format_matplotlib_cannot_write_is_refused_before_the_run(tmp_path, capsys, argv):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pandas")
    err = fails(capsys, *[a.replace("{dir}", str(tmp_path)) for a in argv])
    assert "cannot draw a plot as ." in err or "give a path, not standard output" in err
    assert not list(tmp_path.iterdir())


# --- environments ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("env,needle", [
    ({"HF_HUB_ETAG_TIMEOUT": "x"}, "huggingface_hub cannot start with this environment"),
    ({"HF_HUB_DOWNLOAD_TIMEOUT": "nan"}, "HF_HUB_DOWNLOAD_TIMEOUT='nan' must be a positive number of seconds"),
    ({"HF_HOME": "/dev/null"}, "hub: cannot read the HF token at /dev/null/token"),
])
def test_an_environment_huggingface_hub_cannot_start_in(tmp_path, env, needle):
    pytest.importorskip("huggingface_hub")
    done = cli(["estimate", "acme/x", "--online"], {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                                                    "HF_ENDPOINT": "http://127.0.0.1:9",
                                                    "HF_HUB_CACHE": str(tmp_path / "hub"), **env})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert needle in done.stderr


@pytest.mark.parametrize("columns", ["0", "-5", "x"])
def test_odd_columns_still_render(columns):
    done = cli(["models"], {"COLUMNS": columns})
    assert done.returncode == 0 and "deepseek-v2-lite" in done.stdout, done.stderr


# --- names and numbers ----------------------------------------------------------------------------------

def test_repo_ids_are_ascii():
    from kvplan.model.hub.names import valid_repo_id

    assert valid_repo_id("acme/x_y.z-1")
    assert not any(valid_repo_id(r) for r in ["acme/xｘx", "ａｃｍｅ/x", "acme/x٣x", "acme/x．．x"])


@pytest.mark.parametrize("argv", [
    ["explain-log", str(LOG), "--engine-version", "0." + "9" * 5000],
    ["estimate", "--gpu", "H100", "--engine", "vllm@0." + "9" * 5000],
])
def test_release_numbers_of_thousands_of_digits(capsys, argv):
    assert "give a vLLM release such as" in fails(capsys, *argv)


def test_a_symlink_loop_in_the_hf_cache_refuses_the_write(tmp_path):
    from kvplan.errors import HubError
    from kvplan.model.hub.cache import commit_snapshot

    repo = tmp_path / "models--acme--x"
    repo.mkdir()
    (repo / "blobs").symlink_to(repo / "blobs")
    with pytest.raises(HubError, match="does not resolve"):
        commit_snapshot(tmp_path, "acme/x", "main", "a" * 40, {"config.json": (None, b"{}")}, {}, "http://h")


# --- traces ---------------------------------------------------------------------------------------------

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
BURSTGPT = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


@pytest.mark.parametrize("text,needle", [
    (AZURE + '"2023-11-16 18:15:46",' + '"' + "9" * 200_000 + '",5\n', "t.csv:2: not a CSV row kvplan can read"),
    (BURSTGPT + '1,"' + "x" * 200_000 + '",5,5,10,Conversation log\n', "t.csv:2: not a CSV row kvplan can read"),
    ('"' + "x" * 200_000 + '",TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3,4\n', "t.csv:1: not a trace kvplan reads"),
])
def test_a_csv_field_over_the_csv_module_limit(tmp_path, capsys, text, needle):
    trace = tmp_path / "t.csv"
    trace.write_text(text)
    assert needle in fails(capsys, "simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", trace)


@pytest.mark.parametrize("flags", ["-tp " + "9" * 5000, "--max-model-len " + "9" * 400, "--max-num-seqs 1e400"])
def test_serve_command_integers_of_hundreds_of_digits(tmp_path, capsys, flags):
    script = tmp_path / "serve.sh"
    script.write_text(f"vllm serve llama-3.1-8b {flags}\n")
    for argv in (["--from", script], ["--vllm-args", f"vllm serve llama-3.1-8b {flags}"]):
        err = fails(capsys, "estimate", *argv, "--gpu", "H100")
        assert "is too large for an integer setting" in err or "cannot read" in err


def test_a_serve_script_is_read_never_run(tmp_path, capsys):
    script = tmp_path / "serve.sh"
    script.write_text(f"touch {tmp_path}/ran\nvllm serve $(touch {tmp_path}/ran2) `touch {tmp_path}/ran3` llama-3.1-8b\n")
    main(["estimate", "--from", str(script), "--gpu", "H100"])
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.sh"]


# --- reports on stdout ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_reports_show_names_escaped(tmp_path, capsys, fmt):
    deployment = tmp_path / "d.yaml"
    deployment.write_text('name: "x\\n| forged | row |\\e[31mRED"\nmodel: llama-3.1-8b\ngpu: H100\n')
    model = tmp_path / ("m" + ESC)
    model.mkdir()
    (model / "config.json").write_text((REPO / "examples" / "tiny-llama" / "config.json").read_text())
    main(["check", str(deployment), "-f", fmt])
    main(["estimate", str(model), "--gpu", "H100", "-f", fmt])
    out = capsys.readouterr().out
    assert "x\\n" in out and "\\x1b[31m" in out
    assert not RAW_CONTROL.search(out.replace("\n", ""))
    assert "\n| forged" not in out


def test_junit_stays_well_formed_xml_with_control_characters_in_names(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    deployment = tmp_path / "d.yaml"
    deployment.write_text('name: "x\\e[31m\\x00\\x0b"\nmodel: llama-3.1-8b\ngpu: H100\n')
    assert main(["check", str(deployment), "-f", "junit", "-o", str(tmp_path / "r.xml")]) == 0, capsys.readouterr()
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("name").endswith("x\\x1b[31m\\x00")  # YAML strips the trailing \x0b as a space


def test_github_annotations_carry_no_control_characters(tmp_path, capsys):
    failing = (REPO / "examples" / "failing.yaml").read_text()
    deployment = tmp_path / "d.yaml"
    deployment.write_text(failing.replace("name: chat-8b", 'name: "chat\\e[31m\\n::warning::forged"'))
    assert main(["check", str(deployment), "-f", "github"]) == 1
    out = capsys.readouterr().out
    assert "chat\\x1b[31m%0A%3A%3Awarning%3A%3Aforged" in out
    assert not RAW_CONTROL.search(out.replace("\n", "")) and "\n::warning" not in out
