"""Exact weight bytes from safetensors headers (only the header is read)."""

import json
import struct

import pytest

from kvplan.errors import InputError
from kvplan.plan import Deployment, estimate
from kvplan.model import load_model
from kvplan.model.safetensors import checkpoint_bytes

CONFIG = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "hidden_size": 64, "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 256,
          "torch_dtype": "bfloat16"}


def write_safetensors(path, tensors: dict[str, tuple[str, list[int], int]]):
    """tensors: name -> (dtype, shape, bytes per element). Writes a valid file with zeroed data."""
    header, offset = {}, 0
    for name, (dtype, shape, elem) in tensors.items():
        size = elem
        for d in shape:
            size *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return offset


def test_exact_bytes_across_shards_and_dtypes(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    a = write_safetensors(tmp_path / "model-00001-of-00002.safetensors",
                          {"embed": ("BF16", [100, 64], 2), "w1": ("I32", [64, 16], 4)})
    b = write_safetensors(tmp_path / "model-00002-of-00002.safetensors",
                          {"scales": ("F16", [64, 2], 2), "q": ("U8", [64, 32], 1)})
    ckpt = checkpoint_bytes(tmp_path)
    assert ckpt.total_bytes == a + b == 100 * 64 * 2 + 64 * 16 * 4 + 64 * 2 * 2 + 64 * 32
    assert ckpt.bytes_by_dtype == {"BF16": 12800, "I32": 4096, "F16": 256, "U8": 2048}
    e = estimate(load_model(str(tmp_path)), Deployment())
    assert e.weights_bytes == a + b and "safetensors" in e.weights_basis


def test_index_total_size_when_no_shards(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 123456}}))
    assert checkpoint_bytes(tmp_path).total_bytes == 123456


@pytest.mark.parametrize("payload,needle", [
    (b"\x01\x02", "shorter"),
    (struct.pack("<Q", 10**12), "not plausible"),
    (struct.pack("<Q", 20) + b"{oops", "truncated"),
    (struct.pack("<Q", 5) + b"{oops", "not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
])
def test_corrupt_headers_are_input_errors(tmp_path, payload, needle):
    (tmp_path / "model.safetensors").write_bytes(payload)
    with pytest.raises(InputError, match=needle):
        checkpoint_bytes(tmp_path)


def test_real_safetensors_file_if_library_present(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.zeros(3, 5, dtype=torch.bfloat16), "b": torch.zeros(7, dtype=torch.float32)}
    st.save_file(tensors, str(tmp_path / "model.safetensors"))
    assert checkpoint_bytes(tmp_path).total_bytes == 3 * 5 * 2 + 7 * 4
