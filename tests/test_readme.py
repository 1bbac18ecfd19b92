"""The README as a user follows it: every example that needs no GPU or network runs as written.

The README's ```bash blocks are parsed into commands (`\\` continuations joined, `# comments` cut,
`a && b` split); each `kvplan ...` command runs in a scratch directory that sees the repository's
examples/, and must exit 0. The commands that cannot run here are listed in SKIPPED, with why.
The sample output block must be exactly what `kvplan estimate` prints at 100 columns.
"""

import re
import shlex
from pathlib import Path

import pytest

from kvplan.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

OUTPUTS = ("-o", "--output", "--report", "--plot")  # flags naming files a command writes
SKIPPED = {
    "python3 -m venv .venv": "creates a virtual environment (the test suite already runs in one)",
    ".venv/bin/pip install .": "installs packages from the network",
    "scripts/test": "it is this test suite",
    "kvplan profile llama-3.1-8b --random-weights": "needs a CUDA GPU (without one, profile asks for a budget)",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def commands() -> list[str]:
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out += [part.strip() for part in line.split("&&")]
    return [" ".join(c.split()) for c in out]


def as_kvplan(command: str) -> list[str] | None:
    words = shlex.split(command)
    return words[1:] if words and words[0] in ("kvplan", ".venv/bin/kvplan") else None


def test_every_command_runs_or_is_skipped_for_a_stated_reason():
    found = commands()
    assert len(found) >= 15 and set(SKIPPED) <= set(found), "SKIPPED names a command the README lacks"
    for command in found:
        assert as_kvplan(command) is not None or command in SKIPPED, f"README command neither run nor skipped: {command}"


@pytest.mark.parametrize("command", [c for c in commands() if as_kvplan(c) is not None and c not in SKIPPED],
                         ids=lambda c: c[:70])
def test_readme_example_runs(command, tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    code = main(as_kvplan(command))
    out, err = capsys.readouterr()
    assert code == 0, f"{command}: exit {code}: {err}"
    assert out or list(tmp_path.glob("*.csv")), f"{command}: printed and wrote nothing"


def test_named_files_exist():
    for path in sorted(set(re.findall(r"\b(examples/[\w./-]+)", README))):
        assert (ROOT / path).exists(), f"README names {path}, which is not in the repository"


def test_sample_output_is_what_estimate_prints(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    sample = blocks("text")
    assert len(sample) == 1
    assert main(["estimate"]) == 0
    printed = "\n".join(line.rstrip() for line in capsys.readouterr().out.splitlines()) + "\n"
    assert sample[0] == printed


def test_help_examples_name_files_that_exist(capsys):
    """The examples in --help point at the same real files."""
    for command in ("", "estimate", "simulate", "profile", "check", "sweep", "explain-log", "gpus"):
        main([*command.split(), "--help"])
        text = capsys.readouterr().out
        for example in re.findall(r"^\s*(kvplan .*)$", text, flags=re.M):
            words = shlex.split(example.split(" #")[0])
            for before, word in zip(["kvplan", *words], words):
                if re.search(r"^\.{0,2}/|/$|^(examples|tests)/|\.(log|sh|json|jsonl|yaml)$", word) and before not in OUTPUTS:
                    assert (ROOT / word).exists(), f"kvplan {command} --help: {example!r} names {word}"
