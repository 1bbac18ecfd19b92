"""A checkpoint with shards missing never gives a silently small weight figure (issue 15)."""

import json

import pytest

from kvplan.cli import main
from kvplan.errors import InputError
from kvplan.model.safetensors import checkpoint_bytes
from test_safetensors_weights import CONFIG, write_safetensors


def _shards(tmp_path, present, total=3):
    sizes = {}
    for i in present:
        name = f"model-{i:05d}-of-{total:05d}.safetensors"
        sizes[name] = write_safetensors(tmp_path / name, {f"w{i}": ("BF16", [64, 64], 2)})
    return sizes


def _index(tmp_path, total=3, total_size=None):
    weight_map = {f"w{i}": f"model-{i:05d}-of-{total:05d}.safetensors" for i in range(1, total + 1)}
    index = {"weight_map": weight_map}
    if total_size is not None:
        index["metadata"] = {"total_size": total_size}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))


def test_missing_shards_counted_from_the_index_total_and_named(tmp_path):
    _shards(tmp_path, [1])
    _index(tmp_path, total_size=3 * 64 * 64 * 2)
    ckpt = checkpoint_bytes(tmp_path)
    assert ckpt.total_bytes == 3 * 64 * 64 * 2
    assert "2 of 3 shards not on disk" in ckpt.source and "model-00002-of-00003.safetensors" in ckpt.source


def test_missing_shards_without_an_index_total_are_refused_by_name(tmp_path):
    _shards(tmp_path, [1, 3])
    _index(tmp_path)
    with pytest.raises(InputError, match="model-00002-of-00003.safetensors"):
        checkpoint_bytes(tmp_path)


def test_numbered_shards_without_an_index_are_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    _shards(tmp_path, [1, 2])
    assert main(["estimate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "incomplete checkpoint" in err and "model-00003-of-00003.safetensors" in err


def test_a_complete_numbered_checkpoint_is_summed(tmp_path):
    sizes = _shards(tmp_path, [1, 2, 3])
    assert checkpoint_bytes(tmp_path).total_bytes == sum(sizes.values())
