"""benchmarks/gpu_check.sh --dry-run: the prepared GPU run's logic on the CPU, with tiny stand-in models.

Every step that can run without CUDA runs (environment, engine vs transformers parity, the three
profile runs, the verdict); the archive and summary land in $OUT. On a GPU machine the same
script runs the full-size steps (docs/profile.md lists them and what each must show).
"""

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_runs_every_cpu_step_and_leaves_one_archive(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path),
           "TOTAL_S": "1200", "TIMEOUT_SCALE": "6"}  # the suite shares 2 cores
    env.pop("TRITON_INTERPRET", None)
    env.pop("KVPLAN_COMMIT", None)
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "0 failed" in summary and "dry run" in summary
    assert re.search(r"^commit: [0-9a-f]{40} \(git", summary, re.M), summary  # no KVPLAN_COMMIT: git says
    for check in ("engine vs transformers: qwen3_moe (MoE) bf16", "profile-llama: KV pool exact",
                  "profile-gemma: simulated dynamics = run", "profile-llama: contiguous users", "out-of-memory path",
                  "profile-llama: the pool binds"):
        assert f"PASS        {check}" in summary, check
    assert "SKIP        decode kernel bandwidth" in summary
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.tar.gz", "steps.json", "summary.txt"]
    with tarfile.open(tmp_path / "out" / "gpu_check.tar.gz") as archive:
        names = set(archive.getnames())
    for name in ("./commands.txt", "./steps.json", "./parity.json", "./logs/profile-llama.log",
                 "./profile-llama/profile.json", "./profile-gemma/memory.png", "./profile-oom/profile.json"):
        assert name in names, name
    assert not list(tmp_path.glob("gpu_check.*")), "the work directory is removed"


def test_a_package_that_cannot_be_imported_stops_the_run_with_a_clear_message(tmp_path):
    """Every install method fails (a Python that cannot import kvplan.kernels): nothing else runs, and the
    summary and the archive still land in $OUT."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\ncase "$*" in *"import kvplan.kernels"*) exit 1;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path),
           "KVPLAN_COMMIT": "0123abc; rm -rf /"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "STOP: kvplan cannot be imported" in summary and re.search(r"FAIL +step install", summary)
    assert "commit: 0123abcrm-rf (KVPLAN_COMMIT)" in summary  # recorded, and only as a name
    with tarfile.open(tmp_path / "out" / "gpu_check.tar.gz") as archive:
        steps = json.load(archive.extractfile("./steps.json"))
    assert list(steps) == ["install"] and steps["install"]["status"] == "failed"


def test_a_terminated_run_still_leaves_its_summary_and_archive(tmp_path):
    """A caller's timeout sends TERM: the running step is stopped, recorded as killed, and the verdict,
    steps.json and the archive land in $OUT at once."""
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\ncase "$*" in *"import kvplan.kernels"*) exec sleep 120;; esac\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(python), "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("gpu_check.*/py/kvplan")):  # the install step is under way
        assert time.monotonic() < deadline and proc.poll() is None, "the install step never started"
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143, out
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "STOPPED by a signal during install" in summary and re.search(r"FAIL +step install: killed", summary)
    steps = json.loads((tmp_path / "out" / "steps.json").read_text())
    assert steps["install"]["status"] == "killed"
    with tarfile.open(tmp_path / "out" / "gpu_check.tar.gz") as archive:
        assert "./logs/install.log" in archive.getnames()
    assert not list(tmp_path.glob("gpu_check.*")), "the work directory is removed"
