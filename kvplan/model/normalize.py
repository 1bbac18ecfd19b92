"""HF `config.json` dict -> ModelSpec, without transformers and without running repo code.

Order of business: pick the text config (multimodal wrappers nest it), resolve alias keys, fill
class defaults for configs that rely on them, decide each layer's attention kind, then group
consecutive-or-not layers of equal shape. Anything it cannot decide fails closed.
"""

import math
from typing import Any

from ..dtypes import torch_dtype_to_format
from ..errors import InputError, UnsupportedModelError
from ..inputs import check_layers
from .kinds import KINDS, LayerGroup
from .spec import ModelSpec
from .params import LIGHTNING_FAMILIES, count_params

# Alias keys used by older or non-Llama configs, mapped to the Llama names.
_ALIASES = {
    "num_hidden_layers": ("n_layer", "n_layers", "num_layers"),
    "num_attention_heads": ("n_head", "n_heads", "num_heads"),
    "hidden_size": ("n_embd", "n_embed", "d_model", "dim"),
    "max_position_embeddings": ("n_positions", "max_seq_len", "seq_length", "max_sequence_length"),
    "intermediate_size": ("n_inner", "ffn_hidden_size", "ffn_dim"),
}

# Class defaults that official configs leave out (transformers fills them in; we must too).
_CLASS_DEFAULTS = {
    "gemma3_text": {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208,
                    "max_position_embeddings": 131072, "sliding_window": 4096, "sliding_window_pattern": 6,
                    "tie_word_embeddings": True},
    "gemma2": {"head_dim": 256, "sliding_window": 4096, "tie_word_embeddings": True},
    "gemma": {"tie_word_embeddings": True},
    "falcon": {"multi_query": True, "num_attention_heads": 71, "num_hidden_layers": 32, "tie_word_embeddings": True,
               "parallel_attn": True},
    "RefinedWebModel": {"multi_query": True, "tie_word_embeddings": True, "parallel_attn": True},
    "RefinedWeb": {"tie_word_embeddings": True, "parallel_attn": True},
    "qwen3_next": {"full_attention_interval": 4, "linear_conv_kernel_dim": 4},
}

# model_types whose attention layout kvplan knows (dense, GQA/MQA, windows, MLA, hybrids).
KNOWN_MODEL_TYPES = {
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "gemma",
    "gemma2", "gemma3_text", "gpt_oss", "deepseek_v2", "deepseek_v3", "kimi_k2", "phi3", "phi",
    "gpt2", "gpt_bigcode", "gptj", "gpt_neox", "falcon", "mpt", "bloom", "starcoder2", "olmo", "olmo2",
    "granite", "cohere", "internlm2", "stablelm", "llama4_text", "jamba", "mamba", "falcon_mamba",
    "glm4_moe", "exaone", "minicpm", "codegen", "RefinedWeb", "RefinedWebModel",
    "deepseek", "minimax", "minimax_m1", "minimax_text_01",
}
# MiniMax-Text-01 / M1 name each layer in `attn_type_list`: 0 lightning (linear) attention, 1 softmax.
_ATTN_TYPE_LIST = {0: "state", 1: "full"}
_WRAPPERS_WITH_TEXT_CONFIG = {"gemma3", "llama4", "mistral3", "qwen2_vl", "qwen2_5_vl", "llava", "mllama"}

_LAYER_TYPE_NAMES = {
    "full_attention": "full", "attention": "full", "global": "full", "full": "full",
    "sliding_attention": "sliding", "sliding": "sliding", "local": "sliding",
    "chunked_attention": "chunked",
    "linear_attention": "state", "mamba": "state", "linear": "state",
}


