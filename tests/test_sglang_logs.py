"""SGLang start-up logs (tests/data/sglang_logs, each citing its source) read and replayed from their own figures."""

from pathlib import Path

import pytest

from kvplan.cli.options import load_model_from_flags
from kvplan.logs.explain import deployment_for_log, explain_log
from kvplan.logs.startup import parse_startup_log, read_startup_log

LOGS = Path(__file__).parent / "data" / "sglang_logs"


def explain(name):
    log = read_startup_log(str(LOGS / name))
    args = log.kvplan_args
    flags = {args[i].lstrip("-").replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
    loaded = load_model_from_flags(flags["model"])
    dep, mml = deployment_for_log(log, loaded.spec, flags, None, None)
    return log, {r.figure.split(" (")[0]: r for r in explain_log(log, loaded, dep, mml).rows}


@pytest.mark.parametrize("name,tokens,k_gib", [
    ("gemma-3-4b-sglpr4826.log", 834615, "54.12"),  # 34 layers x 4 heads x 256 x 2 B = 69,632 B of K per token
    ("qwen3-32b-tp4-sglpr22537.log", 2206208, "67.33"),  # 64 layers x 2 heads per rank x 128 x 2 B = 32,768 B
    ("qwen3-235b-a22b-fp8-tp4-vllm21348.log", 367404, "8.23"),
    ("qwen3-30b-a3b-sglang18263.log", 1669816, "76.44"),
])
def test_pool_sizes_follow_from_the_logged_tokens(name, tokens, k_gib):
    log, rows = explain(name)
    assert log.sglang["tokens"] == tokens
    assert rows["K size"].logged == rows["K size"].predicted == k_gib and rows["V size"].agrees


@pytest.mark.parametrize("name", ["gemma-3-4b-sglpr4826.log", "qwen3-32b-tp4-sglpr22537.log",
                                  "qwen3-30b-a3b-sglang18263.log"])
def test_mem_usage_is_the_weights_plus_loader_slack(name):
    """SGLang's "mem usage" is the free-memory drop while loading: the weights (with a vision tower) + <= 0.3 GiB."""
    _, rows = explain(name)
    weights = rows["weights per GPU"]
    assert weights.agrees and 0 <= float(weights.logged) - float(weights.predicted) <= 0.30


def test_mem_fraction_static_is_read_wherever_the_log_prints_it():
    wrapped = ("[2025-03-27 21:30:00] server_args=ServerArgs(model_path='m', mem_fraction_static=0.836, page_size=1, "
               "tp_size=1, bucket_tim\ne_to_first_token=None)\n")
    assert parse_startup_log(wrapped).settings["mem_fraction_static"] == 0.836
    debug = "self.server_args.mem_fraction_static 0.911\nLoad weight end. avail mem=230.20 GB, mem usage=56.98 GB.\n"
    log = parse_startup_log(debug)
    assert log.settings["mem_fraction_static"] == 0.911 and "mem_fraction_static" not in log.missing


def test_a_flag_given_is_not_reported_missing():
    log, _ = explain("gemma-3-4b-sglpr4826.log")
    assert "model" not in log.missing  # named by the log's header (--model)
