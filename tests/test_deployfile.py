"""Deployment files: the format, line numbers on every error, defaults, vllm_args, JSON schema."""

import json
from pathlib import Path

import pytest

from kvplan.cli import main
from kvplan.deploy.fields import json_schema
from kvplan.deploy.file import load_deployments, load_file
from kvplan.errors import InputError
from kvplan.hardware import find_gpu
from kvplan.units import GiB

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def write(tmp_path: Path, text: str, name: str = "deploy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(InputError) as info:
        load_file(path)
    return str(info.value)


def test_passing_example_fields_and_lines():
    entries = load_file(EXAMPLES / "passing.yaml")
    assert [e.name for e in entries] == ["chat-8b", "rag-70b", "vllm-launch"]
    chat, rag, launch = entries
    assert chat.model == "llama-3.1-8b" and chat.deployment.gpu == find_gpu("H100")  # from defaults
    assert chat.deployment.max_model_len == 32768 and chat.deployment.tp == 1
    assert chat.requirements.headroom_fraction == pytest.approx(0.05)  # defaults' requirements merged
    assert [(t.users, t.context_tokens) for t in chat.requirements.min_concurrent_users] == [(32, 8192)]
    assert chat.requirements.min_context_tokens == 32768 and chat.requirements.max_kv_budget_fraction == 0.8
    text = (EXAMPLES / "passing.yaml").read_text().splitlines()
    assert "max_model_len: 32k" in text[chat.line_of("max_model_len") - 1]
    assert rag.deployment.tp == 4 and rag.deployment.kv_dtype == "fp8"
    assert [(t.users, t.context_tokens) for t in rag.requirements.min_concurrent_users] == [(48, 16384), (8, 65536)]
    # vllm_args: the command line's settings, the model from its positional argument
    assert launch.model == "Qwen/Qwen3-8B" and launch.deployment.gpu == find_gpu("L40S")
    d = launch.deployment
    assert (d.max_model_len, d.gpu_memory_utilization, d.kv_dtype) == (40960, 0.92, "fp8")
    assert launch.ignored_flags == ("--enable-prefix-caching",)


def test_single_deployment_form(tmp_path):
    path = write(tmp_path, "model: qwen3-8b\ngpu: L4\nmax_model_len: 8192\n")
    (entry,) = load_file(path)
    assert entry.name == "qwen3-8b" and entry.line == 1 and entry.requirements.must_fit


def test_malformed_yaml_names_line(tmp_path):
    path = write(tmp_path, "deployments:\n  - name: a\n    model: [unclosed\n    gpu: H100\n")
    message = error_of(path)
    assert "malformed YAML" in message and message.startswith(f"{path}:")
    line = int(message.split(":")[1])
    assert line in (4, 5)  # where the parser notices the unclosed flow sequence


def test_unknown_key_suggests_near_miss(tmp_path):
    path = write(tmp_path, "deployments:\n  - name: a\n    model: qwen3-8b\n    gpu: H100\n    max_model_length: 8k\n")
    message = error_of(path)
    assert f"{path}:5:" in message and "max_model_length: unknown key (did you mean 'max_model_len'?)" in message
    path = write(tmp_path, "model: qwen3-8b\ngpu: H100\ntensor_parallel_size: 2\n")
    assert "did you mean 'tp'?" in error_of(path)
    path = write(tmp_path, "model: qwen3-8b\ngpu: H100\nrequirements:\n  min_concurent_users: {users: 2}\n")
    message = error_of(path)
    assert ":4:" in message and "did you mean 'min_concurrent_users'?" in message


@pytest.mark.parametrize("line, expect", [
    ("tp: two", "tp: expected an integer, got 'two'"),
    ("tp: 1.5", "tp: expected an integer, got 1.5"),
    ("tp: true", "tp: expected an integer, got True"),
    ("max_model_len: lots", "max_model_len: expected an integer, got 'lots'"),
    ("max_model_len: [1]", "max_model_len: expected a token count"),
    ("gpu_memory_utilization: high", "gpu_memory_utilization: expected a number"),
    ("vllm_args: 5", "vllm_args: expected a `vllm serve` command line"),
    ("requirements: [1]", "requirements: expected a mapping"),
])
def test_wrong_types_name_field_and_line(tmp_path, line, expect):
    path = write(tmp_path, f"model: qwen3-8b\ngpu: H100\n{line}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:3: ") and expect in message


@pytest.mark.parametrize("line, expect", [
    ("tp: 0", "tp: must be at least 1, got 0"),
    ("gpu_memory_utilization: 1.5", "must be in (0, 1], got 1.5"),
    ("max_model_len: -5", "must be at least 1"),
    ("gpu: H1000", "gpu: unknown GPU 'H1000'; did you mean"),
    ("kv_dtype: fp9", "kv_dtype: unknown kv_dtype 'fp9'"),
    ("dtype: int3", "dtype: unknown weight dtype 'int3'"),
    ("engine: vllmm", "engine: unknown engine 'vllmm' (did you mean 'vllm'?)"),
    ("weights: 12 bananas", "weights: unknown unit"),
    ("requirements: {headroom: 1.5}", "requirements.headroom: a fraction of the KV budget must be in [0, 1)"),
    ("requirements: {headroom: 3}", "requirements.headroom: expected a fraction below 1"),
    ("requirements: {max_kv_budget_fraction: 0}", "requirements.max_kv_budget_fraction: must be in (0, 1]"),
    ("requirements: {min_concurrent_users: {users: 0}}", "must be at least 1, got 0"),
    ("requirements: {min_concurrent_users: {context_tokens: 4k}}", "`users` missing"),
    ("requirements: {must_fit: yes please}", "requirements.must_fit: expected true or false"),
])
def test_impossible_values_rejected(tmp_path, line, expect):
    gpu = "" if line.startswith("gpu:") else "gpu: H100\n"
    path = write(tmp_path, f"model: qwen3-8b\nmax_num_seqs: 8\n{line}\n{gpu}")
    message = error_of(path)
    assert message.startswith(f"{path}:3: ") and expect in message


def test_structure_errors(tmp_path):
    cases = [
        ("deployments:\n  - model: a\n    gpu: H100\n    tp: 1\n    tp: 2\n", ":5:", "key 'tp' given twice (first on line 4)"),
        ("deployments: []\n", ":1:", "deployments: expected a non-empty list"),
        ("deployments:\n  - 5\n", ":2:", "deployments[0]: expected a mapping"),
        ("deploymnts:\n  - model: a\n", ":1:", "deploymnts: unknown key (did you mean 'deployments'?)"),
        ("version: 2\nmodel: qwen3-8b\ngpu: H100\n", ":1:", "version: this kvplan reads format 1"),
        ("gpu: H100\n", ":1:", "needs `model`"),
        ("model: qwen3-8b\n", ":1:", "no GPU: add `gpu`"),
        ("model: qwen3-8b\ngpu: H100\ngpu_memory: 80GiB\n", ":3:", "give `gpu` or `gpu_memory`, not both"),
        ("model: !!python/object/apply:os.system ['true']\ngpu: H100\n", ":1:", "unsupported YAML value"),
        ("deployments:\n  - {name: a, model: qwen3-8b, gpu: H100}\n  - {name: a, model: qwen3-8b, gpu: L4}\n",
         ":3:", "two deployments named 'a'"),
        ("defaults: {name: x}\ndeployments:\n  - {model: qwen3-8b, gpu: H100}\n", ":1:", "'name' belongs to one deployment"),
        ("a: &x [*x]\n", ":1:", ""),
        ("", "", "empty file"),
    ]
    for text, line, expect in cases:
        path = write(tmp_path, text)
        message = error_of(path)
        assert message.startswith(f"{path}{line}"), (text, message)
        assert expect in message, (text, message)


def test_defaults_merge_and_entry_wins(tmp_path):
    path = write(tmp_path, """
defaults:
  gpu: H100
  max_model_len: 8k
  requirements: {headroom: 2GiB, min_context_tokens: 4k}
deployments:
  - {name: a, model: qwen3-8b}
  - name: b
    model: qwen3-8b
    gpu_memory: 24GiB
    max_model_len: 16k
    requirements: {min_context_tokens: 16k}
""")
    a, b = load_file(path)
    assert a.deployment.gpu == find_gpu("H100") and a.deployment.max_model_len == 8192
    assert a.requirements.headroom_bytes == 2 * GiB and a.requirements.min_context_tokens == 4096
    assert b.deployment.gpu.memory_bytes == 24 * GiB and b.deployment.max_model_len == 16384
    assert b.requirements.headroom_bytes == 2 * GiB and b.requirements.min_context_tokens == 16384
    assert b.requirements.lines["min_context_tokens"] == 12 and b.requirements.lines["headroom"] == 5


def test_yaml_merge_keys_allowed(tmp_path):
    path = write(tmp_path, """
base: &base {model: qwen3-8b, gpu: H100, max_model_len: 8k}
""")
    assert "deployment: base: unknown key" in error_of(path)  # anchors live inside deployments
    path = write(tmp_path, """
deployments:
  - &a {name: a, model: qwen3-8b, gpu: H100, max_model_len: 8k}
  - <<: *a
    name: b
    max_model_len: 16k
""")
    a, b = load_file(path)
    assert (a.deployment.max_model_len, b.deployment.max_model_len) == (8192, 16384)
    assert b.model == "qwen3-8b"


def test_vllm_args_conflict_with_explicit_key(tmp_path):
    path = write(tmp_path, """
model: llama-3.1-8b
gpu: H100
max_model_len: 32768
vllm_args: "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-model-len 65536"
""")
    message = error_of(path)
    assert f"{path}:4:" in message and "max_model_len: 32768 here, but vllm_args (line 5) say 65536" in message
    agree = write(tmp_path, """
model: llama-3.1-8b
gpu: H100
tp: 2
vllm_args: [vllm, serve, meta-llama/Llama-3.1-8B-Instruct, --tensor-parallel-size, "2", --max-num-seqs, "64"]
""")
    (entry,) = load_file(agree)
    assert entry.model == "llama-3.1-8b"  # an explicit model wins over the command's HF id
    assert entry.deployment.tp == 2 and entry.deployment.max_num_seqs == 64
    assert entry.line_of("max_num_seqs") == 5


def test_model_path_relative_to_file(tmp_path):
    model_dir = tmp_path / "models" / "tiny"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "hidden_size": 256, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 2048}))
    path = write(tmp_path, "model: ./models/tiny\ngpu: L4\n")
    (entry,) = load_file(path)
    assert Path(entry.model) == model_dir


