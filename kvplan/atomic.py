"""Write output files atomically: a crash, Ctrl-C or SIGTERM leaves the old file or the complete new one.

What a target path may be (docs/reliability.md):
  * missing or a regular file: the data goes to a temp file beside it, which replaces it in one
    rename; missing parent directories are created;
  * a symlink: followed; the file it points to is replaced as above and the link itself stays;
  * a character device (/dev/null, a terminal) or a FIFO: written through in place, as a shell's `>`
    would (not atomic: there is no file to replace); a FIFO with no reader is refused, not waited on;
  * a directory, a block device or a socket: refused;
  * `-`: standard output, as most tools read it (a library writing by file name is refused it).
Temp files are named `.{name}.{pid}.{random}.kvplan.tmp{suffix}`. SIGTERM and SIGHUP during a write
raise SystemExit so the temp file is removed; one left by a killed process (SIGKILL, power loss)
is swept by the next write beside it once that process is gone.
"""

import errno
import os
import re
import signal
import stat
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError
from .inputs import printable

_TEMP_MARK = ".kvplan.tmp"
STDOUT = "-"
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _cannot_write(path, exc: OSError) -> InputError:
    return InputError(f"{printable(path)}: cannot write ({exc.strerror or exc})")


def _target(path: Path) -> tuple[Path, bool]:
    """(the path to write, whether to write through to it in place)."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except FileNotFoundError:
        mode = None  # missing, or a symlink to a file yet to be created
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    if mode is not None and not stat.S_ISREG(mode):
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return path, True
        kind = "a directory" if stat.S_ISDIR(mode) else "a block device" if stat.S_ISBLK(mode) else "a socket"
        raise InputError(f"{printable(path)}: is {kind}; kvplan writes output to a regular file, a character device "
                         "(like /dev/null) or a FIFO")
    return (Path(os.path.realpath(path)) if path.is_symlink() else path), False


def _open_through(path: Path) -> int:
    """A descriptor writing into the device or FIFO at `path`; a FIFO must already have a reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise InputError(f"{printable(path)}: a FIFO with no reader; start the reader first") from None
        raise _cannot_write(path, exc) from None
    os.set_blocking(fd, True)
    return fd


@contextmanager
def _signals_exit():
    """SIGTERM/SIGHUP -> SystemExit(128 + signal) while a temp file exists, so `finally` can remove it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    defaults = [s for s in _SIGNALS if signal.getsignal(s) == signal.SIG_DFL]  # never an ignored or custom one
    for s in defaults:
        signal.signal(s, terminate)
    try:
        yield
    finally:
        for s in defaults:
            signal.signal(s, signal.SIG_DFL)


def _sweep_stale(directory: Path, name: str) -> None:
    """Remove temp files for `name` that a process no longer running left behind."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[^.]+{re.escape(_TEMP_MARK)}")
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(directory / entry)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid at all: leave its file alone
    return True


def _temp_beside(target: Path, suffix: str = "") -> tuple[int, Path]:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(target.parent, target.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=_TEMP_MARK + suffix,
                                   dir=target.parent)
        os.fchmod(fd, _umask_mode())
    except OSError as exc:
        raise _cannot_write(target, exc) from None
    return fd, Path(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    if str(path) == STDOUT:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target, through = _target(Path(path))
    if through:
        fd = _open_through(target)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise _cannot_write(target, exc) from None
        return
    with _signals_exit():
        fd, tmp = _temp_beside(target)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _cannot_write(target, exc) from None
            raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None):
    """A path for libraries that write by file name (matplotlib, pandas), moved into place on success:
    `with atomic_output(p) as tmp: fig.savefig(tmp)`. A device or FIFO target is handed over as it is."""
    if str(path) == STDOUT:
        raise InputError(f"{STDOUT}: this output is a file kvplan writes by name (a plot, a Parquet table); "
                         "give a path, not standard output")
    target, through = _target(Path(path))
    if through:
        os.close(_open_through(target))  # refuses a FIFO without a reader before the library blocks on it
        try:
            yield target
        except OSError as exc:  # /dev/full; a FIFO whose reader left
            raise _cannot_write(target, exc) from None
        return
    with _signals_exit():
        fd, tmp = _temp_beside(target, target.suffix if suffix is None else suffix)
        os.close(fd)
        try:
            yield tmp
            os.replace(tmp, target)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _cannot_write(target, exc) from None
            raise


def symlink_atomic(path: Path, target: Path) -> None:
    """`path` becomes a relative symlink to `target` (a copy where symlinks are not allowed), in one rename."""
    with _signals_exit():
        fd, tmp = _temp_beside(path)
        os.close(fd)
        try:
            tmp.unlink()
            try:
                os.symlink(os.path.relpath(target, path.parent), tmp)
            except OSError:
                import shutil

                shutil.copyfile(target, tmp)
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _cannot_write(path, exc) from None
            raise