def spec_from_config(config: dict, *, name: str, source: str, allow_unknown: bool = False,
                     hf_id: str | None = None, params_official: str | None = None) -> ModelSpec:
    if not isinstance(config, dict):
        raise InputError(f"{source}: config must be a JSON object, got {type(config).__name__}")
    top = config
    cfg = _text_config(config)
    model_type = str(cfg.get("model_type") or top.get("model_type") or "").strip()
    # HF configs write null for "not set": treat it as absent, so defaults apply uniformly.
    cfg = {**{k: v for k, v in cfg.items() if v is not None}, "model_type": model_type}
    _resolve_aliases(cfg)  # before defaults: Falcon's n_head must not lose to its class default of 71
    for key, value in _CLASS_DEFAULTS.get(model_type, {}).items():
        if cfg.get(key) is None:
            cfg[key] = value
    _validate_int_fields(cfg, source)
    if "tie_word_embeddings" not in cfg and "tie_word_embeddings" in top:
        cfg["tie_word_embeddings"] = top["tie_word_embeddings"]

    is_mla = bool(cfg.get("kv_lora_rank"))
    if model_type not in KNOWN_MODEL_TYPES and not is_mla and not allow_unknown:
        label = model_type or "(no model_type)"
        raise UnsupportedModelError(
            f"{source}: unknown architecture {label!r}; kvplan cannot confirm its attention layout "
            "(pass --allow-unknown-arch to size it as standard attention, or --layers/--kv-heads/--head-dim)")

    num_layers = check_layers(_positive_int(cfg, "num_hidden_layers", source), f"{source}: num_hidden_layers")
    if model_type in ("mamba", "falcon_mamba"):
        heads = kv_heads = head_dim = 0
    else:
        heads = _positive_int(cfg, "num_attention_heads", source)
        kv_heads = _kv_heads(cfg, heads, source)
        head_dim = _head_dim(cfg, heads, source) if not is_mla else 0
        cfg["num_key_value_heads"], cfg["head_dim"] = kv_heads, head_dim
    kinds = _layer_kinds(cfg, num_layers, is_mla, source)
    groups = _build_groups(cfg, kinds, kv_heads, head_dim, source)

    quant = top.get("quantization_config") or cfg.get("quantization_config")
    weight_dtype, scope, compute_dtype = _checkpoint_format(top, cfg, quant)
    group_of = {i: g for g in groups for i in g.layers}
    params = count_params(cfg, [group_of[i] for i in range(num_layers)]) if cfg.get("hidden_size") else None
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
    return ModelSpec(
        name=name, model_type=model_type, groups=groups, num_layers=num_layers,
        hidden_size=cfg.get("hidden_size"), num_attention_heads=heads or None,
        head_dim=(head_dim or cfg.get("qk_nope_head_dim", 0) + cfg.get("qk_rope_head_dim", 0)) or None,
        mlp_width_per_token=_mlp_width(cfg, experts),
        vocab_size=cfg.get("vocab_size"), max_position_embeddings=cfg.get("max_position_embeddings"),
        params=params, weight_dtype=weight_dtype, quantized_scope=scope, compute_dtype=compute_dtype,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), num_experts=int(experts),
        source=source, hf_id=hf_id, params_official=params_official,
    )


def text_model_type(config: dict) -> str:
    """The model_type of the language model a config describes (nested text_config included)."""
    return str(_text_config(config).get("model_type") or config.get("model_type") or "").strip()


def checkpoint_format(config: dict) -> tuple[str, str, str]:
    """(weight storage, quantized scope, compute dtype) of a whole HF config dict."""
    cfg = _text_config(config)
    cfg["model_type"] = text_model_type(config)
    quant = config.get("quantization_config") or cfg.get("quantization_config")
    return _checkpoint_format(config, cfg, quant)


def _mlp_width(cfg: dict, experts: int) -> int | None:
    if experts:
        inter = cfg.get("moe_intermediate_size") or cfg.get("intermediate_size")
        if not inter:
            return None
        shared = cfg.get("shared_expert_intermediate_size") or inter * (cfg.get("n_shared_experts") or 0)
        return inter * cfg.get("num_experts_per_tok", 1) + shared
    return cfg.get("intermediate_size")


def _text_config(config: dict) -> dict:
    text = config.get("text_config")
    if isinstance(text, dict) and ("num_hidden_layers" not in config or config.get("model_type") in _WRAPPERS_WITH_TEXT_CONFIG):
        merged = dict(text)
        for key in ("torch_dtype", "dtype", "tie_word_embeddings"):
            if key not in merged and key in config:
                merged[key] = config[key]
        if not merged.get("model_type") and config.get("model_type"):
            merged["model_type"] = f"{config['model_type']}_text"
        return merged
    return dict(config)


def _resolve_aliases(cfg: dict) -> None:
    for canonical, aliases in _ALIASES.items():
        if cfg.get(canonical) is None:
            for alias in aliases:
                if cfg.get(alias) is not None:
                    cfg[canonical] = cfg[alias]
                    break


