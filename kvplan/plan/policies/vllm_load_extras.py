"""Bytes vLLM allocates with the model that a text-model parameter count leaves out.

Both land in vLLM's "weights memory" / "Model loading took" figure:

- rotary cos/sin caches: `get_rope` builds one [positions, rotary_dim] buffer per distinct rope
  (shared by all layers using it) in the compute dtype. Positions are max_position_embeddings,
  times the factor for the linear, dynamic and YaRN scalings (which precompute the stretched
  range; "llama3" scaling does not). Gemma 3 has a second, unscaled rope for its local layers.
  Llama-3.1-8B: 131,072 x 128 x 2 B = 32 MiB, the 0.03 GiB between its parameters x 2 B and the
  logged 14.99 GiB.
- the vision encoder and projector of a multimodal checkpoint (kept in the compute dtype;
  quantized checkpoints leave them unquantized): SigLIP/CLIP-style towers (Gemma 3, LLaVA) and
  Pixtral (Mistral 3), counted from `vision_config`.
"""

from ...model import ModelSpec
from ..deployment import Deployment
from ..overhead import Term

SCALED_ROPE_TYPES = ("linear", "dynamic", "yarn", "deepseek_yarn")


def load_extra_terms(spec: ModelSpec, config: dict | None, dep: Deployment, act_elem_bytes: int) -> list[Term]:
    """What vLLM loads with the model beyond the text parameters (both in its 'weights memory')."""
    terms = [Term("rotary cos/sin cache", rotary_cache_bytes(spec, config, act_elem_bytes),
                  "positions (x rope scaling factor) x rotary dims x compute dtype, one per distinct rope")]
    if dep.weights_bytes is not None:  # --weights: the user's figure is the whole load
        return terms
    if spec.params is not None and spec.params.multimodal:  # introspection counted the towers into the weights
        return terms
    vision = vision_encoder_params(config)
    if vision is None:
        terms.append(Term("vision encoder", 0, "vision tower of unknown type: not counted (give --weights)"))
    elif vision:
        terms.append(Term("vision encoder", -(-vision * act_elem_bytes // dep.tp),
                          f"{vision:,} params in the compute dtype, vision_config"))
    return terms


def rope_scaling_factor(config: dict | None) -> float:
    """The factor a linear, dynamic or YaRN rope scaling stretches the positions by (1 otherwise)."""
    scaling = _text_config(config).get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        return 1.0
    rope_type = scaling.get("rope_type") or scaling.get("type")
    return float(scaling.get("factor", 1)) if rope_type in SCALED_ROPE_TYPES else 1.0


def scaled_positions(spec: ModelSpec, config: dict | None) -> int:
    """Positions a scaling rope covers: max_position_embeddings x factor, or for YaRN its
    original_max_position_embeddings x factor (vLLM's derived max_model_len and rotary cache length)."""
    scaling = _text_config(config).get("rope_scaling") or {}
    base = spec.max_position_embeddings or 0
    if isinstance(scaling, dict) and scaling.get("original_max_position_embeddings") and \
            (scaling.get("rope_type") or scaling.get("type")) == "yarn":
        base = int(scaling["original_max_position_embeddings"])
    return int(base * rope_scaling_factor(config))


def derived_max_model_len(spec: ModelSpec, config: dict | None) -> int | None:
    """vLLM's `_get_and_verify_max_len` (vllm/config/model.py); None when the model states no maximum.

    Gemma 3 is the exception vLLM names: "Gemma3's max_model_len (128K) is already scaled by RoPE
    scaling, so we skip applying the scaling factor again" (`"gemma3" not in hf_config.model_type`).
    Its rotary cache is still built for the scaled range (`rotary_cache_bytes`)."""
    if not spec.max_position_embeddings:
        return None
    if "gemma3" in str(_text_config(config).get("model_type") or (config or {}).get("model_type") or ""):
        return spec.max_position_embeddings
    return scaled_positions(spec, config)


def rotary_cache_bytes(spec: ModelSpec, config: dict | None, act_elem_bytes: int) -> int:
    text = _text_config(config)
    positions = spec.max_position_embeddings or 0
    rotary_dim = _rotary_dim(spec, text)
    caches = [scaled_positions(spec, config)]
    if text.get("rope_local_base_freq") is not None:  # Gemma 3: the local layers' unscaled rope
        caches.append(positions)
    return sum(caches) * rotary_dim * act_elem_bytes


def _rotary_dim(spec: ModelSpec, text: dict) -> int:
    heads = spec.num_attention_heads or 0
    head_dim = spec.head_dim or (spec.hidden_size // heads if heads and spec.hidden_size else 0)
    head_dim = int(head_dim * float(text.get("partial_rotary_factor", 1) or 1))
    return max((g.vllm_rotary_dim(head_dim) for g in spec.kv_groups()), default=head_dim)


def vision_encoder_params(config: dict | None) -> int | None:
    """Parameters of the vision tower and its projector; 0 for text-only configs, None for unknown towers."""
    vision = (config or {}).get("vision_config")
    if not isinstance(vision, dict):
        return 0
    tower = str(vision.get("model_type") or "")
    text_hidden = _text_config(config).get("hidden_size") or 0
    try:
        if tower in ("siglip_vision_model", "clip_vision_model"):
            return _siglip(vision) + _projector(config, vision, text_hidden)
        if tower == "pixtral":
            return _pixtral(vision) + _projector(config, vision, text_hidden)
    except (KeyError, TypeError):
        return None
    return None


def _siglip(v: dict) -> int:
    h, i, layers, patch = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"], v["patch_size"]
    channels = v.get("num_channels", 3)
    positions = (v["image_size"] // patch) ** 2
    per_layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h  # q/k/v/o, fc1, fc2, two LayerNorms
    return channels * patch * patch * h + h + positions * h + layers * per_layer + 2 * h


def _pixtral(v: dict) -> int:
    h, i, layers, patch = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"], v["patch_size"]
    per_layer = 4 * h * h + 3 * h * i + 2 * h  # q/k/v/o, gated MLP, two RMSNorms
    return v.get("num_channels", 3) * patch * patch * h + h + layers * per_layer


def _projector(config: dict, vision: dict, text_hidden: int) -> int:
    h = vision["hidden_size"]
    model_type = config.get("model_type")
    if model_type == "gemma3":  # mm_input_projection [h, text] + mm_soft_emb_norm
        return h * text_hidden + h
    if model_type == "mistral3":  # RMSNorm, 2x2 patch merger, two linears
        merge = config.get("spatial_merge_size", 2)
        return h + merge * merge * h * h + h * text_hidden + text_hidden * text_hidden
    return h * text_hidden + text_hidden * text_hidden  # LLaVA-style two-layer MLP


def _text_config(config: dict | None) -> dict:
    config = config or {}
    text = config.get("text_config")
    return text if isinstance(text, dict) else config
