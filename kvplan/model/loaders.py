"""Find a model by what the user typed: a path, a bundled spec, an id in the local HF cache, or
(only when online access is allowed) an id on the Hugging Face Hub.

The Hub path (kvplan.model.hub) reads configs and safetensors headers, never weights, and never
imports or runs code from a model repo.
"""

import difflib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import InputError, UnknownModelError
from ..inputs import BUNDLED_SPEC_YAML, CONFIG_JSON, read_json
from ..yamlnodes import load_yaml
from . import hub
from .kinds import FullAttention
from .spec import ModelSpec
from .normalize import spec_from_config
from .safetensors import CheckpointBytes, checkpoint_bytes

DEFAULT_MODEL = "llama-3.1-8b"


@dataclass(frozen=True)
class LoadedModel:
    spec: ModelSpec
    checkpoint: CheckpointBytes | None = None  # exact weight bytes when a local checkpoint exists
    config: dict | None = None  # the raw config it came from (for the engine's transformers model)
    model_dir: Path | None = None


def load_model(ref: str | None = None, *, allow_unknown: bool = False, overrides: dict | None = None,
               online: bool | None = None, revision: str | None = None) -> LoadedModel:
    """Resolve `ref` (None = the bundled default) to a model.

    Order: path, bundled spec, local HF cache, then the Hub if `online` (None: the user config
    decides; HF_HUB_OFFLINE=1 always forbids it). A `revision` names a Hub branch, tag or commit,
    so it skips bundled specs, which have none.
    """
    ref = DEFAULT_MODEL if ref is None else str(ref).strip()
    if not ref:
        raise InputError("model: empty name")
    revision = hub.check_revision(revision.strip()) if revision is not None else None
    path = Path(ref).expanduser()
    if path.exists():
        if revision:
            raise InputError(f"--revision applies to Hugging Face ids (org/name), not to the local path {ref!r}")
        return _with_overrides(_load_path(path, allow_unknown, overrides), overrides)
    if revision is None:
        bundled = _bundled_file(ref)
        if bundled is not None:
            return _with_overrides(_load_bundled(bundled, allow_unknown, overrides), overrides)
    elif not hub.is_repo_id(ref):
        raise InputError(f"--revision applies to Hugging Face ids (org/name), not {ref!r}")
    cached = hub.cached_snapshot(ref, revision)
    has_headers = cached is not None and (any(cached.glob("*.safetensors")) or hub.has_sidecar(cached))
    if not has_headers and hub.is_repo_id(ref) and hub.online_enabled(online):
        fetched = hub.fetch_snapshot(ref, cached.name if cached else revision, hub.cache_dir())
        loaded = _load_path(fetched.path, allow_unknown, overrides, source=f"hub:{ref}@{fetched.commit}", hf_id=ref)
        return _with_overrides(loaded, overrides)
    if cached is not None:
        loaded = _load_path(cached, allow_unknown, overrides, source=f"cache:{ref}@{cached.name}", hf_id=ref)
        return _with_overrides(loaded, overrides)
    raise UnknownModelError(_not_found_message(ref, revision))


def _not_found_message(ref: str, revision: str | None) -> str:
    at = f"@{revision}" if revision else ""
    if hub.is_repo_id(ref):
        forced = hub.offline_forced()
        why = (f"{forced}=1 forbids the Hub" if forced
               else "the Hub was not asked (pass --online, or set `online: true` in ~/.config/kvplan/config.yaml)")
        return f"unknown model {ref + at!r}: not bundled, not in the local HF cache, and {why}"
    hint = difflib.get_close_matches(ref.lower(), list(bundled_names()), n=1, cutoff=0.6)
    suffix = f"; did you mean {hint[0]!r}?" if hint else "; `kvplan models` lists bundled specs"
    return f"unknown model {ref!r}: not a path, not a bundled spec, not in the local HF cache{suffix}"


