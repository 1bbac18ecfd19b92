"""Introspection: build the model from its config with transformers on the meta device, then read
its cache layout and parameter count from what was built.

No weights are allocated or downloaded, nothing is fetched (the config is a dict already), and
no repository code runs: only model classes that ship inside transformers are used. The result
is a plain JSON-able record (`RECORD_FORMAT`), cached per config digest by `introspect_cache`, so
a second look at the same model needs neither torch nor transformers.

How each figure is derived:
  - layer kinds and windows: transformers' own cache plan for the config
    (`get_layer_types_and_kwargs`: full / sliding (window) / chunked (chunk) / linear / hybrid /
    dummy per layer), the same plan its DynamicCache follows;
  - KV shapes: a 5-token forward pass on the meta device fills the model's own cache; each
    attention layer's cached K and V give KV heads, K head dim and V head dim. Two module facts
    override the cache, both where transformers stores more than serving engines do: a module
    declaring fewer KV heads than it caches (Falcon's new decoder broadcasts K/V before caching)
    keeps the declared count, and a module with `kv_lora_rank` is MLA (one latent of
    kv_lora_rank + qk_rope_head_dim per token);
  - recurrent state: the conv and recurrent state tensors the forward pass left in the cache
    (Mamba, Mamba2, Gated DeltaNet, lightning attention, ...); a conv state keeps kernel-1
    columns as serving engines do (transformers keeps kernel);
  - parameters: every parameter of the built model once (tied weights are one tensor), plus
    persistent 1-D float buffers (router score biases such as DeepSeek's e_score_correction_bias,
    which checkpoints store); split into linear / experts / embedding / lm_head / other, and
    vision, audio and projector towers counted apart (`multimodal`).
"""

import contextlib
import io
import logging
import math
import os
import warnings
from typing import Any

from ..errors import InputError, UnsupportedModelError
from ..inputs import MAX_LAYERS

RECORD_FORMAT = 2  # 2: kind names are kinds.KINDS keys (an MLA layer with an indexer is "indexed_mla")
_PROBE_TOKENS = 5
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class NotBuildable(UnsupportedModelError):
    """transformers cannot build this config at all (no such model class, repository code only)."""

# Keys that must not reach the config class: quantization would call for its kernels at build
# time (kvplan sizes quantized storage itself), and auto_map names repository code, never run.
_DROPPED_KEYS = ("quantization_config", "auto_map", "transformers_version")
# Sub-configs of the text model itself (MPT, DBRX) or of no model; any other dict-valued `*_config`
# (vision_config, audio_config, vq_config, encoder_config, ...) describes a tower beside the text model.
_NOT_TOWERS = {"text_config", "quantization_config", "attn_config", "ffn_config", "generation_config",
               "compression_config"}
_COMPONENTS = ("vision", "audio", "projector")
# transformers.cache_utils layer classes whose tensors mean what this module reads them as; a
# model's own cache layer (compressed, custom) is refused by name rather than misread.
_READABLE_CACHE_LAYERS = {"DynamicLayer", "DynamicSlidingWindowLayer", "DynamicIndexedLayer", "LinearAttentionLayer",
                          "LinearAttentionAndFullAttentionLayer", "LinearAttentionAndSlidingWindowAttentionLayer",
                          "DummyLayer"}


def describes_towers(config: dict) -> bool:
    """A config that writes out a vision, audio or other tower beside its text model."""
    return any(isinstance(value, dict) and (key.endswith("_config") or key == "visual") and key not in _NOT_TOWERS
               for key, value in config.items())


def introspect(config: dict, where: str) -> dict:
    """The record for one HF config dict; `where` names it in errors."""
    with _offline():
        return _introspect(config, where)


