"""transformers models for the engine: from a local checkpoint (offline) or random weights from a config.

Either way the model is built in the engine's dtype directly on the device with attention
implementation "kvplan_paged". Repo code is never run (`trust_remote_code` is never set), nothing
is downloaded (`local_files_only=True`). What the paged engine cannot compute faithfully fails
here, before a pool is allocated: MLA, linear-attention / state layers, chunked local attention,
multimodal wrappers and families it has not been validated on.
"""

import copy
import inspect
from dataclasses import dataclass

import torch

from ..errors import InputError, UnsupportedModelError
from ..model import LoadedModel, ModelSpec
from ..model.kinds import RUNTIME
from . import attention

# Families whose attention goes through transformers' attention interface with standard causal
# semantics and that the engine tests check against transformers' own forward.
SUPPORTED_MODEL_TYPES = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
    "gpt_oss",
}
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LoadedEngineModel:
    model: torch.nn.Module
    hf_config: object  # a copy of the model's config: another model built from it leaves this one's attention alone
    dtype: torch.dtype
    device: torch.device
    weights_bytes: int  # parameter + buffer storage, tied tensors once
    random_weights: bool


def check_supported(spec: ModelSpec) -> None:
    """Fail closed on attention the paged engine does not implement."""
    for group in spec.groups:
        if RUNTIME not in group.engines:
            raise UnsupportedModelError(f"{spec.name}: the paged engine does not support {group.label} layers "
                                        "(kvplan estimate and simulate still size it)")
    if spec.model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(f"{spec.name}: model_type {spec.model_type!r} is not validated with the paged "
                                    f"engine (supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})")


def engine_dtype(compute_dtype: str) -> torch.dtype:
    """The torch dtype the engine computes in: bf16/fp16/fp32 (kvplan.plan.dtype_plan decides which)."""
    return TORCH_DTYPES[compute_dtype]


def load_engine_model(loaded: LoadedModel, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                      random_weights: bool | None = None, seed: int = 0) -> LoadedEngineModel:
    """`random_weights=None` means: weights from the checkpoint when `loaded` has one, random otherwise."""
    check_supported(loaded.spec)
    device = torch.device(device)
    dtype = dtype or engine_dtype(loaded.spec.compute_dtype)
    has_weights = loaded.model_dir is not None and loaded.checkpoint is not None
    if random_weights is None:
        random_weights = not has_weights
    if not random_weights and not has_weights:
        raise InputError(f"{loaded.spec.name}: no local checkpoint (safetensors) to load; use random weights")
    attention.register()
    if random_weights:
        model, config = _random_model(loaded, device, dtype, seed)
    else:
        model, config = _pretrained_model(loaded, device, dtype)
    model.eval().requires_grad_(False)
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        raise UnsupportedModelError(f"{type(model).__name__}.forward has no logits_to_keep; the engine needs it")
    # transformers builds a model around the config object it is given and sets the attention
    # implementation on it: a second model built from the same object would silently switch this
    # one's attention. The model keeps its own config; callers get a copy.
    return LoadedEngineModel(model, copy.deepcopy(config), dtype, device, tensor_bytes(model), random_weights)


def tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes of every distinct parameter and buffer storage (tied embeddings count once)."""
    from .memory import storage_bytes

    return storage_bytes(list(model.parameters()) + list(model.buffers()))


def hf_config_dict(loaded: LoadedModel) -> dict:
    """The text model's config fields for `AutoConfig.for_model` (wrappers unwrapped, quantization dropped)."""
    config = dict(loaded.config or {})
    text = config.get("text_config")
    if isinstance(text, dict) and config.get("model_type") != loaded.spec.model_type:
        config = {**text}
    config["model_type"] = loaded.spec.model_type
    for key in ("quantization_config", "auto_map", "architectures", "text_config", "vision_config", "torch_dtype",
                "dtype", "transformers_version", "_name_or_path"):
        config.pop(key, None)
    vocab = config.get("vocab_size")
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids past a shrunken vocabulary crash embedding
        value = config.get(key)
        ids = value if isinstance(value, list) else [value]
        if vocab and any(isinstance(i, int) and i >= vocab for i in ids):
            config[key] = None
    return config


def _random_model(loaded: LoadedModel, device: torch.device, dtype: torch.dtype, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    if loaded.config is None:
        raise InputError(f"{loaded.spec.name}: random weights need a config (a bundled spec, config.json or "
                         "model directory), not raw numbers")
    fields = hf_config_dict(loaded)
    model_type = fields.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type, **fields)
    except (ValueError, KeyError) as exc:
        raise UnsupportedModelError(f"{loaded.spec.name}: this transformers cannot build {model_type!r} ({exc})") from None
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the device: no host copy of an 8B model
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype,
                                                 attn_implementation=attention.ATTN_IMPLEMENTATION)
    return model, config


def _pretrained_model(loaded: LoadedModel, device: torch.device, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = loaded.config or {}
    if raw.get("quantization_config"):
        raise UnsupportedModelError(f"{loaded.spec.name}: quantized checkpoints are not loaded by the engine; "
                                    "profile with --random-weights --dtype bf16 instead")
    if isinstance(raw.get("text_config"), dict) and raw.get("model_type") != loaded.spec.model_type:
        raise UnsupportedModelError(f"{loaded.spec.name}: multimodal checkpoint ({raw.get('model_type')}); the engine "
                                    "runs text-only checkpoints (or --random-weights from the text config)")
    config = AutoConfig.from_pretrained(loaded.model_dir, local_files_only=True)
    # device_map needs accelerate; without it the weights load on the host and move once.
    placement = {"device_map": str(device)} if device.type != "cpu" and _has_accelerate() else {}
    model = AutoModelForCausalLM.from_pretrained(loaded.model_dir, config=copy.deepcopy(config), dtype=dtype,
                                                 attn_implementation=attention.ATTN_IMPLEMENTATION,
                                                 local_files_only=True, **placement)
    return model.to(device), config


def _has_accelerate() -> bool:
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None
