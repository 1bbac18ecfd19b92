"""Output files are written atomically: a failure mid-write leaves the old file, whole."""

import os

import pytest

from kvplan.atomic import atomic_output, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old, complete")

    def crash(fd):
        raise KeyboardInterrupt  # Ctrl-C between writing and renaming

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "new" * 1000)
    assert target.read_text() == "old, complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_library_writer_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("matplotlib died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_success_replaces_with_normal_permissions(tmp_path):
    target = tmp_path / "out.csv"
    write_text_atomic(target, "a,b\n")
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_text() == "a,b\n"
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
