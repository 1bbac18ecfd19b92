"""Output files are written atomically: a failure mid-write leaves the old file, whole."""

import json
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


# --- what an output path may be (issue 13) -----------------------------------------------------------

import signal  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from kvplan.cli import main  # noqa: E402
from kvplan.errors import InputError  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "passing.yaml")


def check_to(path, capsys) -> tuple[int, str]:
    rc = main(["check", EXAMPLE, "-f", "json", "-o", str(path)])
    return rc, capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_is_written_through_not_replaced(tmp_path, capsys):
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a second /dev/null
    link = tmp_path / "link"
    link.symlink_to(null)
    for target in (null, link):
        assert check_to(target, capsys)[0] == 0
    assert stat.S_ISCHR(os.stat(null).st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "null"]


def test_a_symlink_to_a_file_keeps_the_link_and_replaces_the_file(tmp_path, capsys):
    real = tmp_path / "reports" / "check.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    assert check_to(link, capsys)[0] == 0
    assert link.is_symlink() and json.loads(real.read_text())["passed"] is True
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "reports" / "new.json")
    assert check_to(dangling, capsys)[0] == 0 and (tmp_path / "reports" / "new.json").is_file()


_FIFO_READER = """
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)  # open now, without waiting for a writer
print("ready", file=sys.stderr, flush=True)
poll, data = select.poll(), b""
poll.register(fd, select.POLLIN)
while True:
    poll.poll()
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        continue
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"""


def test_a_fifo_with_a_reader_gets_the_output_and_without_one_is_refused(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rc, err = check_to(fifo, capsys)
    assert rc == 2 and "a FIFO with no reader" in err and err.count("\n") == 1
    reader = subprocess.Popen([sys.executable, "-c", _FIFO_READER, str(fifo)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stderr.readline() == "ready\n"
    assert check_to(fifo, capsys)[0] == 0
    assert json.loads(reader.communicate(timeout=10)[0])["passed"] is True
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("where,needle", [
    ("{tmp}/file/x.json", "cannot write (Not a directory)"),
    ("/proc/kvplan-x.json", "cannot write"),
    ("{tmp}", "is a directory"),
])
def test_unwritable_targets_are_one_line(tmp_path, capsys, where, needle):
    (tmp_path / "file").write_text("")
    rc, err = check_to(where.format(tmp=tmp_path), capsys)
    assert rc == 2 and needle in err and err.count("\n") == 1, err


def test_a_missing_parent_is_created(tmp_path, capsys):
    assert check_to(tmp_path / "a" / "b" / "x.json", capsys)[0] == 0
    assert (tmp_path / "a" / "b" / "x.json").is_file()


def test_a_read_only_parent_is_one_line(tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(InputError, match="x.json: cannot write \\(Permission denied\\)"):
        write_text_atomic(tmp_path / "x.json", "data")


def test_sigterm_mid_write_removes_the_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old, complete")
    monkeypatch.setattr(os, "fsync", lambda fd: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(SystemExit) as info:
        write_text_atomic(target, "new")
    assert info.value.code == 128 + signal.SIGTERM
    assert target.read_text() == "old, complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_stale_temp_files_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".report.json.{dead_pid}.abc123.kvplan.tmp"
    live = tmp_path / f".report.json.{os.getpid()}.def456.kvplan.tmp"  # another write of this process
    other = tmp_path / f".other.json.{dead_pid}.abc123.kvplan.tmp"  # not this target's
    for p in (stale, live, other):
        p.write_text("partial")
    write_text_atomic(tmp_path / "report.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "report.json"])


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_libraries_writing_by_name_get_a_device_as_it_is(tmp_path):
    null = tmp_path / "null"  # a node of its own: the real /dev/null replaced by a file breaks the whole machine
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with atomic_output(null) as path:
        assert path == null
        path.write_bytes(b"png")
    assert stat.S_ISCHR(os.stat(null).st_mode)
    with atomic_output(tmp_path / "plot.png") as path:
        assert path.parent == tmp_path and path.name.endswith(".kvplan.tmp.png")
        path.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png" and len(list(tmp_path.iterdir())) == 2