def test_kubernetes_manifest_read_directly():
    (entry,) = load_file(EXAMPLES / "k8s-deployment.yaml")
    d = entry.deployment
    assert entry.name == "llama-70b/vllm" and entry.model == "meta-llama/Llama-3.1-70B-Instruct"
    assert d.tp == 4  # --tensor-parallel-size=$(TP) with TP from the container env
    assert d.gpu == find_gpu("H100-SXM")  # nodeSelector NVIDIA-H100-80GB-HBM3
    assert (d.max_model_len, d.gpu_memory_utilization, entry.gpu_count) == (32768, 0.9, 4)
    assert entry.ignored_flags == ("--enable-prefix-caching",)


def test_compose_service_read_directly():
    (entry,) = load_file(EXAMPLES / "docker-compose.yaml")  # the nginx service runs no vllm: not a deployment
    d = entry.deployment
    assert entry.name == "qwen" and entry.model == "Qwen/Qwen3-8B" and d.gpu == find_gpu("L40S")
    assert (d.max_model_len, d.kv_dtype, d.max_num_seqs, entry.gpu_count) == (40960, "fp8", 128, 1)


def test_deployment_file_pointing_at_manifest():
    (entry,) = load_file(EXAMPLES / "with-manifest.yaml")
    assert entry.deployment.engine == "vllm" and entry.deployment.tp == 4 and entry.gpu_count == 4
    assert entry.requirements.headroom_bytes == 2 * GiB


