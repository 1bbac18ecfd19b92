"""Fuzz: hostile inputs of issue 13 through the whole CLI: YAML alias graphs through mappings and
lists, deep and dense JSON in every JSON input, non-UTF-8 bytes in every text input, NaN / Infinity
/ huge numbers in every numeric field, a loopback Hub that answers like an attacker, and names that
carry control characters into messages and reports.

Contract: a correct result, or one `kvplan: error:` line with exit 2 (1 for a failed check); never
exit 70 or a traceback; no raw control character in any message; nothing written outside the HF
cache; no temp file left behind.
Each property runs a share of the profile's examples (fuzzing.share) since each runs a command.
"""

import contextlib
import io
import json
import os
import re
import struct
import tempfile
from pathlib import Path

import pytest
from fuzzing import count, share
from hypothesis import given
from hypothesis import strategies as st

from kvplan.cli import main
from kvplan.yamlnodes import MAX_NODES

REPO = Path(__file__).resolve().parents[1]
LOG = (REPO / "tests" / "data" / "vllm_logs" / "llama-3.1-8b-v0-20k-vllm10517.log").read_text()
CONFIG = {"model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
          "hidden_size": 256, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096,
          "head_dim": 32, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
HEADER = {"model.embed_tokens.weight": {"dtype": "BF16", "shape": [1000, 256], "data_offsets": [0, 512000]},
          "lm_head.weight": {"dtype": "BF16", "shape": [1000, 256], "data_offsets": [512000, 1024000]}}


def run_cli(args, env: dict | None = None):
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


# What a terminal acts on (kvplan.inputs.printable escapes it): C0/C1 controls, DEL, separators, bidi controls.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def assert_contract(code: int, err: str, allowed=(0, 1, 2)) -> None:
    assert code in allowed, (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    assert not RAW_CONTROL.search(err.replace("\n", "")), err
    if code == 2:
        assert err.startswith("kvplan: error: ") and err.count("\n") == 1, err


@contextlib.contextmanager
def scratch():
    with tempfile.TemporaryDirectory(prefix="kvplan-fuzz-") as tmp:
        yield Path(tmp)


def model_dir(root: Path, config: str | None = None, header: bytes | None = None, index: str | None = None) -> Path:
    d = root / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(config if config is not None else json.dumps(CONFIG))
    if header is not None:
        (d / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 1024000)
    if index is not None:
        (d / "model.safetensors.index.json").write_text(index)
    return d


# --- YAML alias graphs ------------------------------------------------------------------------------

@st.composite
def alias_graphs(draw):
    """A mapping of anchors a0..aN, each a mapping or list of `fanout` uses of the one before, and the
    number of nodes it expands to (a key is no node of its own, as in the walker)."""
    levels, fanout = draw(st.integers(1, 30)), draw(st.integers(1, 4))
    leaf = draw(st.sampled_from(["1", "x", "H100", "{}", "[]", "null"]))
    parts, size, total = [], 1, 1
    for i in range(levels):
        uses = [leaf if i == 0 else f"*a{i - 1}"] * fanout
        if draw(st.booleans()):
            value = "{" + ", ".join(f"k{j}: {u}" for j, u in enumerate(uses)) + "}"
        else:
            value = "[" + ", ".join(uses) + "]"
        size = 1 + fanout * size
        total += size
        parts.append(f"a{i}: &a{i} {value}")
    return "{" + ", ".join(parts) + "}", total


K8S = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\nspec:\n  template:\n    spec:\n      containers:\n"
       "        - name: vllm\n          image: vllm/vllm-openai\n          env: [{{name: A, value: {0}}}]\n")
PLACES = {
    "deployment": "model: {0}\ngpu: H100\n",
    "requirements": "deployments:\n  - model: llama-3.1-8b\n    gpu: H100\n    requirements: {0}\n",
    "compose": "services:\n  vllm:\n    image: vllm/vllm-openai\n    command: {0}\n",
    "kubernetes": K8S,
    "user config": "online: {0}\n",
}


@share(0.2)
@given(alias_graphs(), st.sampled_from(sorted(PLACES)))
def test_yaml_alias_graphs_are_counted_as_expanded(graph, place):
    count("YAML alias graphs")
    text, expanded = graph
    with scratch() as tmp:
        path = tmp / "file.yaml"
        path.write_text(PLACES[place].format(text))
        if place == "user config":
            code, _, err = run_cli(["estimate", "acme/not-cached"], {"KVPLAN_CONFIG": str(path), "HF_HUB_OFFLINE": "0",
                                                                      "TRANSFORMERS_OFFLINE": "0"})
        else:
            code, _, err = run_cli(["check", path, "--format", "json"])
    assert_contract(code, err)
    refused = "YAML nodes once aliases are expanded" in err
    if expanded > MAX_NODES:  # the placement adds a few nodes of its own, never removes any
        assert refused, (expanded, err)
    if expanded < MAX_NODES - 100:
        assert not refused, (expanded, err)


# --- deep and dense JSON in every JSON input ---------------------------------------------------------

@st.composite
def nested_json(draw):
    depth = draw(st.integers(1, 3000))
    pad = " " * draw(st.sampled_from([0, 3, 8, 12]))
    opener = draw(st.sampled_from(["[", '{"k":']))
    closer = "]" if opener == "[" else "}"
    return (opener + pad) * depth + "1" + closer * depth, depth


def _sidecar_snapshot(root: Path, value: str) -> dict:
    snap = root / "hub" / "models--acme--x" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(CONFIG))
    (root / "hub" / "models--acme--x" / "kvplan").mkdir()
    (root / "hub" / "models--acme--x" / "kvplan" / ("a" * 40 + ".json")).write_text(
        '{"format": "kvplan-safetensors-headers/1", "files": {"model.safetensors": {"header": {"w": ' + value + "}}}}")
    return {"HF_HUB_CACHE": str(root / "hub")}


