"""Exact weight bytes from safetensors headers: 8-byte little-endian length, then a JSON header.

Only headers are read, never tensor data, so a 140 GB checkpoint is sized in milliseconds.
"""

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class CheckpointBytes:
    total_bytes: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    num_tensors: int = 0
    files: tuple[str, ...] = ()
    source: str = ""


def read_header(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise InputError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (length,) = struct.unpack("<Q", prefix)
            if length <= 0 or length > _MAX_HEADER_BYTES:
                raise InputError(f"{path}: safetensors header length {length} is not plausible")
            raw = f.read(length)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) != length:
        raise InputError(f"{path}: safetensors header is truncated")
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: safetensors header is not a JSON object")
    return header


def tensor_bytes(header: dict, path: Path) -> tuple[dict[str, int], int]:
    by_dtype: dict[str, int] = {}
    count = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            dtype = str(info["dtype"])
            size = int(end) - int(begin)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: tensor {name!r} has no valid data_offsets/dtype") from None
        if size < 0:
            raise InputError(f"{path}: tensor {name!r} has negative size")
        by_dtype[dtype] = by_dtype.get(dtype, 0) + size
        count += 1
    return by_dtype, count


def checkpoint_bytes(model_dir: Path) -> CheckpointBytes | None:
    """Sum tensor bytes over every `*.safetensors` in `model_dir`; None when there are none."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            return _from_index(index)
        return None
    by_dtype: dict[str, int] = {}
    count = 0
    for path in files:
        file_by_dtype, file_count = tensor_bytes(read_header(path), path)
        count += file_count
        for dtype, size in file_by_dtype.items():
            by_dtype[dtype] = by_dtype.get(dtype, 0) + size
    return CheckpointBytes(sum(by_dtype.values()), by_dtype, count, tuple(p.name for p in files),
                           source=f"safetensors headers ({len(files)} file{'s' if len(files) > 1 else ''})")


def _from_index(index: Path) -> CheckpointBytes:
    try:
        data = json.loads(index.read_text())
        total = int(data["metadata"]["total_size"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{index}: no readable metadata.total_size") from None
    if total <= 0:
        raise InputError(f"{index}: metadata.total_size must be positive")
    return CheckpointBytes(total, {}, 0, (index.name,), source="model.safetensors.index.json metadata.total_size")
