"""The JSON every command emits has exactly the keys its doc lists: docs/*.md mark each key table with
`<!-- json-keys: NAME -->`, and this test reads those tables (the docs are the one source)."""

import json
import re
from pathlib import Path

import pytest

from kvplan.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LOGS = ROOT / "tests" / "data"


def doc_rows(name: str) -> list[list[str]]:
    """The cells of the table that follows `<!-- json-keys: NAME -->` in docs/ (exactly one such marker)."""
    marker = f"<!-- json-keys: {name} -->"
    found = [p for p in sorted(DOCS.glob("*.md")) if marker in p.read_text()]
    assert len(found) == 1, f"{marker} in {found}"
    lines = found[0].read_text().split(marker, 1)[1].lstrip("\n").splitlines()
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert len(table) > 2, f"{marker}: no table after it"
    return table[2:]  # header and separator rows


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", cell))


def documented(name: str) -> set[str]:
    return set().union(*(_names(row[0]) for row in doc_rows(name)))


def run_json(args, capsys):
    code = main(args + ["--format", "json"])
    out = capsys.readouterr().out
    assert code in (0, 1), out
    return json.loads(out)


def test_the_parser_reads_what_the_docs_say():
    assert {"kv_bytes_per_token", "engine_report", "weights_bytes_per_gpu", "weights_basis"} <= documented("estimate")
    assert documented("simulate.queueing_delay") == {"mean", "p50", "p90", "p99", "max"}


@pytest.mark.parametrize("args", [
    ["estimate", "llama-3.1-8b", "--gpu", "H100", "--context", "8k", "--batch", "4"],
    ["estimate", "gemma-2-9b", "--gpu", "L40S", "--engine", "vllm"],  # engine_report filled in
    ["estimate", "--layers", "80", "--kv-heads", "8", "--head-dim", "128", "--context", "4096"],  # no GPU, no budget
])
def test_estimate_keys(args, capsys):
    d = run_json(args, capsys)
    assert set(d) == documented("estimate")
    for row in d["contexts"]:
        assert set(row) == documented("estimate.contexts")
    for term in d["overhead"]:
        assert set(term) == documented("estimate.overhead")


def test_check_keys(capsys):
    d = run_json(["check", str(ROOT / "examples" / "passing.yaml"), str(ROOT / "examples" / "failing.yaml")], capsys)
    assert set(d) == documented("check")
    assert set(d["summary"]) == documented("check.summary")
    numbers = {_names(row[0]).pop(): _names(row[1]) for row in doc_rows("check.numbers")}
    seen = set()
    for dep in d["deployments"]:
        assert set(dep) == documented("check.deployments")
        for rule in dep["rules"]:
            assert set(rule) == documented("check.rules")
            assert set(rule["numbers"]) == numbers[rule["rule"]], rule["rule"]
            seen.add(rule["rule"])
    assert len(seen) >= 5  # the examples exercise most rules


@pytest.mark.parametrize("extra", [[], ["--no-contiguous"]])
def test_simulate_keys(extra, capsys):
    d = run_json(["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096", "--requests", "20",
                  "--prompt-len", "100", "--output-len", "20", *extra], capsys)
    assert set(d) == documented("simulate")
    assert set(d["queueing_delay"]) == documented("simulate.queueing_delay")
    if d["contiguous"] is not None:
        assert set(d["contiguous"]) == documented("simulate.contiguous")
        assert set(d["contiguous"]["queueing_delay"]) == documented("simulate.queueing_delay")
    else:
        assert extra == ["--no-contiguous"]


def test_sweep_keys(capsys):
    records = run_json(["sweep", "-m", "llama-3.1-8b,qwen3-32b", "--gpu", "H100,L4", "--context", "4k,64k"], capsys)
    assert len(records) == 8
    for r in records:
        assert set(r) == documented("sweep")
    no_budget = [r for r in records if r["kv_budget_bytes"] is None]
    assert no_budget and all(r["gpu"] == "L4" and r["model"] == "qwen3-32b" and not r["fits"] for r in no_budget)


def test_explain_log_keys(capsys):
    d = run_json(["explain-log", str(LOGS / "vllm_logs" / "qwen3-14b-lmcache1739.log")], capsys)
    assert set(d) == documented("explain-log")
    assert d["rows"] and all(set(r) == documented("explain-log.rows") for r in d["rows"])


def test_models_keys(capsys):
    rows = run_json(["models"], capsys)
    assert len(rows) >= 25 and all(set(r) == documented("models") for r in rows)


def test_profile_keys(tmp_path, capsys):
    """A CPU profile with the contiguous rerun: the document, its run summaries and the measured keys a CPU has."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls only lose from intra-op threads
    try:
        d = run_json(["profile", str(ROOT / "examples" / "tiny-llama"), "--device", "cpu", "--kv-cache-memory", "64KiB",
                      "--max-num-batched-tokens", "64", "--max-num-seqs", "8", "--max-model-len", "32", "--requests", "4",
                      "--prompt-len", "8", "--output-len", "4", "--compare", "contiguous"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert set(d) == documented("profile")
    contiguous_only = {"predicted_max_concurrent_users", "simulated_max_concurrent_users"}
    assert set(d["run"]) == documented("profile.run") - contiguous_only
    assert set(d["contiguous"]) == documented("profile.run")
    cuda_only = set().union(*(_names(row[0]) for row in doc_rows("profile.measured") if "CUDA only" in row[1]))
    assert cuda_only and set(d["measured"]) == documented("profile.measured") - cuda_only
    assert set(d["measured_basis"]) == set(d["measured"])
