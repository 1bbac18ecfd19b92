"""`kvplan gpus`: the catalog --gpu reads, whole names and numbers at any width, json for scripts."""

import dataclasses
import json

import pytest
from rich.console import Console

import kvplan.hardware as hardware
import kvplan.report.gpus as report
from kvplan.cli import main
from kvplan.units import GiB, MiB


def run(args, capsys, monkeypatch, columns=120):
    monkeypatch.setenv("COLUMNS", str(columns))
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_is_the_catalog(capsys, monkeypatch):
    code, out, _ = run(["gpus", "--format", "json"], capsys, monkeypatch)
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == [g.name for g in hardware.GPUS]
    h100 = rows[0]
    # nvidia-smi shows an H100 80GB HBM3 as 81,559 MiB; datasheet: 3.35 TB/s, 989.4 dense bf16 TFLOP/s
    assert h100["nvidia_smi_total_bytes"] == 81559 * 2**20 == 85_520_809_984
    assert h100["bandwidth_bytes_per_s"] == 3.35e12 and h100["bf16_dense_flops"] == pytest.approx(989.4e12)
    assert h100["cuda_total_bytes"] is None and "h100-sxm5" in h100["aliases"]
    for row in rows:  # every alias --gpu accepts
        for alias in row["aliases"]:
            assert hardware.find_gpu(alias).name == row["name"]


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("terminal", [False, True])
def test_no_name_or_number_is_cut(columns, terminal, capsys, monkeypatch):
    if terminal:
        monkeypatch.setattr(report, "console", lambda: Console(force_terminal=True, width=columns, highlight=False))
    code, out, _ = run(["gpus"], capsys, monkeypatch, columns)
    assert code == 0 and "…" not in out
    assert max(len(line) for line in out.splitlines() if "\x1b" not in line) <= columns
    for g in hardware.GPUS:
        assert f"{g.memory_bytes // MiB:,} MiB ({g.memory_bytes / GiB:.2f} GiB)" in out
        assert g.name in out and all(alias in out for alias in g.aliases)
    assert "1,307.4 TFLOP/s" in out and "1.555 TB/s" in out  # MI300X, A100-40GB: every published digit
    assert "'-' where the catalog does not hold it yet" in " ".join(out.split())


def test_a_cuda_total_shows_when_the_catalog_has_it(capsys, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class WithCuda(hardware.GPU):
        cuda_total_bytes: int | None = None

    h100 = hardware.GPUS[0]
    entry = WithCuda(**dataclasses.asdict(h100), cuda_total_bytes=85_029_158_912)
    monkeypatch.setattr(hardware, "GPUS", (entry,))
    code, out, _ = run(["gpus", "-f", "json"], capsys, monkeypatch)
    assert json.loads(out)[0]["cuda_total_bytes"] == 85_029_158_912
    code, out, _ = run(["gpus"], capsys, monkeypatch)
    assert f"{85_029_158_912 / GiB:.2f} GiB" in out  # 79.19 GiB


def test_markdown_and_csv(capsys, monkeypatch):
    code, out, _ = run(["gpus", "-f", "markdown"], capsys, monkeypatch)
    assert code == 0 and out.startswith("| GPU | nvidia-smi total | CUDA total |") and "- CUDA total:" in out
    code, out, _ = run(["gpus", "-f", "csv"], capsys, monkeypatch)
    assert out.splitlines()[0].startswith("name,nvidia_smi_total_bytes,cuda_total_bytes")
    assert len(out.splitlines()) == len(hardware.GPUS) + 1
