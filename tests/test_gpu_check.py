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
    assert re.search(r"^\d+ passed, 0 failed$", summary, re.M) and "dry run" in summary
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


# --- the verdict on GPU-shaped outputs (no GPU needed: the files are written here) ---

def gpu_check_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POOL = 2 << 30
PREDICTED_TOTAL = 20 << 30


def profile_doc(total_rel: float, allocator_excess: int = 1 << 20) -> dict:
    measured_total = round(PREDICTED_TOTAL * (1 + total_rel))
    return {
        "predicted": {"kv_pool_bytes": POOL, "total_memory_bytes": PREDICTED_TOTAL},
        "predicted_static": {"max_concurrent_users": 32},
        "predicted_simulated": {"max_concurrent_users": 25, "preemptions": 7, "memory_utilization": 0.93},
        "measured": {"kv_pool_bytes": POOL, "kv_pool_layout_bytes": POOL, "kv_pool_allocator_bytes": POOL + allocator_excess,
                     "kv_pool_allocator_overhead_bytes": allocator_excess, "total_memory_bytes": measured_total,
                     "num_blocks": 1024, "max_concurrent_users": 25, "preemptions": 7, "memory_utilization": 0.93},
        "measured_basis": {"kv_pool_bytes": {"kind": "measured", "how": "bytes of the storages"},
                           "total_memory_bytes": {"kind": "computed", "how": "the most driver used (NVML, whole device)"}},
        "relative_error": {"total_memory_bytes": (measured_total - PREDICTED_TOTAL) / PREDICTED_TOTAL},
        "finding": None, "phase": "done", "run": {"max_concurrent_users": 25, "peak_blocks_in_use": 1021},
        "workload": {"requests": 96, "n": 1}, "deployment": {"max_num_seqs": 256},
        "contiguous": {"max_concurrent_users": 16, "predicted_max_concurrent_users": 16},
    }


def gpu_workdir(tmp_path, *, copy_fraction=0.92, total_rel=0.015, allocator_excess=1 << 20, bench="ok") -> Path:
    steps = {name: {"status": "ok", "rc": 0, "seconds": 10.0} for name in
             ("install", "environment", "parity", "profile-llama", "profile-gemma", "pytest-gpu", "decode-bench")}
    steps["profile-oom"] = {"status": "finding", "rc": 1, "seconds": 20.0}
    files = {
        "steps.json": steps,
        "parity.json": [{"family": "llama (dense)", "dtype": dtype, "device": "cuda:0", "tokens": 96,
                         "tokens_before_first_divergence": 96, "engine_mean_abs_logit_error": 0.01,
                         "transformers_mean_abs_logit_error": 0.01} for dtype in ("fp32", "bf16")],
        "profile-llama/profile.json": profile_doc(total_rel, allocator_excess),
        "profile-gemma/profile.json": profile_doc(total_rel, allocator_excess),
        "profile-oom/profile.json": {"finding": "out of memory during pool: the KV pool of 524,288 blocks did not fit"},
    }
    meta = {"copy_gbs": 3000.0, "points_planned": 6}
    rows = [{"batch": 64, "context": 16384, "kv_mb": 4295.0, "paged_gbs": 3000.0 * copy_fraction, "sdpa_gbs": 2000.0},
            {"batch": 1, "context": 4096, "kv_mb": 16.8, "paged_gbs": 900.0, "sdpa_gbs": 500.0}]
    if bench == "ok":
        files["decode_bench.json"] = {"meta": meta, "rows": rows, "correctness": {"ok": True, "detail": "max 0.004"}}
    elif bench == "wrong":
        files["decode_bench.json"] = {"meta": meta, "rows": [],
                                      "correctness": {"ok": False, "detail": "bf16 paged decode failed (plain)"}}
    for name, doc in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(doc))
    return tmp_path


def statuses(results) -> dict:
    return {check: status for status, check, _ in results}


@pytest.mark.parametrize("fraction, expected", [(0.92, "PASS"), (0.80, "GOAL-MISSED"), (0.60, "FAIL")])
def test_verdict_decode_bandwidth_goal_and_bar(tmp_path, fraction, expected):
    results = gpu_check_module().verdict(gpu_workdir(tmp_path, copy_fraction=fraction), dry_run=False)
    got = statuses(results)
    assert got["decode kernel bandwidth"] == expected and got["decode kernel bf16 correctness"] == "PASS"
    detail = next(d for _, c, d in results if c == "decode kernel bandwidth")
    assert f"{round(100 * fraction)}% of copy bandwidth" in detail and "2 of 6 points measured" in detail


@pytest.mark.parametrize("rel, expected", [(0.015, "PASS"), (-0.025, "GOAL-MISSED"), (0.04, "FAIL")])
def test_verdict_total_memory_goal_and_bar(tmp_path, rel, expected):
    results = gpu_check_module().verdict(gpu_workdir(tmp_path, total_rel=rel), dry_run=False)
    got = statuses(results)
    assert got["profile-llama: total memory"] == got["profile-gemma: total memory"] == expected
    detail = next(d for _, c, d in results if c == "profile-llama: total memory")
    assert f"{100 * rel:+.2f}%" in detail and "whole device" in detail  # the basis is named


def test_verdict_on_a_clean_gpu_run_passes_every_check(tmp_path):
    results = gpu_check_module().verdict(gpu_workdir(tmp_path), dry_run=False)
    assert [r for r in results if r[0] != "PASS"] == []
    got = statuses(results)
    for check in ("KV pool exact", "KV pool allocator overhead", "the pool binds", "simulated dynamics = run",
                  "contiguous users"):
        assert got[f"profile-llama: {check}"] == "PASS", check
    assert got["out-of-memory path"] == "PASS"


def test_verdict_failures_say_what_failed(tmp_path):
    gm = gpu_check_module()
    got = statuses(gm.verdict(gpu_workdir(tmp_path / "a", bench="wrong", allocator_excess=-4096), dry_run=False))
    assert got["decode kernel bf16 correctness"] == "FAIL" and "decode kernel bandwidth" not in got
    assert got["profile-llama: KV pool allocator overhead"] == "FAIL"
    results = gm.verdict(gpu_workdir(tmp_path / "b", bench=None), dry_run=False)
    assert ("FAIL", "decode kernel bandwidth", "no decode_bench.json: see logs/decode-bench.log") in results
