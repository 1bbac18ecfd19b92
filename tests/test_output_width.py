"""Every command's table at 80 and 120 columns (and 40, the block layout), as a terminal and not: no
identifier or number is cut or split across lines, no word of a header is split, no line is wider
than the width. Checked by parsing the output against the command's own JSON (issue 19.1)."""

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from rich.cells import cell_len

from kvplan.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LOGS = ROOT / "tests" / "data"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NUMBER = re.compile(r"\d[\d,.]*\d|\d")
BOX = "┏┓┗┛┃━┳┻╋┡┩╇│─┌┐└┘├┤┼┬┴"

MODELS = ["models"]
SWEEP = ["sweep", "-m", "mistral-7b-instruct-v0.3,qwen3-next-80b-a3b,qwen3-32b", "--gpu", "H100,A100-80GB,L4",
         "--tp", "1,2", "--kv-dtype", "auto,fp8", "--context", "4k,1000000", "--limit", "0"]
CHECK = ["check", str(EXAMPLES / "passing.yaml"), str(EXAMPLES / "failing.yaml")]
ESTIMATE = ["estimate", "gemma-3-27b", "--gpu", "A100-80GB", "--engine", "vllm", "--context", "32k"]
SIMULATE = ["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096", "--requests", "300",
            "--prompt-len", "100", "--output-len", "50"]
EXPLAIN = ["explain-log", str(LOGS / "sglang_logs" / "qwen3-235b-a22b-fp8-tp4-vllm21348.log")]
COMMANDS = {"models": MODELS, "sweep": SWEEP, "check": CHECK, "estimate": ESTIMATE, "simulate": SIMULATE,
            "explain-log": EXPLAIN}


def run(args, capsys, monkeypatch, columns: int | None, terminal: bool) -> str:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("TTY_COMPATIBLE", "1" if terminal else "0")  # rich's switch for "stdout is a terminal"
    code = main(args)
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return ANSI.sub("", out)


def json_of(args, capsys, monkeypatch) -> object:
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    main(args + ["--format", "json"])
    return json.loads(capsys.readouterr().out)


def identifiers(name: str, data) -> set[str]:
    """Names a user copies, from the command's JSON: each must appear whole on one line."""
    if name == "models":
        return {r["name"] for r in data}
    if name == "sweep":
        return {r["model"] for r in data} | {r["gpu"] for r in data}
    if name == "check":
        return ({d["name"] for d in data["deployments"]} | {d["model"] for d in data["deployments"]}
                | {d["gpu"] for d in data["deployments"]} | {r["rule"] for d in data["deployments"] for r in d["rules"]})
    if name == "explain-log":  # the figures themselves: numbers with their ranges
        return {r["logged"] for r in data["rows"]} | {r["predicted"] for r in data["rows"]}
    return {data["model"], data["gpu"]}


def numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


def header_words(text: str) -> set[str]:
    """Words in the header rows of every box table (between ┃ characters)."""
    words = set()
    for line in text.splitlines():
        if line.startswith("┃"):
            for cell in line.strip("┃").split("┃"):
                words.update(cell.split())
    return words


@pytest.fixture(scope="module")
def reference():
    """Each command's table unwrapped (not a terminal, no COLUMNS) and its JSON, computed once."""
    mp = pytest.MonkeyPatch()
    out = {}
    try:
        for name, args in COMMANDS.items():
            for env, value in (("COLUMNS", None), ("TTY_COMPATIBLE", "0")):
                mp.delenv(env, raising=False) if value is None else mp.setenv(env, value)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                main(args)
            table = buf.getvalue()
            mp.delenv("TTY_COMPATIBLE", raising=False)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                main(args + ["--format", "json"])
            out[name] = (table, json.loads(buf.getvalue()))
    finally:
        mp.undo()
    return out


def test_unwrapped_when_not_a_terminal(reference):
    """A pipe or a CI log without COLUMNS: every row on one line, every identifier whole."""
    table, data = reference["models"]
    lines = table.splitlines()
    for row in data:  # the name, its layout and its KV bytes per token share one line
        assert any(row["name"] in line and row["layout"] in line and f"{row['kv_bytes_per_token_bf16']:,}" in line
                   for line in lines), row["name"]
    assert max(cell_len(line) for line in lines) > 120  # nothing was wrapped to a default 80
    table, data = reference["sweep"]
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == len(data)  # one line per configuration


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
@pytest.mark.parametrize("columns", [80, 120, 40])
@pytest.mark.parametrize("name", list(COMMANDS))
def test_nothing_cut_or_split(name, columns, terminal, reference, capsys, monkeypatch):
    unwrapped, data = reference[name]
    text = run(COMMANDS[name], capsys, monkeypatch, columns, terminal)
    lines = text.splitlines()
    assert "…" not in text  # rich's ellipsis: something was truncated
    too_wide = [line for line in lines if cell_len(line) > columns]
    assert not too_wide, too_wide[:3]
    for ident in identifiers(name, data):
        assert any(ident in line for line in lines), f"{ident!r} is not whole on any line"
    # a number cut in two would show pieces that are not numbers of the unwrapped output
    pieces = numbers(text) - numbers(unwrapped) - {str(columns)}
    assert not pieces, f"split numbers: {sorted(pieces)[:10]}"
    # header words whole: every word in a header row is a word of the unwrapped headers
    broken = header_words(text) - header_words(unwrapped)
    assert not broken, f"header words split: {sorted(broken)}"


def test_narrow_table_hoists_and_drops_columns_and_says_so(capsys, monkeypatch):
    args = ["sweep", "-m", "llama-3.1-8b,qwen3-32b", "--gpu", "H100,A100-80GB,L4", "--context", "4k,32k,128k"]
    text = run(args, capsys, monkeypatch, 80, terminal=True)
    assert "in every row: tp 1, pp 1, weights bf16, KV bf16" in text  # the same in every row: said once
    assert "left out at 80 columns: weights / GPU" in text
    assert text.count("llama-3.1-8b") == 9 and "H10…" not in text and "lla…" not in text
    wide = run(args, capsys, monkeypatch, 200, terminal=True)
    assert "left out" not in wide and "in every row" not in wide


def test_block_layout_keeps_values_whole(capsys, monkeypatch):
    """At 40 columns the check rules become blocks: `header: value` lines, values whole."""
    text = run(CHECK, capsys, monkeypatch, 40, terminal=False)
    assert "  rule: min_concurrent_users" in text and "  result: FAIL" in text
    assert "\n  rule: max_model_len_supported\n" in text


@pytest.mark.parametrize("fmt", ["table", "csv", "markdown"])
def test_estimate_and_check_renderers_import_nothing_heavy(fmt):
    """The renderers (rich, csv, markdown) keep `kvplan estimate`/`check` free of pandas, numpy and torch."""
    import subprocess
    import sys

    code = ("import sys\nfrom kvplan.cli import main\n"
            f"assert main(['estimate', 'gemma-3-27b', '--gpu', 'H100', '--format', '{fmt}']) == 0\n"
            f"main(['check', {str(EXAMPLES / 'passing.yaml')!r}, '--format', "
            f"'{'markdown' if fmt == 'csv' else fmt}'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'pandas', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("HEAVY="), done.stdout[-300:]