def test_manifest_errors(tmp_path):
    k8s = """apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  nodeSelector: {nvidia.com/gpu.product: %s}
  containers:
    - name: c
      image: vllm/vllm-openai
      args: ["--model", "qwen3-8b", "--max-model-len", "%s"]
"""
    path = write(tmp_path, k8s % ("Tesla-T4", "4096"), "pod.yaml")
    message = error_of(path)
    assert f"{path}:5:" in message and "'Tesla-T4' is not in the GPU catalog" in message
    path = write(tmp_path, k8s % ("NVIDIA-L4", "$(LEN)"), "pod.yaml")
    message = error_of(path)
    assert f"{path}:9:" in message and "cannot resolve $(LEN)" in message
    (entry,) = load_file(write(tmp_path, k8s % ("NVIDIA-L4", "4096"), "pod.yaml"))
    assert entry.deployment.gpu == find_gpu("L4") and entry.gpu_count is None
    compose = "services:\n  s:\n    command: vllm serve qwen3-8b --max-model-len ${LEN}\n    labels: [kvplan.dev/gpu=L4]\n"
    message = error_of(write(tmp_path, compose, "compose.yaml"))
    assert ":3:" in message and "cannot resolve ${LEN}" in message
    nothing = "services:\n  web:\n    image: nginx\n"
    assert "no container or service in it runs `vllm serve`" in error_of(write(tmp_path, nothing, "compose.yaml"))


