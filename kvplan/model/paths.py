"""Which path reads a config: the light normalizer or introspection (cached or fresh).

  1. A family the light normalizer knows (`normalize.KNOWN_MODEL_TYPES`, or any MLA config) and
     counts (`params.COUNTED_FAMILIES`) is read by it: no torch, no transformers; unless the config
     also describes a vision or audio tower, which only introspection counts. Bundled specs and
     configs that need repository code (Kimi-K2, old Falcon, MiniMax-M1, DeepSeek-MoE) live here.
  2. Otherwise a record cached for this exact config answers (still no torch).
  3. Otherwise, when torch and transformers are installed, introspection builds the model on the
     meta device (kvplan.model.introspect) and the record is cached for next time.
  4. Otherwise a known family keeps its light layout with weights unknown and a note on how to
     get them; an unknown family is refused with the same advice, or, only when the user passes
     --allow-unknown-arch, sized as standard attention and labelled a guess.
Tests run paths 1 and 3 on every bundled spec and test config and require the same answer.
"""

from dataclasses import replace
from importlib.util import find_spec

from ..errors import InputError, KvplanError, UnsupportedModelError
from ..extras import install_line
from .introspect import describes_towers
from .introspect_cache import config_digest, load_record, store_record
from .kinds import KINDS, LayerGroup
from .normalize import KNOWN_MODEL_TYPES, checkpoint_format, spec_from_config, text_model_type
from .params import COUNTED_FAMILIES
from .spec import ModelSpec, ParamCount

LIGHT = "light normalizer"
_KIND_ORDER = tuple(KINDS)


def introspection_available() -> bool:
    """torch and transformers importable (looked up without importing them)."""
    return find_spec("torch") is not None and find_spec("transformers") is not None


def spec_for_config(config: dict, *, name: str, source: str, allow_unknown: bool = False, hf_id: str | None = None,
                    params_official: str | None = None) -> ModelSpec:
    light = light_error = None
    if light_knows(config):
        try:
            light = spec_from_config(config, name=name, source=source, hf_id=hf_id, params_official=params_official)
        except KvplanError as exc:  # a family the light path only half knows may still build in transformers
            if counted_family(config):
                raise
            light_error = exc
        if light is not None and light.params is not None and not describes_towers(config):
            return light
    digest = config_digest(config)
    record = load_record(digest)
    if record is not None:
        spec = _spec_or_none(record, config, name, source, hf_id,
                             f"introspection (cached, transformers {record.get('transformers_version', '?')})")
        if spec is not None:
            return spec
    why = "transformers is not installed to build it"
    if introspection_available():
        from .introspect import NotBuildable, introspect

        try:
            record = introspect(config, source)
        except NotBuildable as exc:  # repository code only: the light layout, or a refusal, stands
            if light_error is not None:
                raise light_error from None
            why = str(exc).removeprefix(f"{source}: ")
        except InputError:  # transformers rejects the config too: the light path's reason names the user's field
            if isinstance(light_error, InputError):
                raise light_error from None
            raise
        else:
            store_record(digest, record)
            return spec_from_record(record, config, name=name, source=source, hf_id=hf_id,
                                    derivation=f"introspection (transformers {record['transformers_version']})")
    if light_error is not None:
        raise light_error
    if light is not None and light.params is not None:  # only its towers are beyond the light path
        return replace(light, notes=light.notes + (
            f"vision/audio towers not in the parameter count: {why}; {_way_out()}--weights SIZE, or a model "
            "directory with safetensors, gives exact weights",))
    if light is not None:
        return replace(light, notes=light.notes + (
            f"no parameter count for {light.model_type}: {why}; {_way_out()}--weights SIZE, or a model directory "
            "with safetensors, gives exact weights",))
    model_type = text_model_type(config) or "(no model_type)"
    if allow_unknown:
        guess = spec_from_config(config, name=name, source=source, allow_unknown=True, hf_id=hf_id)
        return replace(guess, derivation=f"{LIGHT}, guessed as standard attention (--allow-unknown-arch)",
                       notes=guess.notes + (f"{model_type!r} is unknown to kvplan and {why}: its layout is a guess",))
    raise UnsupportedModelError(
        f"{source}: unknown architecture {model_type!r}: kvplan's light normalizer does not know it and {why}; "
        f"{_way_out()}give --layers/--kv-heads/--head-dim with --weights SIZE (or a model directory with safetensors)")


def _way_out() -> str:
    return "" if introspection_available() else f"install transformers for exact figures ({install_line('introspect')}), or "


def light_knows(config: dict) -> bool:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    return text_model_type(config) in KNOWN_MODEL_TYPES or bool(text.get("kv_lora_rank"))


def counted_family(config: dict) -> bool:
    return text_model_type(config) in COUNTED_FAMILIES


def _spec_or_none(record: dict, config: dict, name: str, source: str, hf_id: str | None, derivation: str):
    """A cached record that does not hold together is a miss, never an answer."""
    try:
        return spec_from_record(record, config, name=name, source=source, hf_id=hf_id, derivation=derivation)
    except (KeyError, TypeError, ValueError, KvplanError):
        return None


def spec_from_record(record: dict, config: dict, *, name: str, source: str, hf_id: str | None,
                     derivation: str) -> ModelSpec:
    weight_dtype, scope, compute = checkpoint_format(config)
    params = record["params"]
    counts = {k: _count(params.get(k)) for k in ("linear", "experts", "embedding", "lm_head", "other", "multimodal")}
    active = params.get("active")
    return ModelSpec(
        name=name, model_type=str(record["model_type"]), groups=groups_from_layers(record["layers"]),
        num_layers=_count(record["num_layers"], positive=True), hidden_size=_opt(record.get("hidden_size")),
        num_attention_heads=_opt(record.get("num_attention_heads")), head_dim=_opt(record.get("head_dim")),
        mlp_width_per_token=_opt(record.get("mlp_width_per_token")), vocab_size=_opt(record.get("vocab_size")),
        max_position_embeddings=_opt(record.get("max_position_embeddings")),
        params=ParamCount(**counts, active=None if active is None else _count(active)),
        weight_dtype=weight_dtype, compute_dtype=compute, quantized_scope=scope,
        tie_word_embeddings=bool(record.get("tie_word_embeddings")), num_experts=_count(record.get("num_experts") or 0),
        source=source, derivation=derivation, hf_id=hf_id, notes=tuple(str(n) for n in record.get("notes") or ()),
    )


def groups_from_layers(layers: list) -> tuple[LayerGroup, ...]:
    """Per-layer cache entries -> groups of layers sharing one kind and shape, in the light path's order."""
    by_shape: dict[tuple, list[int]] = {}
    for index, entries in enumerate(layers):
        for entry in entries:
            key = tuple(sorted(entry.items()))
            by_shape.setdefault(key, []).append(index)
    groups = []
    for key, indices in by_shape.items():
        fields = dict(key)
        kind = fields.pop("kind")
        sizes = {k: _count(v, positive=k not in ("conv_elems", "ssm_elems")) for k, v in fields.items()}
        groups.append(KINDS[kind](tuple(indices), **sizes))
    if not groups:
        raise ValueError("no layer holds a cache")
    return tuple(sorted(groups, key=lambda g: (_KIND_ORDER.index(g.kind), g.layers[0])))


def _count(value, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
        raise ValueError(f"not a count: {value!r}")
    return value


def _opt(value) -> int | None:
    return None if value is None else _count(value, positive=True)
