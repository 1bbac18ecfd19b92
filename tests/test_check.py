"""`kvplan check`: rules, their numbers (recomputed by hand), exit codes and every output format."""

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvplan.check import check_files
from kvplan.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PASSING, FAILING = EXAMPLES / "passing.yaml", EXAMPLES / "failing.yaml"
FORMATS = ("table", "json", "junit", "markdown", "github")

# llama-3.1-8b: 32 layers x 8 KV heads x 128 dims, K and V, bf16 -> bytes per token (whole model, one GPU)
LLAMA8B_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2
LLAMA8B_PAGE_BYTES = LLAMA8B_BYTES_PER_TOKEN * 16  # one 16-token block across all 32 layers


def run(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def rule(result, name, index=0):
    return [r for r in result.rules if r.rule == name][index]


@pytest.fixture(scope="module")
def passing():
    return check_files([PASSING])


@pytest.fixture(scope="module")
def failing():
    return check_files([FAILING])


@pytest.mark.parametrize("fmt", FORMATS)
def test_exit_codes_per_format(fmt, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert run(["check", str(PASSING), "-f", fmt], capsys)[0] == 0
    assert run(["check", str(FAILING), "-f", fmt], capsys)[0] == 1
    assert run(["check", str(PASSING), str(FAILING), "-f", fmt], capsys)[0] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: llama-3.1-8b\ngpu: H100\nmax_model_len: [\n")
    rc, out, err = run(["check", str(PASSING), str(bad), "-f", fmt], capsys)
    assert rc == 2 and out == "" and err.startswith(f"kvplan: error: {bad}:")  # nothing half-reported


def test_every_example_and_its_exit_code(capsys):
    expected = {"passing.yaml": 0, "failing.yaml": 1, "k8s-deployment.yaml": 0, "docker-compose.yaml": 0,
                "with-manifest.yaml": 0}
    assert sorted(expected) == sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    for name, rc in expected.items():
        assert run(["check", str(EXAMPLES / name), "-f", "json"], capsys)[0] == rc, name


def test_users_rule_numbers_by_hand(passing):
    chat = passing.results[0]
    budget = chat.kv_budget_bytes_before_headroom
    headroom = -(-budget * 5 // 100)  # 5% of the budget, rounded up
    assert chat.headroom_bytes == headroom
    kv_budget = budget - headroom
    assert chat.estimate.kv_budget_bytes == kv_budget
    pool_bytes = kv_budget // LLAMA8B_PAGE_BYTES * LLAMA8B_PAGE_BYTES
    per_request = 8192 * LLAMA8B_BYTES_PER_TOKEN  # 8k tokens are 512 whole blocks
    users = rule(chat, "min_concurrent_users")
    assert users.passed and users.numbers["max_concurrent_users"] == pool_bytes // per_request
    assert users.numbers["kv_bytes_per_request_per_gpu"] == per_request == 1 << 30
    frac = rule(chat, "max_kv_budget_fraction")
    assert frac.numbers["load_bytes_per_gpu"] == 32 * per_request
    assert frac.numbers["fraction"] == pytest.approx(32 * per_request / kv_budget)
    fits = rule(chat, "fits")
    assert fits.numbers["max_concurrent_users"] == pool_bytes // (32768 * LLAMA8B_BYTES_PER_TOKEN)
    ctx = rule(chat, "min_context_tokens")
    assert ctx.passed and ctx.numbers["max_context_tokens"] == 32768  # capped at max_model_len


def test_failing_example_reason(failing):
    (r,) = failing.results
    assert not r.passed and r.headroom_bytes == 0
    users = rule(r, "min_concurrent_users")
    pool_bytes = r.estimate.kv_budget_bytes // LLAMA8B_PAGE_BYTES * LLAMA8B_PAGE_BYTES
    expected = pool_bytes // (32768 * LLAMA8B_BYTES_PER_TOKEN)
    assert not users.passed and users.numbers["max_concurrent_users"] == expected == 6
    assert "only 6 requests of 32,768 tokens fit" in users.message and "16 required" in users.message
    lines = FAILING.read_text().splitlines()
    assert "min_concurrent_users" in lines[users.line - 1]
    frac = rule(r, "max_kv_budget_fraction")
    assert not frac.passed and frac.numbers["load_bytes_per_gpu"] == 16 * 32768 * LLAMA8B_BYTES_PER_TOKEN
    assert rule(r, "fits").passed  # one 128k request still fits: the promise to 16 users is what breaks


def test_json_format_and_documented_keys(capsys):
    rc, out, _ = run(["check", str(PASSING), str(FAILING), "-f", "json"], capsys)
    data = json.loads(out)
    assert rc == 1 and data["passed"] is False
    assert data["summary"] == {"deployments": 4, "rules": 16, "failed": 2, "deployments_failed": 1}
    assert sum(not r["passed"] for d in data["deployments"] for r in d["rules"]) == 2
    doc = (ROOT / "docs" / "check.md").read_text()
    keys = set(data) | set(data["summary"]) | set(data["deployments"][0]) | set(data["deployments"][0]["rules"][0])
    for d in data["deployments"]:
        for r in d["rules"]:
            keys |= set(r["numbers"])
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/check.md does not document {missing}"


def test_junit_validates(capsys, tmp_path):
    rc, out, _ = run(["check", str(PASSING), str(FAILING), "-f", "junit"], capsys)
    assert rc == 1
    root = ET.fromstring(out.encode())
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    cases = root.findall("testsuite/testcase")
    failures = root.findall("testsuite/testcase/failure")
    assert len(suites) == 4 and int(root.get("tests")) == len(cases) == 16
    assert int(root.get("failures")) == len(failures) == 2 and root.get("errors") == "0"
    for suite in suites:
        assert int(suite.get("tests")) == len(suite.findall("testcase"))
        assert int(suite.get("failures")) == len(suite.findall("testcase/failure"))
        for case in suite.findall("testcase"):
            assert case.get("name") and case.get("classname") and case.get("time") is not None
            assert int(case.get("line")) >= 1
    failed = {c.get("name") for c in root.iter("testcase") if c.find("failure") is not None}
    assert failed == {"min_concurrent_users", "max_kv_budget_fraction"}
    assert "16 required" in failures[0].get("message") and "max_concurrent_users: 6" in failures[0].text
    xmlschema = pytest.importorskip("xmlschema")
    xsd = tmp_path / "junit.xsd"
    xsd.write_text(JUNIT_XSD)
    xmlschema.XMLSchema(str(xsd)).validate(out)


def test_markdown_and_step_summary(capsys, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    rc, out, _ = run(["check", str(FAILING), "-f", "markdown"], capsys)
    assert rc == 1 and out.startswith("## kvplan check: FAILED")
    assert "| `chat-8b` | min_concurrent_users | **FAIL** | >= 16 x 32,768 tokens | 6 |" in out
    assert summary.read_text() == "earlier step\n" + out  # appended, not replaced
    run(["check", str(PASSING), "-f", "json"], capsys)
    assert summary.read_text() == "earlier step\n" + out  # only markdown/github write the summary


def test_github_annotations(capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    rc, out, _ = run(["check", str(FAILING), "-f", "github"], capsys)
    errors = [line for line in out.splitlines() if line.startswith("::error ")]
    assert rc == 1 and len(errors) == 2
    text = FAILING.read_text().splitlines()
    for line in errors:
        props, message = line[len("::error "):].split("::", 1)
        fields = dict(p.split("=", 1) for p in props.split(","))
        assert fields["file"] == str(FAILING.relative_to(ROOT)) if Path.cwd() == ROOT else True
        assert "requirements" not in text[int(fields["line"]) - 1]  # points at the rule's own line
        assert "\n" not in message and "%" not in message.replace("%25", "")  # '%' escaped as GitHub requires
    assert re.search(r"\(\d+\.\d%25\) \(required <= 90\.0%25", errors[1])  # a percentage, escaped
    assert out.splitlines()[-1] == "kvplan check: FAILED: 1 deployment(s), 4 rule(s), 2 failed"
    assert run(["check", str(PASSING), "-f", "github"], capsys)[1].startswith("kvplan check: passed")


def test_output_file(capsys, tmp_path):
    target = tmp_path / "out" / "report.xml"
    rc, out, _ = run(["check", str(FAILING), "-f", "junit", "-o", str(target)], capsys)
    assert rc == 1 and out == ""
    assert ET.parse(target).getroot().get("failures") == "2"
    assert [p.name for p in target.parent.iterdir()] == ["report.xml"]  # no temp file left
    assert run(["check", str(FAILING), "-o", str(target)], capsys)[0] == 2  # table has no file form


def test_table_format(capsys):
    rc, out, _ = run(["check", str(FAILING)], capsys)
    assert rc == 1 and "FAIL" in out and "min_concurrent_users" in out and "GiB = 2^30 bytes" in out


def test_headroom_bytes_and_must_fit_off(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("model: llama-3.1-8b\ngpu: H100\nmax_model_len: 8k\n"
                    "requirements: {headroom: 1GiB, must_fit: false, min_context_tokens: 8k}\n")
    (r,) = check_files([path]).results
    assert [x.rule for x in r.rules] == ["min_context_tokens"]
    assert r.headroom_bytes == 1 << 30 and r.estimate.kv_budget_bytes == r.kv_budget_bytes_before_headroom - (1 << 30)


def test_headroom_can_fail_a_deployment(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("model: llama-3.1-8b\ngpu: H100\nmax_model_len: 8k\n"
                    "requirements: {headroom: 0.99, min_concurrent_users: {users: 100, context_tokens: 1k}}\n")
    (r,) = check_files([path]).results
    users = rule(r, "min_concurrent_users")
    pool = r.estimate.kv_budget_bytes // LLAMA8B_PAGE_BYTES * LLAMA8B_PAGE_BYTES
    assert not users.passed and users.numbers["max_concurrent_users"] == pool // (1024 * LLAMA8B_BYTES_PER_TOKEN)


def test_context_beyond_max_model_len_and_model_limit(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("model: qwen3-8b\ngpu: H100\nmax_model_len: 64k\n"
                    "requirements: {min_concurrent_users: {users: 1, context_tokens: 128k}}\n")
    (r,) = check_files([path]).results
    limit = rule(r, "max_model_len_supported")
    assert not limit.passed and "exceeds the model's max_position_embeddings 40,960" in limit.message
    users = rule(r, "min_concurrent_users")
    assert not users.passed and "exceed max_model_len 65,536" in users.message


def test_gpu_count_rule(tmp_path, capsys):
    manifest = (EXAMPLES / "k8s-deployment.yaml").read_text().replace("nvidia.com/gpu: 4", "nvidia.com/gpu: 2")
    path = tmp_path / "k8s.yaml"
    path.write_text(manifest)
    (r,) = check_files([path]).results
    count = rule(r, "gpu_count")
    assert not count.passed and count.numbers == {"gpus_needed": 4, "gpus_requested": 2}


def test_estimate_errors_name_the_field(tmp_path, capsys):
    path = tmp_path / "d.yaml"
    path.write_text("model: llama-3.1-8b\ngpu: H100\n\ntp: 3\n")
    rc, _, err = run(["check", str(path)], capsys)
    assert rc == 2 and f"{path}:4: deployment 'llama-3.1-8b': tp: --tp 3 does not divide" in err
    path.write_text("model: llama-9b\ngpu: H100\n")
    rc, _, err = run(["check", str(path)], capsys)
    assert rc == 2 and f"{path}:1:" in err and "unknown model 'llama-9b'" in err


def test_check_stays_light():
    code = ("import sys\nfrom kvplan.cli import main\n"
            f"rc = main(['check', {str(PASSING)!r}, '-f', 'json'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'pandas', 'numpy', 'matplotlib') if m in sys.modules]\n"
            "print(rc, heavy, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "0 []"


JUNIT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:element name="testsuites">
    <xs:complexType>
      <xs:sequence><xs:element ref="testsuite" maxOccurs="unbounded"/></xs:sequence>
      <xs:attribute name="name" type="xs:string"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
      <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
      <xs:attribute name="time" type="xs:decimal"/>
    </xs:complexType>
  </xs:element>
  <xs:element name="testsuite">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="properties" minOccurs="0">
          <xs:complexType><xs:sequence>
            <xs:element name="property" minOccurs="0" maxOccurs="unbounded">
              <xs:complexType>
                <xs:attribute name="name" type="xs:string" use="required"/>
                <xs:attribute name="value" type="xs:string" use="required"/>
              </xs:complexType>
            </xs:element>
          </xs:sequence></xs:complexType>
        </xs:element>
        <xs:element name="testcase" minOccurs="0" maxOccurs="unbounded">
          <xs:complexType>
            <xs:choice minOccurs="0">
              <xs:element name="failure">
                <xs:complexType><xs:simpleContent><xs:extension base="xs:string">
                  <xs:attribute name="message" type="xs:string"/>
                  <xs:attribute name="type" type="xs:string"/>
                </xs:extension></xs:simpleContent></xs:complexType>
              </xs:element>
              <xs:element name="skipped"/>
              <xs:element name="error"/>
            </xs:choice>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="classname" type="xs:string" use="required"/>
            <xs:attribute name="time" type="xs:decimal"/>
            <xs:attribute name="file" type="xs:string"/>
            <xs:attribute name="line" type="xs:positiveInteger"/>
          </xs:complexType>
        </xs:element>
      </xs:sequence>
      <xs:attribute name="name" type="xs:string" use="required"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
      <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
      <xs:attribute name="time" type="xs:decimal"/>
      <xs:attribute name="file" type="xs:string"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""


def test_ci_doc_snippets(tmp_path, capsys):
    """Every YAML block of docs/ci.md parses; its deployment files load; the workflow runs kvplan check."""
    import re

    import yaml

    from kvplan.deploy.file import load_file

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "ci.md").read_text(), re.S)
    assert len(blocks) == 4
    deployment, with_manifest, workflow, precommit = (yaml.safe_load(b) for b in blocks)
    path = tmp_path / "deploy.yaml"
    path.write_text(blocks[0])
    assert [e.name for e in load_file(path)] == ["chat-8b", "launched-as-is"]
    assert main(["check", str(path), "-f", "json"]) in (0, 1)
    assert with_manifest["deployments"][0]["manifest"].endswith(".yaml")
    runs = [s["run"] for s in workflow["jobs"]["kv-capacity"]["steps"] if "run" in s]
    assert any("kvplan check" in r and "--format github" in r for r in runs)
    assert precommit["repos"][0]["hooks"][0]["entry"] == "kvplan check"


def test_unwritable_step_summary_keeps_the_verdict(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no" / "such" / "dir" / "summary.md"))
    rc, out, err = run(["check", str(FAILING), "-f", "github"], capsys)
    assert rc == 1 and "::error " in out and "cannot append to $GITHUB_STEP_SUMMARY" in err


def test_budget_fraction_with_only_targets_beyond_max_model_len(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("model: llama-3.1-8b\ngpu: H100\nmax_model_len: 32k\nrequirements:\n"
                    "  min_concurrent_users: {users: 2, context_tokens: 64k}\n  max_kv_budget_fraction: 0.8\n")
    (r,) = check_files([path]).results
    fraction = rule(r, "max_kv_budget_fraction")
    # the only load an engine accepts is one max_model_len request
    assert fraction.numbers["load_bytes_per_gpu"] == 32768 * LLAMA8B_BYTES_PER_TOKEN and fraction.passed
    assert not rule(r, "min_concurrent_users").passed


def test_users_are_capped_by_max_num_seqs(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("vllm_args: vllm serve Qwen/Qwen3-8B --max-model-len 8192 --max-num-seqs 8\ngpu: H100\n"
                    "requirements: {min_concurrent_users: {users: 64, context_tokens: 1k}}\n")
    (r,) = check_files([path]).results
    users = rule(r, "min_concurrent_users")
    assert not users.passed and users.numbers["max_concurrent_users"] == 8 and "max_num_seqs 8" in users.message


def test_launched_deployments_use_vllm_rules_and_versions_parse(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("deployments:\n  - vllm_args: vllm serve Qwen/Qwen3-8B --max-model-len 8192\n    gpu: H100\n"
                    "  - model: qwen3-8b\n    gpu: H100\n    engine: vllm@0.8.5\n")
    launched, versioned = check_files([path]).results
    assert launched.entry.deployment.engine == "vllm" and versioned.entry.deployment.engine == "vllm@0.8.5"
    assert (versioned.estimate.engine, versioned.estimate.engine_version) == ("vllm", "0.8.4")  # 0.8.4+ semantics


def test_model_that_contradicts_the_command_is_refused(tmp_path, capsys):
    path = tmp_path / "d.yaml"
    path.write_text("model: qwen3-8b\ngpu: H100\nvllm_args: vllm serve meta-llama/Llama-3.1-8B-Instruct\n")
    code, _, err = run(["check", str(path)], capsys)
    assert code == 2 and f"{path.name}:1" in err and "serves" in err and err.count("\n") == 1
    path.write_text("model: qwen3-8b\ngpu: H100\nvllm_args: vllm serve /mnt/models/qwen\n")  # a container path
    assert run(["check", str(path)], capsys)[0] in (0, 1)


def test_rules_from_a_manifest_point_into_the_deployment_file():
    """Findings name the deployment file, so their lines must be lines of that file."""
    (result,) = check_files([EXAMPLES / "with-manifest.yaml"]).results
    length = len((EXAMPLES / "with-manifest.yaml").read_text().splitlines())
    assert result.rules and all(1 <= r.line <= length for r in result.rules), [(r.rule, r.line) for r in result.rules]
