"""Counting rules shared by local and Hub checkpoints, the sidecar, and when the Hub may be asked."""

import json
import struct

import pytest

from kvplan.errors import InputError
from kvplan.model import hub, load_model
from kvplan.model.safetensors import checkpoint_bytes, component_of, summarize_headers
from kvplan.userconfig import config_path, load_user_config


def header(**tensors) -> dict:
    """name=(dtype, shape, bytes per element) -> a safetensors header with consecutive offsets."""
    out, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape, elem) in tensors.items():
        size = elem
        for d in shape:
            size *= d
        out[name.replace("__", ".")] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    return out


def write(path, hdr: dict) -> None:
    raw = json.dumps(hdr).encode()
    end = max((v["data_offsets"][1] for k, v in hdr.items() if k != "__metadata__"), default=0)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(end))


@pytest.mark.parametrize("name,component", [
    ("model.layers.0.self_attn.q_proj.weight", "text"),
    ("lm_head.weight", "text"),
    ("model.language_model.layers.3.mlp.down_proj.weight", "text"),
    ("visual.blocks.0.attn.qkv.weight", "vision"),  # Qwen2-VL
    ("model.visual.merger.mlp.0.weight", "vision"),  # Qwen2.5-VL, transformers >= 4.52 layout
    ("vision_model.model.layers.0.self_attn.q_proj.weight", "vision"),  # Llama 4 / Mllama
    ("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", "vision"),  # Gemma 3, LLaVA
    ("model.embed_vision.embedding_projection.weight", "vision"),  # Gemma 3n
    ("model.audio_tower.conformer.0.ffw_layer_start.ffw_layer_1.weight", "audio"),  # Gemma 3n
    ("thinker.audio_tower.layers.0.fc1.weight", "audio"),  # Qwen2.5-Omni
    ("thinker.visual.blocks.0.mlp.gate_proj.weight", "vision"),
    ("talker.model.layers.0.mlp.up_proj.weight", "audio"),  # Omni speech generator
    ("multi_modal_projector.linear_1.weight", "projector"),
    ("model.multi_modal_projector.mm_input_projection_weight", "projector"),
    ("model.connector.modality_projection.proj.weight", "projector"),  # Idefics3 / SmolVLM
])
def test_components_by_name(name, component):
    assert component_of(name) == component


def test_repeated_names_count_once_and_components_sum_to_total():
    a = header(model__embed_tokens__weight=("BF16", [10, 4], 2), model__norm__weight=("BF16", [4], 2))
    b = header(model__norm__weight=("BF16", [4], 2), vision_tower__w=("F32", [3, 3], 4))
    ckpt = summarize_headers([("a", a), ("b", b)], source="t")
    assert ckpt.total_bytes == 80 + 8 + 36 and ckpt.num_tensors == 3
    assert ckpt.bytes_by_dtype == {"BF16": 88, "F32": 36}
    assert ckpt.bytes_by_component == {"text": 88, "vision": 36}
    assert sum(ckpt.bytes_by_component.values()) == ckpt.total_bytes
    assert ckpt.source == "t (2 files; text 88 B, vision 36 B)"


@pytest.mark.parametrize("tied,lm_head,expected", [
    (True, ("BF16", [10, 4], 2), 80),  # tied and identical: one copy
    (False, ("BF16", [10, 4], 2), 160),  # untied: both are weights
    (True, ("F32", [10, 4], 4), 80 + 160),  # tied in config but stored differently: not a duplicate
    (True, ("BF16", [12, 4], 2), 80 + 96),
])
def test_tied_lm_head(tied, lm_head, expected):
    hdr = header(model__embed_tokens__weight=("BF16", [10, 4], 2), lm_head__weight=lm_head)
    ckpt = summarize_headers([("m", hdr)], source="t", tied_embeddings=tied)
    assert ckpt.total_bytes == expected
    assert ("tied lm_head counted once" in ckpt.source) == (expected == 80)


def test_local_directory_uses_the_same_rules(tmp_path):
    cfg = {"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 4,
           "intermediate_size": 8, "vocab_size": 10, "max_position_embeddings": 64, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    write(tmp_path / "model.safetensors", header(model__embed_tokens__weight=("BF16", [10, 4], 2),
                                                 lm_head__weight=("BF16", [10, 4], 2)))
    assert load_model(str(tmp_path)).checkpoint.total_bytes == 80


def test_partial_download_falls_back_to_the_index_total(tmp_path):
    write(tmp_path / "model-00001-of-00002.safetensors", header(a=("BF16", [4], 2)))
    index = {"metadata": {"total_size": 1000}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                               "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = checkpoint_bytes(tmp_path)
    assert ckpt.total_bytes == 1000 and "total_size" in ckpt.source
    write(tmp_path / "model-00002-of-00002.safetensors", header(b=("F16", [6], 2)))
    assert checkpoint_bytes(tmp_path).total_bytes == 8 + 12


def test_sidecar_round_trip_and_corruption(tmp_path):
    snap = tmp_path / "models--acme--x" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    assert hub.cached_checkpoint(snap) is None and not hub.has_sidecar(snap)
    sidecar = hub.sidecar_path(snap)
    sidecar.parent.mkdir()
    sidecar.write_text(json.dumps({"format": hub.SIDECAR_FORMAT, "commit": "a" * 40,
                                   "files": {"model.safetensors": {"size_bytes": None,
                                                                   "header": header(w=("I32", [5], 4))}}}))
    ckpt = hub.cached_checkpoint(snap)
    assert ckpt.total_bytes == 20 and ckpt.source == f"safetensors headers via hub@{'a' * 12} (1 file)"
    sidecar.write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not a readable kvplan-safetensors-headers/1 file") as info:
        hub.cached_checkpoint(snap)
    assert "\n" not in str(info.value)
    assert hub.sidecar_path(tmp_path) is None  # not a snapshot of the HF cache


@pytest.mark.parametrize("ref,ok", [
    ("Qwen/Qwen3-8B", True), ("meta-llama/Llama-3.1-8B-Instruct", True), ("org/name.v2_x", True),
    ("gpt2", False), ("a/b/c", False), ("./config.json", False), ("org/config.json", False), ("/abs/x", False),
])
def test_repo_ids(ref, ok):
    assert hub.is_repo_id(ref) is ok


def test_who_decides_online(tmp_path, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "KVPLAN_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "kvplan" / "config.yaml"
    assert load_user_config() == {} and hub.online_enabled(None) is False
    assert hub.online_enabled(True) is True
    config_path().parent.mkdir()
    config_path().write_text("online: true\n")
    assert hub.online_enabled(None) is True and hub.online_enabled(False) is False
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_OFFLINE", "yes"), ("TRANSFORMERS_OFFLINE", "true")):
        monkeypatch.setenv(name, value)
        assert hub.online_enabled(True) is False and hub.offline_forced() == name
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.online_enabled(None) is True