JSON_INPUTS = {
    "config.json": lambda root, v: (["estimate", model_dir(root, config='{"model_type": ' + v + "}"), "--gpu", "H100"], {}),
    "safetensors header": lambda root, v: (["estimate", model_dir(root, header=('{"w": ' + v + "}").encode()),
                                            "--gpu", "H100"], {}),
    "safetensors index": lambda root, v: (["estimate", model_dir(root, index='{"weight_map": ' + v + "}"),
                                           "--gpu", "H100"], {}),
    "trace line": lambda root, v: (["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace",
                                    _write(root / "t.jsonl", '{"prompt": ' + v + ', "output_len": 1}\n')], {}),
    "Hub sidecar": lambda root, v: (["estimate", "acme/x", "--gpu", "H100"], _sidecar_snapshot(root, v)),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@share(0.2)
@given(nested_json(), st.sampled_from(sorted(JSON_INPUTS)))
def test_deep_and_dense_json_in_every_json_input(nested, where):
    count("deep JSON")
    value, depth = nested
    with scratch() as tmp:
        args, env = JSON_INPUTS[where](tmp, value)
        code, _, err = run_cli(args, env)
    assert_contract(code, err)
    if depth > 64:
        assert code == 2 and ("JSON nested deeper than 64 levels" in err or "one object or array per 8 bytes" in err), err


# --- non-UTF-8 bytes in every text input --------------------------------------------------------------

SERVE = "#!/bin/sh\nexport MODEL=meta-llama/Llama-3.1-8B\nvllm serve llama-3.1-8b --max-model-len 8192 \\\n  --tp 1\n"
TEXT_INPUTS = {  # name -> (text, build args from the file, strict UTF-8)
    "config.json": (json.dumps(CONFIG, indent=1), lambda p: ["estimate", p, "--gpu", "H100"], True),
    "deployment YAML": ((REPO / "examples" / "passing.yaml").read_text(), lambda p: ["check", p], True),
    "k8s manifest": ((REPO / "examples" / "k8s-deployment.yaml").read_text(), lambda p: ["check", p], True),
    "--from script": (SERVE, lambda p: ["estimate", "--from", p, "--gpu", "H100"], True),
    "trace": ('{"prompt_len": 100, "output_len": 10}\n' * 3, lambda p: ["simulate", "llama-3.1-8b", "--gpu", "H100",
                                                                      "--trace", p], True),
    "start-up log": (LOG, lambda p: ["explain-log", p], False),
}


@share(0.2)
@given(st.sampled_from(sorted(TEXT_INPUTS)), st.floats(0, 1), st.binary(min_size=1, max_size=6))
def test_non_utf8_bytes_in_every_text_input(kind, where, junk):
    count("non-UTF-8 bytes")
    text, args, strict = TEXT_INPUTS[kind]
    data = text.encode()
    at = int(where * len(data))
    data = data[:at] + junk + data[at:]
    with scratch() as tmp:
        path = tmp / ("config.json" if kind == "config.json" else "input")
        path.write_bytes(data)
        code, _, err = run_cli(args(path))
    assert_contract(code, err)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        if strict and kind != "trace":  # a trace reports a line broken before the bad byte first
            assert code == 2 and "not UTF-8 text" in err, err


# --- NaN, Infinity and huge numbers in every numeric field ------------------------------------------

NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "-0.0", "1e-400", "0", "-1",
           "9007199254740993", "18446744073709551616", "2.5", "4.0", "true", "null", '"8"', "[]", "{}"]