# Integer fields kvplan reads; wrong types fail here rather than deep inside the arithmetic.
_INT_FIELDS = (
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim",
    "intermediate_size", "vocab_size", "max_position_embeddings", "sliding_window", "max_window_layers",
    "attention_chunk_size", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
    "num_local_experts", "num_experts", "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size",
    "shared_expert_intermediate_size", "n_shared_experts", "first_k_dense_replace", "moe_layer_freq",
    "decoder_sparse_step", "sliding_window_pattern", "full_attention_interval", "linear_num_key_heads",
    "linear_key_head_dim", "linear_num_value_heads", "linear_value_head_dim", "linear_conv_kernel_dim",
    "attn_layer_period", "attn_layer_offset", "no_rope_layer_interval", "num_kv_heads", "n_head_kv",
    "multi_query_group_num", "index_head_dim",
)
_MAX_FIELD = 1 << 40


# Fields used as divisors or periods: zero is as wrong as negative.
_POSITIVE_FIELDS = {"sliding_window_pattern", "full_attention_interval", "attn_layer_period", "no_rope_layer_interval",
                    "moe_layer_freq", "decoder_sparse_step", "num_experts_per_tok", "linear_conv_kernel_dim"}


def _validate_int_fields(cfg: dict, source: str) -> None:
    for key in _INT_FIELDS + tuple(_POSITIVE_FIELDS):
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = cfg[key] = int(value)
        minimum = 1 if key in _POSITIVE_FIELDS else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value > _MAX_FIELD:
            kind = "positive" if minimum else "non-negative"
            raise InputError(f"{source}: {key} must be a {kind} integer, got {value!r:.40}")
    for key in ("layer_types", "no_rope_layers", "mlp_only_layers", "attn_type_list"):
        if cfg.get(key) is not None and not isinstance(cfg[key], list):
            raise InputError(f"{source}: {key} must be a list, got {type(cfg[key]).__name__}")


def _positive_int(cfg: dict, key: str, source: str) -> int:
    value = cfg.get(key)
    if value is None:
        raise InputError(f"{source}: config has no {key!r} (nor an alias of it); cannot size the model")
    return _as_positive_int(value, key, source)


def _as_positive_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{source}: {key} must be a positive integer, got {value!r}")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise InputError(f"{source}: {key} must be a positive integer, got {value!r}")
    value = int(value)
    if value <= 0:
        raise InputError(f"{source}: {key} must be a positive integer, got {value}")
    if value > 1 << 31:
        raise InputError(f"{source}: {key}={value} is implausibly large")
    return value


