"""Fuzz: deployment YAML, vllm serve command lines and startup logs.

Contract: a correct result, or a KvplanError rendered as one line with exit 2; never a traceback.
"""

import contextlib
import io
from pathlib import Path

import yaml
from fuzzing import count
from hypothesis import given
from hypothesis import strategies as st

from kvplan.cli import main
from kvplan.errors import KvplanError
from kvplan.logs.startup import parse_startup_log
from kvplan.deploy.vllm_args import parse_vllm_command

REPO = Path(__file__).resolve().parents[1]
LOG_LINES = [line for p in sorted((REPO / "tests" / "data").rglob("*.log")) for line in p.read_text().splitlines()]


def run_cli(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


scalars = st.one_of(st.integers(-3, 1 << 40), st.floats(allow_nan=True), st.booleans(), st.none(),
                    st.text(max_size=8), st.sampled_from(["8k", "H100", "fp8", "llama-3.1-8b", "10%", "2GiB", "-1"]))
FIELDS = ["model", "gpu", "tp", "pp", "dtype", "kv_dtype", "max_model_len", "gpu_memory_utilization", "block_size",
          "engine", "vllm_args", "requirements", "name", "modle", "kv_cache_memory", "context"]
REQS = ["must_fit", "headroom", "min_concurrent_users", "min_context_tokens", "max_kv_budget_fraction", "min_users"]
requirements = st.dictionaries(st.sampled_from(REQS), st.one_of(scalars, st.dictionaries(
    st.sampled_from(["users", "context_tokens"]), scalars, max_size=2)), max_size=3)
entries = st.dictionaries(st.sampled_from(FIELDS), st.one_of(scalars, requirements), max_size=6)
documents = st.one_of(
    st.builds(lambda e: {"version": 1, "deployments": e}, st.lists(entries, max_size=3)),
    entries, st.lists(entries, max_size=2), scalars,
)


@given(documents)
def test_deployment_yaml_documents(tmp_path_factory, doc):
    count("deployment YAML")
    path = tmp_path_factory.mktemp("fuzz") / "deploy.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _, err = run_cli(["check", str(path), "--format", "json"])
    assert code in (0, 1, 2), err
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, err


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_deployment_yaml_raw_text(tmp_path_factory, text):
    count("deployment YAML")
    path = tmp_path_factory.mktemp("fuzz") / "deploy.yaml"
    path.write_text(text)
    code, _, err = run_cli(["check", str(path)])
    assert code in (0, 1, 2), err
    if code == 2:
        assert err.count("\n") == 1 and "Traceback" not in err, err


serve_tokens = st.lists(st.one_of(
    st.sampled_from(["vllm", "serve", "--tensor-parallel-size", "--tp", "--max-model-len", "--gpu-memory-utilization",
                     "--kv-cache-dtype", "--block-size", "--max-num-seqs", "--kv-cache-memory-bytes", "--dtype",
                     "--quantization", "--model", "\\\n", "=", "'", '"', "$HOME", "--pipeline-parallel-size",
                     "python", "-m", "vllm.entrypoints.openai.api_server", "&&", ";", "|"]),
    st.text(max_size=6), st.integers(-5, 1 << 33).map(str)), max_size=14)


@given(serve_tokens)
def test_vllm_serve_command_lines(tokens):
    count("vllm serve command lines")
    try:
        parsed = parse_vllm_command(" ".join(tokens))
    except KvplanError as exc:
        assert "\n" not in str(exc)
        return
    parsed.estimate_flags()
    parsed.notes()


@given(st.lists(st.one_of(st.sampled_from(LOG_LINES), st.text(max_size=60)), max_size=25))
def test_startup_logs(lines):
    count("startup logs")
    try:
        parse_startup_log("\n".join(lines))
    except KvplanError as exc:
        assert "\n" not in str(exc)


@given(st.one_of(st.text(max_size=20), st.builds(lambda k, a, b: f"{k}:{a}:{b}",
                                                 st.sampled_from(["uniform", "lognormal", "exponential", "x"]),
                                                 st.text("0123456789.-e", max_size=6), st.text("0123456789.-e", max_size=6))))
def test_workload_distribution_specs(text):
    import random

    from kvplan.simulation.workload import Distribution

    count("workload specs")
    try:
        dist = Distribution.parse(text, "--prompt-len")
    except KvplanError as exc:
        assert "\n" not in str(exc)
        return
    value = dist.sample(random.Random(0))
    assert isinstance(value, int) and value >= 1


trace_values = st.one_of(st.integers(-3, 1 << 41), st.floats(allow_nan=True), st.booleans(), st.none(),
                         st.text(max_size=4), st.lists(st.integers(-2, 1 << 41), max_size=4))
trace_objects = st.dictionaries(st.sampled_from(["prompt", "prompt_len", "output_len", "arrival", "prefix_group",
                                                 "prefix_len", "n", "id", "promt_len"]), trace_values, max_size=6)


@given(st.lists(st.one_of(trace_objects.map(lambda d: __import__("json").dumps(d)), st.text(max_size=30)),
                min_size=1, max_size=6))
def test_trace_files(tmp_path_factory, lines):
    from kvplan.simulation.trace import TraceWorkload

    count("trace files")
    path = tmp_path_factory.mktemp("trace") / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    try:
        items = list(TraceWorkload(path))
    except KvplanError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert all(item.output_len >= 1 for item in items)