YAML_NUMBERS = [".nan", ".inf", "-.inf", "1e400", "1" + "0" * 400, "-1", "0", "0x10", "1_000", "0o17", "2.5",
                "true", "~", "'8'", "[]", "{}", "1e-400", "18446744073709551616"]


def _finite_output(out: str) -> None:
    """A successful run's JSON has no NaN or Infinity anywhere."""
    if out.strip().startswith(("{", "[")):
        json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the output"))


@share(0.2)
@given(st.sampled_from(sorted(k for k, v in CONFIG.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
                       + ["sliding_window", "num_local_experts", "num_experts_per_tok", "attention_chunk_size",
                          "max_window_layers", "kv_lora_rank", "sliding_window_pattern"]),
       st.sampled_from(NUMBERS))
def test_every_numeric_config_field(field, number):
    count("non-finite numbers")
    text = json.dumps({**CONFIG, field: "@@"}).replace('"@@"', number)
    with scratch() as tmp:
        code, out, err = run_cli(["estimate", model_dir(tmp, config=text), "--gpu", "H100", "--format", "json"])
    assert_contract(code, err)
    if code == 0:
        _finite_output(out)


@share(0.2)
@given(st.sampled_from(["begin", "end", "dim0", "dim1", "total_size"]), st.sampled_from(NUMBERS))
def test_every_numeric_safetensors_field(field, number):
    count("non-finite numbers")
    header = {k: dict(v) for k, v in HEADER.items()}
    entry = header["lm_head.weight"]
    slots = {"begin": ("data_offsets", 0), "end": ("data_offsets", 1), "dim0": ("shape", 0), "dim1": ("shape", 1)}
    with scratch() as tmp:
        if field == "total_size":
            d = model_dir(tmp, index='{"metadata": {"total_size": ' + number + '}, "weight_map": {}}')
        else:
            key, i = slots[field]
            entry[key] = list(entry[key])
            entry[key][i] = "@@"
            d = model_dir(tmp, header=json.dumps(header).replace('"@@"', number).encode())
        code, out, err = run_cli(["estimate", d, "--gpu", "H100", "--format", "json"])
    assert_contract(code, err)
    if code == 0:
        _finite_output(out)


@share(0.2)
@given(st.sampled_from(["prompt_len", "output_len", "arrival", "prefix_len", "n", "token"]), st.sampled_from(NUMBERS))
def test_every_numeric_trace_field(field, number):
    count("non-finite numbers")
    line = {"prompt_len": 100, "output_len": 10, "arrival": 0.5, "prefix_group": "g", "prefix_len": 10, "n": 1}
    if field == "token":
        line = {"prompt": [1, "@@", 3], "output_len": 10}
    else:
        line[field] = "@@"
    with scratch() as tmp:
        trace = _write(tmp / "t.jsonl", json.dumps(line).replace('"@@"', number) + "\n")
        code, out, err = run_cli(["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", trace, "--format", "json"])
    assert_contract(code, err)
    if code == 0:
        _finite_output(out)


@share(0.2)
@given(st.sampled_from(["tp", "pp", "max_model_len", "gpu_memory_utilization", "block_size", "kv_cache_memory",
                        "gpu_memory", "max_num_seqs", "max_num_batched_tokens", "weights", "overhead",
                        "activation_memory", "requirements.min_context_tokens", "requirements.max_kv_budget_fraction",
                        "requirements.headroom", "requirements.min_concurrent_users"]),
       st.sampled_from(YAML_NUMBERS))
def test_every_numeric_deployment_field(field, number):
    count("non-finite numbers")
    entry = {"name": "x", "model": "llama-3.1-8b", "gpu": "H100", "requirements": {"must_fit": True}}
    if field.startswith("requirements."):
        entry["requirements"][field.split(".")[1]] = "@@"
    else:
        entry[field] = "@@"
    if field == "gpu_memory":
        del entry["gpu"]
    with scratch() as tmp:
        path = _write(tmp / "d.yaml", json.dumps({"deployments": [entry]}).replace('"@@"', number))
        code, out, err = run_cli(["check", path, "--format", "json"])
    assert_contract(code, err)
    if code in (0, 1):
        _finite_output(out)


# --- a loopback Hub that answers like an attacker -----------------------------------------------------

HEADER_VALUES = ['"../../../../kvplan-evil"', '"../../kvplan-evil"', '"' + "a" * 64 + '"', "W/\"x\"", "", "-1",
                 "99999999999999999999999", "gzip", "br", "bytes 0-7/-5", "bytes 0-7/99999999999999999999",
                 "bytes */0", "\u00b2", "http://127.0.0.1:1/x", "/../../x", "RepoNotFound", "GatedRepo", "7"]
BODIES = [b"", b"\x00\xff", b"[]", b"null", b'{"sha": "' + b"a" * 40 + b'", "siblings": [{"rfilename": "../x"}]}',
          b'{"sha": "' + b"a" * 40 + b'", "siblings": [{"rfilename": "config.json", "size": -1}]}',
          b'{"sha": "../../x", "siblings": []}', b"[" * 3000 + b"]" * 3000, b'{"a": ' + b"9" * 5000 + b"}",
          b'{"weight_map": {"w": "../../../etc/passwd"}}', b'{"weight_map": {"w": ["x"]}}',
          struct.pack("<Q", 2**63), struct.pack("<Q", 64) + b"{" * 64,
          struct.pack("<Q", 40) + b'{"w": {"dtype": "F32", "data_offsets": [0, Infinity]}}']
ATTACKS = st.one_of(
    st.fixed_dictionaries({"status": st.sampled_from([301, 302, 400, 401, 403, 404, 416, 429, 500, 503])}),
    st.fixed_dictionaries({"body": st.one_of(st.sampled_from(BODIES), st.binary(max_size=64))}),
    st.fixed_dictionaries({"replace_headers": st.dictionaries(
        st.sampled_from(["ETag", "X-Linked-Etag", "Content-Length", "Content-Encoding", "Content-Range", "Location",
                         "X-Error-Code", "Retry-After", "RateLimit", "X-Linked-Size"]),
        st.sampled_from(HEADER_VALUES), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"endless": st.sampled_from([b"{", b'{"sha": "', b"\x00"])}),
    st.fixed_dictionaries({"redirect_loop": st.just(True)}),
    st.fixed_dictionaries({"truncate": st.just(True)}),
    st.fixed_dictionaries({"drop": st.just(True)}),
    st.fixed_dictionaries({"ignore_range": st.just(True)}),
)
TARGETS = ["^/api/models/", "/resolve/[^/]+/config.json$", "/resolve/[^/]+/model.safetensors.index.json$",
           "/resolve/[^/]+/model.*safetensors$", "^/cdn/"]


@pytest.fixture(scope="module")
def hostile_hub():
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    constants = pytest.importorskip("huggingface_hub.constants")
    from hub_server import TINY_LLAMA, HubServer, config_bytes, llama_tensors, nbytes, safetensors_bytes, sharded

    server = HubServer()
    tensors = llama_tensors()
    server.add_repo("acme/single", {"config.json": config_bytes(TINY_LLAMA), "model.safetensors": safetensors_bytes(tensors)})
    server.add_repo("acme/sharded", {"config.json": config_bytes(TINY_LLAMA), **sharded(tensors, 3)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(constants, "ENDPOINT", server.url)
        yield server, nbytes(tensors)
    server.stop()


@share(0.1)
@given(st.sampled_from(["acme/single", "acme/sharded"]), st.sampled_from(TARGETS), ATTACKS)
def test_a_malicious_hub(hostile_hub, repo, target, attack):
    from hub_server import Fault

    count("malicious Hub")
    server, weights_bytes = hostile_hub
    server.faults = [Fault(target, **attack)]
    with scratch() as tmp:
        cache = tmp / "cache" / "hub"
        env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
               "HF_HUB_DOWNLOAD_TIMEOUT": "0.5", "XDG_CONFIG_HOME": str(tmp / "xdg")}
        code, out, err = run_cli(["estimate", repo, "--online", "--format", "json"], env)
        assert_contract(code, err, allowed=(0, 2))
        outside = [p for p in tmp.rglob("*") if not (p.is_relative_to(cache) or cache.is_relative_to(p))]
        assert not outside, outside
        assert not [p for p in tmp.rglob("*") if ".tmp" in p.name], "temp file left behind"
        if code == 0:
            first = json.loads(out)
            assert isinstance(first["weights_bytes"], int) and first["weights_bytes"] >= 0
            code, out, err = run_cli(["estimate", repo, "--format", "json"], {**env, "HF_HUB_OFFLINE": "1"})
            assert code == 0 and json.loads(out)["weights_bytes"] == first["weights_bytes"], err


# --- names that carry control characters ---------------------------------------------------------------

CONTROLS = st.sampled_from(["\x1b[31m", "\x1b]0;title\x07", "\n", "\r", "\x00", "\x08", "\x7f", "\x9b2J", "\u202e",
                            "\u2028", "\u2066", "\t", "%0A::warning::", "|"])
NAMES = st.lists(st.one_of(CONTROLS, st.text("abcXYZ-_.", min_size=1, max_size=4)), min_size=1, max_size=6).map("".join)
# (argv with {name} where the name goes, a file to create first: (relative path, content) or None)
NAME_PLACES = {
    "model directory": (["estimate", "{tmp}/{name}", "--gpu", "H100"], None),
    "missing trace": (["simulate", "llama-3.1-8b", "--gpu", "H100", "--requests", "3", "--trace", "{tmp}/{name}"], None),
    "--gpu value": (["estimate", "llama-3.1-8b", "--gpu", "{name}"], None),
    "--engine value": (["estimate", "llama-3.1-8b", "--gpu", "H100", "--engine", "{name}"], None),
    "-o under a file": (["check", str(REPO / "examples" / "passing.yaml"), "-f", "json", "-o", "{tmp}/f/{name}"], None),
    "deployment key": (["check", "{tmp}/d.yaml"], ("d.yaml", "model: llama-3.1-8b\ngpu: H100\n{quoted}: 1\n")),
    "deployment name, table": (["check", "{tmp}/d.yaml"], ("d.yaml", "name: {quoted}\nmodel: llama-3.1-8b\ngpu: H100\n")),
    "deployment name, markdown": (["check", "{tmp}/d.yaml", "-f", "markdown"],
                                  ("d.yaml", "name: {quoted}\nmodel: llama-3.1-8b\ngpu: H100\n")),
    "trace key": (["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", "{tmp}/t.jsonl"], ("t.jsonl", "{json_key}\n")),
}


@share(0.1)
@given(st.sampled_from(sorted(NAME_PLACES)), NAMES)
def test_names_with_control_characters_are_shown_escaped(place, name):
    count("control characters in names")
    argv, made = NAME_PLACES[place]
    if "\x00" in name and made is None:  # no argument or path can hold NUL
        name = name.replace("\x00", "")
    if "/" in argv[-1] or place == "-o under a file":
        name = name.replace("/", "_") or "_"
    with scratch() as tmp:
        (tmp / "f").write_text("x")
        if made is not None:
            text = made[1].format(quoted=json.dumps(name), json_key=json.dumps({name: 1}))
            (tmp / made[0]).write_text(text)
        code, out, err = run_cli([a.format(tmp=tmp, name=name) for a in argv])
        assert_contract(code, err)
        if place.startswith("deployment name") and code == 0:  # the report on stdout shows it escaped too
            assert not RAW_CONTROL.search(out.replace("\n", "")), out
            assert not any(line.startswith(("::", "| forged")) for line in out.splitlines())
        assert sorted(os.listdir(tmp)) == sorted({"f", *([made[0]] if made else [])}), os.listdir(tmp)