def _kv_heads(cfg: dict, heads: int, source: str) -> int:
    model_type = cfg["model_type"]
    if model_type in ("falcon", "RefinedWeb", "RefinedWebModel"):
        # RefinedWeb (40B) configs give n_head_kv without new_decoder_architecture; it implies it
        if cfg.get("new_decoder_architecture") or cfg.get("n_head_kv") is not None:
            kv = cfg.get("num_kv_heads", cfg.get("n_head_kv", heads))
        elif cfg.get("multi_query", True):
            kv = 1
        else:
            kv = heads
    elif cfg.get("num_key_value_heads") is not None:
        kv = cfg["num_key_value_heads"]
    elif cfg.get("n_head_kv") is not None:
        kv = cfg["n_head_kv"]
    elif cfg.get("num_kv_heads") is not None:
        kv = cfg["num_kv_heads"]
    elif cfg.get("multi_query_group_num") is not None:
        kv = cfg["multi_query_group_num"]
    elif isinstance(cfg.get("attn_config"), dict) and cfg["attn_config"].get("kv_n_heads"):
        kv = cfg["attn_config"]["kv_n_heads"]
    elif cfg.get("multi_query"):
        kv = 1
    else:
        kv = heads
    kv = _as_positive_int(kv, "num_key_value_heads", source)
    if heads % kv:
        raise InputError(f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
    return kv


def _head_dim(cfg: dict, heads: int, source: str) -> int:
    explicit = cfg.get("head_dim")
    if explicit is not None:
        return _as_positive_int(explicit, "head_dim", source)
    hidden = cfg.get("hidden_size")
    if hidden is None:
        raise InputError(f"{source}: config has neither head_dim nor hidden_size; cannot size the KV heads")
    hidden = _as_positive_int(hidden, "hidden_size", source)
    if hidden % heads:
        raise InputError(f"{source}: hidden_size={hidden} is not divisible by num_attention_heads={heads} and no head_dim is given")
    return hidden // heads


def _layer_kinds(cfg: dict, n: int, is_mla: bool, source: str) -> list[str]:
    """One kind name of kinds.KINDS per layer."""
    model_type = cfg["model_type"]
    if is_mla:  # DeepSeek V3.2 / GLM DSA add a sparse-attention indexer key to the latent
        return ["indexed_mla" if cfg.get("index_head_dim") else "mla"] * n
    if model_type in ("mamba", "falcon_mamba"):
        return ["state"] * n
    layer_types = cfg.get("layer_types")
    if layer_types is not None:
        if not isinstance(layer_types, list) or len(layer_types) != n:
            raise InputError(f"{source}: layer_types must list {n} entries (num_hidden_layers), got {layer_types!r:.80}")
        kinds = []
        for t in layer_types:
            kind = _LAYER_TYPE_NAMES.get(str(t))
            if kind is None:
                raise UnsupportedModelError(f"{source}: unknown layer type {t!r} in layer_types")
            kinds.append(kind)
        return _drop_unusable_windows(cfg, kinds)
    attn_types = cfg.get("attn_type_list")
    if attn_types is not None:
        if len(attn_types) != n or any(t not in _ATTN_TYPE_LIST for t in attn_types):
            raise InputError(f"{source}: attn_type_list must list {n} entries of 0 (linear) or 1 (softmax), "
                             f"got {attn_types!r:.80}")
        return [_ATTN_TYPE_LIST[t] for t in attn_types]
    window = cfg.get("sliding_window")
    if model_type == "qwen3_next":
        interval = cfg["full_attention_interval"]
        return ["full" if (i + 1) % interval == 0 else "state" for i in range(n)]
    if model_type == "jamba":
        period, offset = cfg.get("attn_layer_period", 8), cfg.get("attn_layer_offset", 4)
        return ["full" if i % period == offset else "state" for i in range(n)]
    if model_type == "llama4_text" and cfg.get("attention_chunk_size"):
        no_rope = cfg.get("no_rope_layers")
        if not no_rope:
            interval = cfg.get("no_rope_layer_interval", 4)
            no_rope = [int((i + 1) % interval != 0) for i in range(n)]
        if len(no_rope) != n:
            raise InputError(f"{source}: no_rope_layers must list {n} entries (num_hidden_layers), got {len(no_rope)}")
        return ["chunked" if no_rope[i] else "full" for i in range(n)]
    if model_type in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe"):
        if not (cfg.get("use_sliding_window") and window):
            return ["full"] * n
        first = cfg.get("max_window_layers", n)
        return ["sliding" if i >= first else "full" for i in range(n)]
    if not window:
        return ["full"] * n
    if model_type == "gemma2" or model_type == "gpt_oss":
        return ["sliding" if (i + 1) % 2 else "full" for i in range(n)]
    if model_type == "gemma3_text":
        pattern = cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or 6
        return ["sliding" if (i + 1) % pattern else "full" for i in range(n)]
    # Mistral v0.1, Phi-3, Starcoder2, ...: a window on every layer (as transformers' cache does).
    return ["sliding"] * n


def _drop_unusable_windows(cfg: dict, kinds: list[str]) -> list[str]:
    """A 'sliding' layer with no window configured attends fully."""
    if "sliding" in kinds and not cfg.get("sliding_window"):
        return ["full" if k == "sliding" else k for k in kinds]
    if "chunked" in kinds and not cfg.get("attention_chunk_size"):
        return ["full" if k == "chunked" else k for k in kinds]
    return kinds


def _build_groups(cfg: dict, kinds: list[str], kv_heads: int, head_dim: int, source: str) -> tuple[LayerGroup, ...]:
    by_kind: dict[str, list[int]] = {}
    for i, kind in enumerate(kinds):
        by_kind.setdefault(kind, []).append(i)
    fields = _KindFields(cfg, kv_heads, head_dim, source)
    return tuple(cls.from_config(tuple(by_kind[name]), fields) for name, cls in KINDS.items() if name in by_kind)


class _KindFields:
    """What a kind's `from_config` reads: the shared head shape, positive config fields, the family's state."""

    def __init__(self, cfg: dict, kv_heads: int, head_dim: int, source: str):
        self.cfg, self.kv_heads, self.head_dim, self.source = cfg, kv_heads, head_dim, source

    def positive_int(self, key: str) -> int:
        return _as_positive_int(self.cfg.get(key), key, self.source)

    def recurrent_state_elems(self) -> tuple[int, int]:
        return _state_elems(self.cfg, self.source)


def _state_elems(cfg: dict, source: str) -> tuple[int, int]:
    """(conv, ssm) state elements per layer of a recurrent family."""
    model_type = cfg["model_type"]
    if model_type == "qwen3_next":
        need = ("linear_num_key_heads", "linear_key_head_dim", "linear_num_value_heads", "linear_value_head_dim")
        k_heads, k_dim, v_heads, v_dim = (_positive_int(cfg, key, source) for key in need)
        kernel = _positive_int(cfg, "linear_conv_kernel_dim", source)
        conv_dim = 2 * k_heads * k_dim + v_heads * v_dim
        return conv_dim * (kernel - 1), v_heads * k_dim * v_dim
    if model_type in ("mamba", "falcon_mamba", "jamba"):
        hidden = _positive_int(cfg, "hidden_size", source)
        prefix = "mamba_" if model_type == "jamba" else ""
        expand = cfg.get(f"{prefix}expand", 2)
        inner = cfg.get("intermediate_size") if model_type != "jamba" else None
        inner = _as_positive_int(inner or expand * hidden, "intermediate_size", source)
        d_state = _as_positive_int(cfg.get(f"{prefix}d_state", cfg.get("state_size", 16)), "state_size", source)
        d_conv = _as_positive_int(cfg.get(f"{prefix}d_conv", cfg.get("conv_kernel", 4)), "conv_kernel", source)
        return inner * (d_conv - 1), inner * d_state
    if model_type in LIGHTNING_FAMILIES or cfg.get("attn_type_list") is not None:
        # MiniMax lightning attention keeps one K^T V matrix per head, no conv
        heads = _positive_int(cfg, "num_attention_heads", source)
        return 0, heads * cfg["head_dim"] * cfg["head_dim"]
    raise UnsupportedModelError(f"{source}: linear-attention layers of {model_type!r} have no known state shape")


def _checkpoint_format(top: dict, cfg: dict, quant) -> tuple[str, str, str]:
    """(weight storage, quantized scope, compute dtype) from torch_dtype and quantization_config.

    A quantization kvplan cannot size from the config is "unknown:<what>": weights then come only
    from safetensors headers or --weights, never from a guess."""
    dtype = top.get("torch_dtype") or top.get("dtype") or cfg.get("torch_dtype") or cfg.get("dtype")
    compute = torch_dtype_to_format(dtype)
    if not quant:
        return compute, "linear", compute
    if not isinstance(quant, dict):
        return "unknown:quantization_config", "linear", compute
    method = str(quant.get("quant_method") or "").lower()
    if method in ("awq", "gptq"):
        bits = quant.get("bits", quant.get("w_bit", 4))
        storage = {4: method, 8: "int8"}.get(bits, f"unknown:{method} {bits}-bit")
    elif method in ("fp8", "mxfp4"):
        storage = method
    elif method == "modelopt":
        algo = str(quant.get("quant_algo") or (quant.get("quantization") or {}).get("quant_algo") or "").upper()
        storage = {"FP8": "fp8", "NVFP4": "nvfp4"}.get(algo, f"unknown:modelopt {algo or '?'}")
    elif method == "compressed-tensors":
        storage = _compressed_tensors_format(quant)
    else:
        storage = f"unknown:{method or 'quantization'}"
    scope = "experts" if method == "mxfp4" and cfg["model_type"] == "gpt_oss" else "linear"
    return storage, scope, compute


def _compressed_tensors_format(quant: dict) -> str:
    groups = quant.get("config_groups")
    weights = [g.get("weights") for g in groups.values() if isinstance(g, dict)] if isinstance(groups, dict) else []
    kinds = {(w.get("num_bits"), w.get("type")) for w in weights if isinstance(w, dict)}
    if len(kinds) != 1:
        return "unknown:compressed-tensors"
    return {(8, "float"): "fp8", (8, "int"): "int8", (4, "int"): "int4", (4, "float"): "nvfp4"}.get(
        kinds.pop(), "unknown:compressed-tensors")
