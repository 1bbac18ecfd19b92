"""A missing optional dependency: one line naming the extra, exit 2, before any work is done."""

import subprocess
import sys
from pathlib import Path

import pytest

from kvplan.cli import main
from kvplan.errors import InputError
from kvplan.extras import require_extra

ROOT = Path(__file__).resolve().parents[1]


def run(args, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def without(monkeypatch, *modules):
    """Make `modules` look uninstalled (find_spec and import both see None)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def no_work(*args, **kwargs):
    raise AssertionError("work started before the missing dependency was reported")


def test_the_helper_names_the_extra_and_the_modules(monkeypatch):
    without(monkeypatch, "matplotlib")
    with pytest.raises(InputError) as info:
        require_extra("report", "json", "matplotlib", what="--plot")
    assert str(info.value) == ("--plot needs matplotlib, which kvplan's 'report' extra installs: "
                               "pip install 'kvplan[report]'")
    require_extra("report", "json", what="nothing missing")  # returns quietly


def test_profile_without_torch(capsys, monkeypatch):
    import kvplan.simulation.trace as trace

    without(monkeypatch, "torch")
    monkeypatch.setattr(trace.TraceWorkload, "validate", no_work)
    code, out, err = run(["profile", "llama-3.1-8b", "--trace", str(ROOT / "examples" / "trace.jsonl"), "--device", "cpu"],
                         capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err == ("kvplan: error: kvplan profile needs torch, which kvplan's 'profile' extra installs: "
                   "pip install 'kvplan[profile]'\n")


def test_profile_without_torch_in_a_fresh_process(tmp_path):
    """As a user sees it: no internal error (exit 70), no traceback, nothing imported from the runtime."""
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "from kvplan.cli import main\n"
            "rc = main(['profile', 'llama-3.1-8b'])\n"
            "assert 'kvplan.profile' not in sys.modules, 'the runtime was imported'\n"
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "80", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("kvplan: error: kvplan profile needs torch and transformers, which kvplan's "
                                   "'profile' extra installs: pip install 'kvplan[profile]'")


def test_simulate_plot_without_matplotlib_fails_before_simulating(tmp_path, capsys, monkeypatch):
    import kvplan.simulation.run as sim

    without(monkeypatch, "matplotlib")
    monkeypatch.setattr(sim, "simulate", no_work)
    png = tmp_path / "blocks.png"
    code, out, err = run(["simulate", "llama-3.1-8b", "--gpu", "H100", "--plot", str(png)], capsys, monkeypatch)
    assert code == 2 and out == "" and not png.exists()
    assert err.strip() == ("kvplan: error: --plot needs matplotlib, which kvplan's 'report' extra installs: "
                           "pip install 'kvplan[report]'")


@pytest.mark.parametrize("missing,args,what", [
    ("pandas", [], "kvplan sweep needs pandas"),
    ("matplotlib", ["--plot", "users.png"], "--plot needs matplotlib"),
    ("pyarrow", ["-o", "grid.parquet"], "--format parquet needs pyarrow"),
])
def test_sweep_checks_each_extra_it_needs_first(missing, args, what, tmp_path, capsys, monkeypatch):
    import kvplan.sweep as sweep

    monkeypatch.chdir(tmp_path)
    without(monkeypatch, missing)
    monkeypatch.setattr(sweep, "run_sweep", no_work)
    code, out, err = run(["sweep", "-m", "llama-3.1-8b", "--gpu", "H100", *args], capsys, monkeypatch)
    assert code == 2 and out == "" and what in err and "pip install 'kvplan[report]'" in err
    assert list(tmp_path.iterdir()) == []
