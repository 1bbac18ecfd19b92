"""A built wheel carries the bundled specs and the kernels, so kvplan works outside the repo."""

import subprocess
import sys
import zipfile

import pytest


@pytest.mark.slow
def test_wheel_contains_specs_and_kernels(tmp_path):
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(repo)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(tmp_path.glob("kvplan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    specs = [n for n in names if n.startswith("kvplan/model_specs/") and n.endswith(".yaml")]
    assert len(specs) >= 25
    assert "kvplan/kernels/__init__.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "kvplan = kvplan.cli:run" in zipfile.ZipFile(wheel).read(entry).decode()