def _with_overrides(loaded: LoadedModel, overrides: dict | None) -> LoadedModel:
    """Say in the provenance which config fields the user replaced."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return loaded
    note = ", ".join(f"{k}={v}" for k, v in given.items())
    return replace(loaded, spec=replace(loaded.spec, source=f"{loaded.spec.source} + user override {note}"))


def spec_from_numbers(layers: int, kv_heads: int, head_dim: int, heads: int | None = None,
                      hidden_size: int | None = None, name: str = "raw") -> ModelSpec:
    """A uniform full-attention model from raw numbers (no parameter count: weights unknown)."""
    for label, value in (("--layers", layers), ("--kv-heads", kv_heads), ("--head-dim", head_dim)):
        if value is None or value <= 0:
            raise InputError(f"{label} must be a positive integer, got {value}")
    if heads is not None:
        if heads <= 0:
            raise InputError(f"--heads must be a positive integer, got {heads}")
        if heads % kv_heads:
            raise InputError(f"--heads={heads} is not a multiple of --kv-heads={kv_heads}")
    if hidden_size is not None and hidden_size <= 0:
        raise InputError(f"--hidden-size must be a positive integer, got {hidden_size}")
    group = FullAttention(tuple(range(layers)), kv_heads, head_dim, head_dim)
    return ModelSpec(name=name, model_type="raw", groups=(group,), num_layers=layers, hidden_size=hidden_size,
                     num_attention_heads=heads, source="raw numbers")


def apply_overrides(config: dict, overrides: dict | None) -> dict:
    """Explicit --layers/--kv-heads/--head-dim win over the config (and admit unknown archs)."""
    if not overrides:
        return config
    config = dict(config)
    text = config.get("text_config")
    target = dict(text) if isinstance(text, dict) else config
    for key, value in overrides.items():
        if value is not None:
            target[key] = value
            if key == "num_hidden_layers":
                target.pop("layer_types", None)
    if isinstance(text, dict):
        config["text_config"] = target
    return config


def read_config_file(path: Path) -> dict:
    data = read_json(path, CONFIG_JSON)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_path(path: Path, allow_unknown: bool, overrides: dict | None, source: str | None = None,
               hf_id: str | None = None) -> LoadedModel:
    """A config file or model directory; `hf_id` names a snapshot of the HF cache (its dir is a commit)."""
    model_dir = path if path.is_dir() else None
    config_path = path / "config.json" if model_dir else path
    if model_dir and not config_path.is_file():
        raise InputError(f"{path}: directory has no config.json")
    config = apply_overrides(read_config_file(config_path), overrides)
    name = (model_dir or config_path.parent).name if config_path.name == "config.json" else config_path.stem
    spec = spec_from_config(config, name=hf_id or name, source=source or f"config:{config_path}",
                            allow_unknown=allow_unknown or bool(overrides), hf_id=hf_id)
    checkpoint = _checkpoint(model_dir, spec.tie_word_embeddings) if model_dir else None
    return LoadedModel(spec, checkpoint, config, model_dir)


def _checkpoint(model_dir: Path, tied_embeddings: bool) -> CheckpointBytes | None:
    """Local shard headers, else headers an earlier Hub fetch cached for this snapshot, else the index total."""
    if not any(model_dir.glob("*.safetensors")):
        fetched = hub.cached_checkpoint(model_dir, tied_embeddings)
        if fetched is not None:
            return fetched
    return checkpoint_bytes(model_dir, tied_embeddings)


@lru_cache(maxsize=None)
def _bundled_dir() -> Path:
    return Path(str(resources.files("kvplan.model_specs")))


@lru_cache(maxsize=None)
def bundled_names() -> dict[str, Path]:
    """Lower-case canonical names and aliases -> spec file."""
    names: dict[str, Path] = {}
    for path in sorted(_bundled_dir().glob("*.yaml")):
        names[path.stem.lower()] = path
        for alias in _read_yaml(path).get("aliases") or []:
            names.setdefault(str(alias).lower(), path)
    return names


def _bundled_file(ref: str) -> Path | None:
    direct = _bundled_dir() / f"{ref.lower()}.yaml"
    if direct.is_file():
        return direct
    return bundled_names().get(ref.lower())


@lru_cache(maxsize=None)
def _read_yaml(path: Path) -> dict:
    docs = load_yaml(path, BUNDLED_SPEC_YAML)
    data = docs[0] if len(docs) == 1 else None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise InputError(f"bundled spec {path.name} is malformed")
    return data


def bundled_entry(name: str) -> dict:
    path = _bundled_file(name)
    if path is None:
        raise UnknownModelError(f"unknown bundled spec {name!r}")
    return _read_yaml(path)


def _load_bundled(path: Path, allow_unknown: bool, overrides: dict | None) -> LoadedModel:
    entry = _read_yaml(path)
    config = apply_overrides(entry["config"], overrides)
    aliases = entry.get("aliases") or []
    hf_id = next((a for a in aliases if "/" in str(a)), None)
    spec = spec_from_config(config, name=entry.get("name", path.stem), source=f"bundled:{path.name}",
                            allow_unknown=allow_unknown, hf_id=hf_id,
                            params_official=str(entry.get("params_official") or "") or None)
    return LoadedModel(spec, None, config, None)
