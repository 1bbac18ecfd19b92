"""Model specs: layer groups per attention kind, normalized from HF configs or bundled files."""

from .loaders import DEFAULT_MODEL, LoadedModel, bundled_names, load_model, spec_from_numbers
from .kinds import ChunkedLocal, FullAttention, IndexedMLA, LayerGroup, MLALatent, RecurrentState, SlidingWindow, cdiv, ceil_bytes
from .spec import ModelSpec, ParamCount
from .normalize import spec_from_config

__all__ = [
    "DEFAULT_MODEL", "LoadedModel", "bundled_names", "load_model", "spec_from_numbers", "ChunkedLocal",
    "FullAttention", "IndexedMLA", "LayerGroup", "MLALatent", "ModelSpec", "ParamCount", "RecurrentState", "SlidingWindow",
    "cdiv", "ceil_bytes", "spec_from_config",
]
