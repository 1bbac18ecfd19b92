"""Exact weight bytes from safetensors headers: 8-byte little-endian length, then a JSON header.

Only headers are read, never tensor data, so a 140 GB checkpoint is sized in milliseconds. The
same summary serves local files and headers fetched from the Hub (kvplan.model.hub).

Counting rules (docs/online.md):
  * every tensor counts, so quantization scales, zero points and g_idx are included;
  * a tensor name is counted once even if several shards repeat it;
  * when the config ties the embeddings and the checkpoint still stores an lm_head of the same
    dtype and shape as the input embedding, the lm_head is not counted (engines load one copy);
  * tensors are split into text / vision / audio / projector components by name prefix.
"""

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..inputs import SAFETENSORS_FILE, SAFETENSORS_HEADER, SAFETENSORS_INDEX, open_regular, parse_json, read_json
from ..units import fmt_gib

_MAX_SHARDS = 100_000  # five-digit shard numbers

# Module names (a dotted segment near the front of a tensor name) that belong to a non-text part
# of a multimodal checkpoint. A generic projector feeds whichever tower exists, so it gets its own bucket.
_VISION_MODULES = {"vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "embed_vision",
                   "vision_embed"}
_AUDIO_MODULES = {"audio_tower", "audio_model", "audio_encoder", "embed_audio", "speech_encoder", "talker",
                  "token2wav"}
_PROJECTOR_MODULES = {"multi_modal_projector", "mm_projector", "connector"}
_PREFIX_SEGMENTS = 3  # `model.vision_tower.`, `thinker.audio_tower.`, `model.thinker.visual.` ...

_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "tok_embeddings.weight",
                       "embed_in.weight")
_LM_HEAD_SUFFIX = "lm_head.weight"


@dataclass(frozen=True)
class CheckpointBytes:
    total_bytes: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    num_tensors: int = 0
    files: tuple[str, ...] = ()
    source: str = ""
    # text / vision / audio / projector -> bytes; empty when only an index total is known
    bytes_by_component: dict[str, int] = field(default_factory=dict)


def header_length(prefix: bytes, where: str) -> int:
    """The header length encoded in a safetensors file's first 8 bytes."""
    if len(prefix) != 8:
        raise InputError(f"{where}: not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", prefix)
    if length <= 1 or length > SAFETENSORS_HEADER.max_bytes:
        raise InputError(f"{where}: safetensors header length {length} is not plausible "
                         f"(kvplan reads headers of up to {SAFETENSORS_HEADER.max_bytes:,} bytes)")
    return length


def parse_header(raw: bytes, length: int, where: str) -> dict:
    if len(raw) != length:
        raise InputError(f"{where}: safetensors header is truncated")
    header = parse_json(raw, f"{where}: safetensors header")
    if not isinstance(header, dict):
        raise InputError(f"{where}: safetensors header is not a JSON object")
    return header


def read_header(path: Path) -> dict:
    with open_regular(path, SAFETENSORS_FILE) as f:
        try:
            length = header_length(f.read(8), str(path))
            raw = f.read(length)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_header(raw, length, str(path))


def _offset(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64


def _entry(name: str, info, where: str) -> tuple[str, int, int, tuple[int, ...]]:
    """(dtype, begin, end, shape) of one tensor; offsets and dimensions must be integers >= 0 (no
    Infinity, NaN, floats or strings), as the format writes them."""
    try:
        begin, end = info["data_offsets"]
        dtype = info["dtype"]
        shape = info.get("shape", [])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"{where}: tensor {name!r} has no valid data_offsets/dtype") from None
    if not isinstance(dtype, str) or not _offset(begin) or not _offset(end):
        raise InputError(f"{where}: tensor {name!r} has no valid data_offsets/dtype")
    if end < begin:
        raise InputError(f"{where}: tensor {name!r} has negative size")
    if not isinstance(shape, list) or not all(_offset(d) for d in shape):
        raise InputError(f"{where}: tensor {name!r} has a shape that is not a list of integers >= 0")
    return dtype, begin, end, tuple(shape)


def tensor_sizes(header: dict, where: str) -> dict[str, tuple[str, int, tuple[int, ...]]]:
    """name -> (dtype, bytes, shape) for every tensor in one header."""
    sizes = {}
    for name, info in header.items():
        if name != "__metadata__":
            dtype, begin, end, shape = _entry(name, info, where)
            sizes[name] = (dtype, end - begin, shape)
    return sizes


def data_bytes(header: dict, where: str) -> int:
    """Length of the data buffer a header describes (its largest end offset)."""
    return max((_entry(name, info, where)[2] for name, info in header.items() if name != "__metadata__"), default=0)


def component_of(tensor_name: str) -> str:
    """text, vision, audio or projector, from the module names at the front of a tensor name."""
    for segment in tensor_name.split(".")[:_PREFIX_SEGMENTS]:
        if segment in _VISION_MODULES:
            return "vision"
        if segment in _AUDIO_MODULES:
            return "audio"
        if segment in _PROJECTOR_MODULES:
            return "projector"
    return "text"