@contextlib.contextmanager
def _offline():
    """Nothing transformers builds may reach the Hub (a tower's config or code): offline while it runs."""
    saved = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    os.environ.update(dict.fromkeys(_OFFLINE_VARS, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _introspect(config: dict, where: str) -> dict:
    torch, transformers = _imports()
    hf_config = _hf_config(config, where, transformers)
    with _quiet(transformers):
        model, notes = _build(hf_config, where, torch)
        text = hf_config.get_text_config(decoder=True)
        layers = _cache_layers(model, text, where, torch)
    params, num_experts = _count_params(model, text, torch, describes_towers(config))
    return {
        "format": RECORD_FORMAT,
        "transformers_version": transformers.__version__,
        "model_class": type(model).__name__,
        "model_type": str(text.model_type or hf_config.model_type),
        "num_layers": len(layers),
        "layers": layers,
        "params": params,
        "num_experts": num_experts,
        "hidden_size": _int_attr(text, "hidden_size"),
        "num_attention_heads": _int_attr(text, "num_attention_heads"),
        "head_dim": _query_head_dim(text),
        "vocab_size": _int_attr(text, "vocab_size"),
        "max_position_embeddings": _int_attr(text, "max_position_embeddings"),
        "mlp_width_per_token": _mlp_width(text, num_experts),
        "tie_word_embeddings": bool(_flag(text, "tie_word_embeddings") or _flag(hf_config, "tie_word_embeddings")),
        "notes": notes,
    }


def _imports():
    try:
        import torch
        import transformers
        from transformers.cache_utils import get_layer_types_and_kwargs  # noqa: F401  (transformers >= 5.x)
    except ImportError as exc:  # checked by the caller first; a broken or old install still ends cleanly
        raise NotBuildable(f"introspection needs torch and transformers >= 5.23 ({_one_line(exc)})") from None
    return torch, transformers


@contextlib.contextmanager
def _quiet(transformers):
    """transformers warns about meta tensors, missing kernels and defaults: none of it is ours to print."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.disable(logging.WARNING)
            yield
    finally:
        logging.disable(logging.NOTSET)
        transformers.logging.set_verbosity(verbosity)


def _hf_config(config: dict, where: str, transformers):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise NotBuildable(f"{where}: config has no model_type; transformers cannot build it")
    if model_type not in CONFIG_MAPPING:
        raise NotBuildable(
            f"{where}: transformers {transformers.__version__} has no {model_type!r} model (it needs the "
            "repository's own code, which kvplan never runs)")
    fields = _special_floats({k: v for k, v in config.items() if k not in _DROPPED_KEYS and k != "model_type"})
    text = config.get("text_config")
    if isinstance(text, dict) and "tie_word_embeddings" in text and "tie_word_embeddings" not in config:
        # A wrapper's checkpoint keeps the lm_head its text config says (Mistral-Small-3.1: untied); transformers
        # 5 ties by the outer config, whose class default (True) would drop that lm_head from the count.
        fields["tie_word_embeddings"] = text["tie_word_embeddings"]
    try:
        with _quiet(transformers):
            hf_config = transformers.AutoConfig.for_model(model_type, **fields)
    except Exception as exc:  # strict config dataclasses reject inconsistent fields
        raise InputError(f"{where}: transformers rejects this {model_type} config ({_one_line(exc)})") from None
    layers = _int_attr(hf_config.get_text_config(decoder=True), "num_hidden_layers") or 0
    if layers > MAX_LAYERS:
        raise InputError(f"{where}: num_hidden_layers={layers} is implausibly large (at most {MAX_LAYERS})")
    return hf_config


_FLOAT_TAGS = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def _special_floats(value):
    """transformers writes inf/nan as {"__float__": "Infinity"} (Mamba2's time_step_limit) and reads them back so."""
    if isinstance(value, dict):
        if value.keys() == {"__float__"} and value["__float__"] in _FLOAT_TAGS:
            return _FLOAT_TAGS[value["__float__"]]
        return {k: _special_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_special_floats(v) for v in value]
    return value


def _build(hf_config, where: str, torch) -> tuple[Any, list[str]]:
    """The whole model (text and any towers) on the meta device; else the text model alone, noted."""
    from transformers.models.auto import modeling_auto as auto

    from transformers import PreTrainedConfig

    multimodal = hf_config.get_text_config(decoder=True) is not hf_config or any(
        isinstance(value, PreTrainedConfig) for value in vars(hf_config).values())  # a tower's sub-config
    wrappers = ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING", "MODEL_FOR_MULTIMODAL_LM_MAPPING")
    # a text config whose only generating class is a wrapper's (Mistral 4) builds through that class
    order = (*wrappers, "MODEL_FOR_CAUSAL_LM_MAPPING") if multimodal else ("MODEL_FOR_CAUSAL_LM_MAPPING", *wrappers)
    attempts = [(hf_config, order)]
    text = hf_config.get_text_config(decoder=True)
    if text is not hf_config:
        attempts.append((text, ("MODEL_FOR_CAUSAL_LM_MAPPING",)))
    failure = None
    for cfg, mappings in attempts:
        cls = _model_class(cfg, mappings, auto)
        if cls is None:
            continue
        try:
            with torch.device("meta"):
                model = cls._from_config(cfg, dtype=torch.bfloat16)
        except Exception as exc:
            failure = failure or exc
            continue
        why = _one_line(failure) if failure is not None else "no model class for it"
        notes = [] if cfg is hf_config else [
            f"only the text model was built: transformers could not build the whole {hf_config.model_type} model "
            f"({why}); its other towers are not counted"]
        return model, notes
    if failure is not None:
        raise NotBuildable(f"{where}: transformers cannot build this {hf_config.model_type} model ({_one_line(failure)})")
    raise NotBuildable(f"{where}: transformers has no causal language model class for {hf_config.model_type!r}")


def _model_class(cfg, mapping_names: tuple[str, ...], auto):
    for name in mapping_names:
        mapping = getattr(auto, name, None)
        if mapping is not None and type(cfg) in mapping:
            return mapping[type(cfg)]
    return None


# --- the cache ------------------------------------------------------------------------------------

def _cache_layers(model, text, where: str, torch) -> list[list[dict]]:
    """Per decoder layer, the list of what it caches: [] (nothing), one or two entries among
    {"kind": "full"|"sliding"|"chunked", ...}, {"kind": "mla"|"indexed_mla", ...}, {"kind": "state", ...}
    (kind names are kinds.KINDS keys)."""
    from transformers.cache_utils import Cache, get_layer_types_and_kwargs

    num_layers = _int_attr(text, "num_hidden_layers")
    if not num_layers:
        raise UnsupportedModelError(f"{where}: the text config has no num_hidden_layers")
    try:
        layer_types, layer_kwargs = get_layer_types_and_kwargs(text)
    except Exception as exc:
        raise UnsupportedModelError(f"{where}: transformers cannot plan this model's cache ({_one_line(exc)})") from None
    cache = _probe(model, where, torch, Cache)
    decoder_layers = _decoder_layers(model, num_layers, torch)
    cache_layers = list(getattr(cache, "layers", []) or [])
    extra = _per_layer_tensor_lists(cache, torch)
    out = []
    for i in range(num_layers):
        entry = cache_layers[i] if i < len(cache_layers) else None
        if entry is not None and not _readable(entry):
            raise UnsupportedModelError(f"{where}: layer {i} keeps a {type(entry).__name__} cache, which kvplan has "
                                        "no model of")
        module = decoder_layers[i] if decoder_layers is not None else None
        kinds = []
        attention = _attention_entry(entry, module, layer_types[i], layer_kwargs[i], where, i, torch)
        if attention is not None:
            kinds.append(attention)
        state = _state_entry(entry, [lst[i] for lst in extra if i < len(lst) and lst[i] is not None], torch)
        if state is not None:
            kinds.append(state)
        out.append(kinds)
    if not any(out):
        raise UnsupportedModelError(f"{where}: the forward pass left nothing in the cache; kvplan cannot size it")
    return out


def _probe(model, where: str, torch, cache_type):
    """The cache a 5-token forward pass leaves. Tried in turn until one returns a cache: the model as
    built; the same under `_MetaScalars` (masks and routers that read a value, which meta tensors do not
    hold); the text model alone (a wrapper whose forward insists on pixels or audio)."""
    ids = torch.zeros((1, _PROBE_TOKENS), dtype=torch.long, device="meta")
    failure = ran = None
    for target in _probe_targets(model):
        for scalars in (False, True):
            try:
                with torch.no_grad(), (_meta_scalars(torch) if scalars else contextlib.nullcontext()):
                    out = target(input_ids=ids, use_cache=True)
            except Exception as exc:
                failure = failure or exc
                continue
            values = out.values() if hasattr(out, "values") else ()
            cache = next((v for v in values if isinstance(v, cache_type)), None)
            if cache is not None:
                return cache
            ran = True
            break  # it ran and keeps no cache: reading scalars differently will not add one
    if failure is not None and not ran:
        raise UnsupportedModelError(f"{where}: a forward pass on the meta device failed in transformers' "
                                    f"{type(model).__name__} ({_one_line(failure)})") from None
    raise UnsupportedModelError(f"{where}: {type(model).__name__} returned no cache from its forward pass (it keeps "
                                "no KV cache as configured)")


def _probe_targets(model) -> list:
    """The whole model, then its language model where a wrapper holds one apart."""
    targets = [model]
    for holder in (model, getattr(model, "model", None)):
        language = getattr(holder, "language_model", None) if holder is not None else None
        if language is not None and all(language is not t for t in targets):
            targets.append(language)
    return targets


@contextlib.contextmanager
def _meta_scalars(torch):
    """Meta tensors hold no values: a scalar read (`.item()`, `bool(mask.all())`) answers 1/True and
    `nonzero` assumes every element is set (torch's own opt-in), so mask shortcuts and MoE routing
    run through to the cache. Cache shapes come from the config, not from these values, and are
    checked after (a layer caching other than the probe's tokens is refused)."""
    from torch.fx.experimental import _config as fx_config
    from torch.utils._python_dispatch import TorchDispatchMode

    scalar = torch.ops.aten._local_scalar_dense.default

    class _Scalars(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is scalar and args[0].device.type == "meta":
                tensor = args[0]
                return True if tensor.dtype == torch.bool else 1.0 if tensor.is_floating_point() else 1
            return func(*args, **(kwargs or {}))

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), _Scalars():
        yield


def _decoder_layers(model, num_layers: int, torch):
    """The text decoder's layer list (the first ModuleList of num_hidden_layers outside other towers)."""
    from .safetensors import component_of

    root = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name, module in root.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers and component_of(name) == "text":
            return module
    return None


def _attention_entry(entry, module, layer_type: str, kwargs: dict, where: str, index: int, torch) -> dict | None:
    keys, values = getattr(entry, "keys", None), getattr(entry, "values", None)
    if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor) or keys.dim() != 4:
        return None
    mla = _find_attr_module(module, ("kv_lora_rank", "qk_rope_head_dim"))
    indexer = getattr(entry, "indexer_keys", None)
    windowed = layer_type in ("sliding_attention", "hybrid_sliding", "chunked_attention")
    if mla is not None and windowed:
        raise UnsupportedModelError(f"{where}: layer {index} is MLA inside a sliding window, which kvplan has no "
                                    "model of")
    if mla is not None:
        record = {"kind": "mla", "kv_lora_rank": mla.kv_lora_rank, "qk_rope_head_dim": mla.qk_rope_head_dim}
        if isinstance(indexer, torch.Tensor) and indexer.dim() == 3:
            record.update(kind="indexed_mla", index_head_dim=int(indexer.shape[-1]))
        return record
    if isinstance(indexer, torch.Tensor):
        raise UnsupportedModelError(f"{where}: layer {index} is a sparse (indexed) attention layer without MLA, "
                                    "which kvplan has no model of")
    if keys.shape[2] != _PROBE_TOKENS and not (windowed and keys.shape[2] < _PROBE_TOKENS):
        raise UnsupportedModelError(f"{where}: layer {index} cached {keys.shape[2]} positions for {_PROBE_TOKENS} "
                                    "tokens (a compressed cache), which kvplan has no model of")
    cached_heads = int(keys.shape[1])
    heads = cached_heads
    declared = _declared_kv_heads(module)
    if declared and declared < cached_heads and cached_heads % declared == 0:
        heads = declared  # transformers broadcast K/V before caching; engines cache the projected heads
    record = {"kind": "full", "num_kv_heads": heads, "k_head_dim": int(keys.shape[-1]),
              "v_head_dim": int(values.shape[-1])}
    if layer_type in ("sliding_attention", "hybrid_sliding") and kwargs.get("sliding_window"):
        record.update(kind="sliding", window_tokens=int(kwargs["sliding_window"]))
    elif layer_type == "chunked_attention" and kwargs.get("sliding_window"):
        record.update(kind="chunked", window_tokens=int(kwargs["sliding_window"]))
    return record


def _declared_kv_heads(module) -> int | None:
    found = _find_attr_module(module, ("num_key_value_heads",)) or _find_attr_module(module, ("num_kv_heads",))
    if found is None:
        return None
    value = getattr(found, "num_key_value_heads", None)
    return value if isinstance(value, int) else getattr(found, "num_kv_heads", None)


def _find_attr_module(module, attrs: tuple[str, ...]):
    """The first submodule of a decoder layer carrying every one of `attrs` as a positive int."""
    if module is None:
        return None
    for sub in module.modules():
        if all(isinstance(getattr(sub, a, None), int) and not isinstance(getattr(sub, a), bool)
               and getattr(sub, a) > 0 for a in attrs):
            return sub
    return None


def _state_entry(entry, extra: list, torch) -> dict | None:
    """Constant per-request state of one layer, in elements (batch dimension dropped)."""
    conv = ssm = 0
    seen = False
    for idx, tensor in (getattr(entry, "conv_states", None) or {}).items():
        if isinstance(tensor, torch.Tensor):
            kernel = (getattr(entry, "conv_kernel_size", None) or {}).get(idx) or int(tensor.shape[-1])
            conv += math.prod(tensor.shape[1:-1]) * (kernel - 1)
            seen = True
    for tensor in (getattr(entry, "recurrent_states", None) or {}).values():
        if isinstance(tensor, torch.Tensor):
            ssm += math.prod(tensor.shape[1:])
            seen = True
    for tensor in extra:
        ssm += math.prod(tensor.shape[1:])
        seen = True
    return {"kind": "state", "conv_elems": conv, "ssm_elems": ssm} if seen else None


def _per_layer_tensor_lists(cache, torch) -> list[list]:
    """Per-layer state a model's own cache class keeps beside `layers` (MiniMax's linear_cache)."""
    return [[v if isinstance(v, torch.Tensor) else None for v in value] for name, value in vars(cache).items()
            if name != "layers" and isinstance(value, list) and any(isinstance(v, torch.Tensor) for v in value)]


def _readable(entry) -> bool:
    cls = type(entry)
    return cls.__name__ in _READABLE_CACHE_LAYERS and cls.__module__ == "transformers.cache_utils"


# --- parameters -----------------------------------------------------------------------------------

def _count_params(model, text, torch, towers_described: bool) -> tuple[dict, int]:
    """Tensors of towers the config does not describe (built from class defaults) are not counted."""
    from .safetensors import component_of

    module_of = dict(model.named_modules())
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    lm_head_ids = {id(p) for p in output.parameters()} if output is not None else set()
    counts = {"linear": 0, "experts": 0, "embedding": 0, "lm_head": 0, "other": 0, "multimodal": 0}
    routed_by_module: dict[str, int] = {}  # every tensor of each experts container, biases included
    for name, tensor in _tensors(model, torch):
        n = tensor.numel()
        if component_of(name) in _COMPONENTS:
            counts["multimodal"] += n if towers_described else 0
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module_of.get(owner_name)
        if isinstance(owner, torch.nn.Embedding):  # a tied lm_head is this same tensor, met once
            counts["embedding"] += n
        elif id(tensor) in lm_head_ids:
            counts["lm_head"] += n
        elif _experts_path(owner_name) is not None:
            path = _experts_path(owner_name)
            routed_by_module[path] = routed_by_module.get(path, 0) + n
            # matmul weights are what quantized checkpoints store low-bit; expert biases stay 16-bit
            counts["experts" if tensor.dim() >= 2 and not leaf.endswith("bias") else "other"] += n
        elif isinstance(owner, torch.nn.Linear) and leaf == "weight" and not _is_router(module_of, owner_name):
            counts["linear"] += n
        else:
            counts["other"] += n
    total = sum(v for k, v in counts.items() if k != "multimodal")
    active = None
    num_experts = 0
    if routed_by_module:
        active = total
        for path, n in routed_by_module.items():
            experts, top_k = _experts_and_top_k(module_of, path, text)
            num_experts = max(num_experts, experts)
            active -= n - n * top_k // experts
    return {**counts, "active": active}, num_experts


def _tensors(model, torch):
    """(name, tensor) for every parameter once and every persistent 1-D float buffer."""
    yield from model.named_parameters()
    for module_name, module in model.named_modules():
        skip = getattr(module, "_non_persistent_buffers_set", set())
        for leaf, buf in module.named_buffers(recurse=False):
            if buf is not None and leaf not in skip and buf.is_floating_point() and buf.dim() == 1:
                yield (f"{module_name}.{leaf}" if module_name else leaf), buf


def _is_router(module_of: dict, name: str) -> bool:
    """A linear layer beside a routed-experts container (router, shared-expert gate): engines keep it 16-bit."""
    parent = module_of.get(name.rpartition(".")[0])
    return parent is not None and hasattr(parent, "experts") and name.rpartition(".")[2] != "experts"


def _experts_path(module_name: str) -> str | None:
    """`...mlp.experts` for any module at or under a routed-experts container (not shared experts)."""
    parts = module_name.split(".")
    if "experts" not in parts:
        return None
    return ".".join(parts[:parts.index("experts") + 1])


def _experts_and_top_k(module_of: dict, path: str, text) -> tuple[int, int]:
    container = module_of[path]
    experts = getattr(container, "num_experts", None)
    if not isinstance(experts, int) or experts <= 0:
        tensors = list(container.parameters())
        experts = len(container) if hasattr(container, "__len__") else (tensors[0].shape[0] if tensors else 1)
    parent = module_of.get(path.rpartition(".")[0])
    top_k = None
    for holder in ([parent, *parent.children()] if parent is not None else []):
        for attr in ("top_k", "num_experts_per_tok", "moe_top_k"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                top_k = value
                break
        if top_k:
            break
    top_k = top_k or _int_attr(text, "num_experts_per_tok") or 1
    return int(experts), min(int(top_k), int(experts))


# --- config facts ---------------------------------------------------------------------------------

def _int_attr(cfg, name: str) -> int | None:
    """A positive int config attribute; None when absent, not an int, or per-layer (heterogeneous configs raise)."""
    try:
        value = getattr(cfg, name, None)
    except Exception:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _flag(cfg, name: str) -> bool:
    try:
        return bool(getattr(cfg, name, False))
    except Exception:
        return False


def _query_head_dim(text) -> int | None:
    explicit = _int_attr(text, "head_dim")
    if explicit:
        return explicit
    hidden, heads = _int_attr(text, "hidden_size"), _int_attr(text, "num_attention_heads")
    return hidden // heads if hidden and heads and hidden % heads == 0 else None


def _mlp_width(text, num_experts: int) -> int | None:
    """Intermediate width one token passes through (MoE: top_k routed experts plus shared ones)."""
    dense = _int_attr(text, "intermediate_size")
    if not num_experts:
        return dense
    per_expert = _int_attr(text, "moe_intermediate_size") or dense
    if not per_expert:
        return None
    top_k = _int_attr(text, "num_experts_per_tok") or 1
    shared = (_int_attr(text, "shared_expert_intermediate_size")
              or per_expert * (_int_attr(text, "n_shared_experts") or 0))
    return per_expert * top_k + shared


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
