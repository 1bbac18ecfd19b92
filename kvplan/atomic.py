"""Write output files atomically: a crash or Ctrl-C leaves the old file or the complete new one."""

import os
import tempfile
from pathlib import Path


def _umask_mode() -> int:
    """The mode a plain open() would give a new file (mkstemp makes them 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def atomic_output(path: str | os.PathLike, suffix: str | None = None):
    """A temp path beside `path` for libraries that write by file name (matplotlib, pandas);
    call `commit()` to move it into place. Use as: `with atomic_output(p) as tmp: fig.savefig(tmp)`."""
    return _AtomicPath(Path(path), suffix)


class _AtomicPath:
    def __init__(self, target: Path, suffix: str | None):
        self.target = target
        self.suffix = suffix if suffix is not None else target.suffix

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=f".tmp{self.suffix}", dir=self.target.parent)
        os.fchmod(fd, _umask_mode())
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            os.replace(self.tmp, self.target)
        else:
            self.tmp.unlink(missing_ok=True)
        return False