def summarize_headers(headers: Iterable[tuple[str, dict]], *, source: str,
                      tied_embeddings: bool = False) -> CheckpointBytes:
    """Bytes per dtype and component over (file name, header) pairs, by the counting rules above."""
    tensors: dict[str, tuple[str, int, tuple[int, ...]]] = {}
    files: list[str] = []
    for file_name, header in headers:
        files.append(file_name)
        for name, entry in tensor_sizes(header, file_name).items():
            tensors.setdefault(name, entry)  # a name repeated across shards is one tensor
    notes = []
    dropped = _tied_lm_head(tensors) if tied_embeddings else None
    if dropped is not None:
        del tensors[dropped]
        notes.append("tied lm_head counted once")
    by_dtype: dict[str, int] = {}
    by_component: dict[str, int] = {}
    for name, (dtype, size, _) in tensors.items():
        by_dtype[dtype] = by_dtype.get(dtype, 0) + size
        component = component_of(name)
        by_component[component] = by_component.get(component, 0) + size
    if set(by_component) - {"text"}:
        notes.append(", ".join(f"{c} {fmt_gib(by_component[c])}"
                               for c in ("text", "vision", "audio", "projector") if c in by_component))
    label = f"{source} ({len(files)} file{'s' if len(files) != 1 else ''}{''.join('; ' + n for n in notes)})"
    return CheckpointBytes(sum(by_dtype.values()), by_dtype, len(tensors), tuple(files), source=label,
                           bytes_by_component=by_component)


def _tied_lm_head(tensors: dict[str, tuple[str, int, tuple[int, ...]]]) -> str | None:
    """The stored lm_head that duplicates a tied input embedding, if there is exactly one such pair."""
    heads = [n for n in tensors if n.endswith(_LM_HEAD_SUFFIX) and component_of(n) == "text"]
    embeds = [n for n in tensors if n.endswith(_EMBEDDING_SUFFIXES) and component_of(n) == "text"]
    if len(heads) != 1 or len(embeds) != 1:
        return None
    head, embed = tensors[heads[0]], tensors[embeds[0]]
    same = head[0] == embed[0] and head[2] == embed[2] and head[1] == embed[1]
    return heads[0] if same else None


def checkpoint_bytes(model_dir: Path, tied_embeddings: bool = False) -> CheckpointBytes | None:
    """Sum tensor bytes over the `*.safetensors` in `model_dir`; None when there are none.

    The shards a checkpoint should have come from its index (`weight_map`), else from numbered
    names (`model-00001-of-00004.safetensors`). When some are not on disk the headers present
    would undercount: the index's `metadata.total_size` answers instead, labelled with the missing
    shards; without it the checkpoint is refused, naming them.
    """
    files = sorted(model_dir.glob("*.safetensors"))
    index = model_dir / "model.safetensors.index.json"
    data = _read_index(index) if index.is_file() else None  # read once: it may be 32 MiB
    expected = _index_shards(data) if data is not None else _numbered_shards(p.name for p in files)
    missing = sorted(expected - {p.name for p in files})
    if missing:
        return _from_index(index, data, missing, len(expected)) if data is not None else _refuse_partial(model_dir, missing)
    if expected:
        files = [p for p in files if p.name in expected]
    if not files:
        return _from_index(index, data, [], 0) if data is not None else None
    return summarize_headers(((p.name, read_header(p)) for p in files), source="safetensors headers",
                             tied_embeddings=tied_embeddings)


_NUMBERED_SHARD = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.safetensors$")


def _numbered_shards(names) -> set[str]:
    """Every shard name that numbered shards on disk imply (stem-0000i-of-0000n for i in 1..n)."""
    expected = set()
    for name in names:
        m = _NUMBERED_SHARD.match(name)
        if m and 0 < int(m["n"]) <= _MAX_SHARDS:
            expected |= {f"{m['stem']}-{i:05d}-of-{m['n']}.safetensors" for i in range(1, int(m["n"]) + 1)}
    return expected


def _shard_list(missing: list[str]) -> str:
    shown = ", ".join(missing[:3])
    return shown + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")


def _refuse_partial(model_dir: Path, missing: list[str]):
    raise InputError(f"{model_dir}: incomplete checkpoint, {len(missing)} shard(s) missing ({_shard_list(missing)}) "
                     "and no model.safetensors.index.json to size them from; download them, or give --weights SIZE")


def _read_index(index: Path) -> dict:
    data = read_json(index, SAFETENSORS_INDEX)
    if not isinstance(data, dict):
        raise InputError(f"{index}: expected a JSON object")
    return data


def _index_shards(data: dict) -> set[str]:
    weight_map = data.get("weight_map")
    return {str(v) for v in weight_map.values()} if isinstance(weight_map, dict) else set()


def _from_index(index: Path, data: dict, missing: list[str], num_shards: int) -> CheckpointBytes:
    gap = f"{len(missing)} of {num_shards} shards not on disk ({_shard_list(missing)})" if missing else ""
    try:
        total = data["metadata"]["total_size"]
        total = int(total) if not isinstance(total, bool) else None
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: Infinity
        total = None
    if total is None:
        raise InputError(f"{index}: no readable metadata.total_size" + (f" to stand in for {gap}" if gap else ""))
    if not 0 < total < 1 << 64:
        raise InputError(f"{index}: metadata.total_size must be a positive number of bytes below 2**64")
    source = "model.safetensors.index.json metadata.total_size" + (f" ({gap})" if gap else "")
    return CheckpointBytes(total, {}, 0, (index.name,), source=source)