def test_cli_exit_2_one_line(tmp_path, capsys):
    path = write(tmp_path, "model: qwen3-8b\ngpu: H100\ntp: zero\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kvplan: error: {path}:3: ") and "tp: expected an integer" in err[0]


def test_missing_file_exit_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_load_deployments_needs_a_file():
    with pytest.raises(InputError, match="no deployment file"):
        load_deployments([])


def test_docs_schema_is_generated_from_the_field_table():
    on_disk = json.loads((ROOT / "docs" / "deployment.schema.json").read_text())
    assert on_disk == json_schema(), ("docs/deployment.schema.json is stale: regenerate with "
                                      "python -c 'import json,kvplan.deploy.fields as d; print(json.dumps(d.json_schema(), indent=2))'")


def test_examples_validate_against_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    schema = json_schema()
    for name in ("passing.yaml", "failing.yaml", "with-manifest.yaml"):
        jsonschema.validate(yaml.safe_load((EXAMPLES / name).read_text()), schema)
    bad = {"deployments": [{"model": "x", "max_model_length": 5}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_alias_bomb_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 9)]
    message = error_of(write(tmp_path, "\n".join(lines) + "\n"))
    assert "YAML nodes once aliases are expanded" in message


def test_gpu_from_product_labels():
    from kvplan.deploy.kubernetes import gpu_from_product

    assert gpu_from_product("NVIDIA-H100-80GB-HBM3") == find_gpu("H100-SXM")
    assert gpu_from_product("NVIDIA-A100-SXM4-40GB") == find_gpu("A100-40GB")
    assert gpu_from_product("NVIDIA-L40S") == find_gpu("L40S")
    assert gpu_from_product("NVIDIA-A100-PCIE-40GB") is None  # never guessed from a partial match
    assert gpu_from_product("NVIDIA-H100-NVL") is None


def test_shell_scripts_in_manifests_are_split_like_a_shell():
    from kvplan.deploy.serve_command import serve_args

    script = "vllm serve $MODEL_ID \\\n  --max-model-len 4096 # was --max-model-len 40960\n; sleep infinity"
    assert serve_args(["bash", "-lc", script], {"MODEL_ID": "Qwen/Qwen3-8B"}) == ["Qwen/Qwen3-8B", "--max-model-len", "4096"]
    assert serve_args(["sh", "-ec", "vllm serve m --max-model-len 4096; echo done"]) == ["m", "--max-model-len", "4096"]


@pytest.mark.parametrize("image,server", [
    ("vllm/vllm-openai:v0.10.1", True), ("docker.io/vllm/vllm-openai@sha256:0123", True),
    ("myregistry:5000/vllm/vllm-openai:latest", True),
    ("ghcr.io/vllm-project/production-stack/router:latest", False), ("lmcache/vllm-router", False),
])
def test_only_the_server_image_counts_as_vllm_serve(image, server):
    from kvplan.deploy.serve_command import is_vllm_server_image

    assert is_vllm_server_image(image) is server
