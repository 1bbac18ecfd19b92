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


@pytest.mark.parametrize("command", [["estimate"], ["simulate"], ["profile", "--device", "cpu"]])
def test_gpu_auto_without_nvml_fails_before_the_model_is_loaded(command, capsys, monkeypatch):
    import kvplan.cli.options as options

    without(monkeypatch, "pynvml")
    monkeypatch.setattr(options, "load_model_from_flags", no_work)
    code, out, err = run([*command, "llama-3.1-8b", "--gpu", "auto"], capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err == ("kvplan: error: --gpu auto needs pynvml, which kvplan's 'nvml' extra installs: "
                   "pip install 'kvplan[nvml]' (or name the GPU with --gpu)\n")


def test_the_nvml_extra_is_declared():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("nvidia-ml-py") for req in extras["nvml"])


def test_profile_report_without_matplotlib_fails_before_the_run(tmp_path, capsys, monkeypatch):
    import kvplan.cli.options as options

    without(monkeypatch, "matplotlib")
    monkeypatch.setattr(options, "load_model_from_flags", no_work)
    report = tmp_path / "report"
    code, out, err = run(["profile", "llama-3.1-8b", "--device", "cpu", "--report", str(report)], capsys, monkeypatch)
    assert code == 2 and out == "" and not report.exists()
    assert err == ("kvplan: error: --report needs matplotlib, which kvplan's 'report' extra installs: "
                   "pip install 'kvplan[report]'\n")


def test_the_parquet_writer_names_the_extra_and_writes_nothing(tmp_path, monkeypatch):
    from kvplan.report.formats import parquet

    without(monkeypatch, "pyarrow")
    path = tmp_path / "grid.parquet"
    with pytest.raises(InputError) as info:
        parquet.write(None, path)  # refused before the report is looked at
    assert str(info.value) == ("--format parquet needs pyarrow, which kvplan's 'report' extra installs: "
                               "pip install 'kvplan[report]'")
    assert not path.exists()


def test_no_other_install_line_is_written_in_the_package():
    """Every `pip install` kvplan prints comes from kvplan.extras, so it is always the quoted extra."""
    found = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "kvplan").rglob("*.py"))
             if path.name != "extras.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if "pip install" in line]
    assert found == []


def test_an_unknown_architecture_names_the_introspect_extra(tmp_path, capsys, monkeypatch):
    import json

    import kvplan.model.paths as paths

    monkeypatch.setattr(paths, "introspection_available", lambda: False)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "kvplan_made_up", "num_hidden_layers": 2, "num_attention_heads": 4,
                                  "num_key_value_heads": 2, "hidden_size": 64}))
    code, out, err = run(["estimate", str(config)], capsys, monkeypatch)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "install transformers for exact figures (pip install 'kvplan[introspect]'), or give --layers" in err
