"""Deployment-file fields: one table of value parsers, schema fragments and docs per key.

`kvplan.deploy.file` walks a YAML document and calls these parsers; `json_schema()` renders the same
table as docs/deployment.schema.json, so the file format and its documentation cannot drift. The
keys that set a Deployment field come from its declaration (`kvplan.plan.deployment.SETTINGS`:
key, help, bound, default), as the CLI's flags do.
"""

import difflib
from dataclasses import dataclass
from typing import Callable

from ..dtypes import KV_DTYPE_ALIASES, KV_FORMATS, WEIGHT_DTYPE_ALIASES, WEIGHT_FORMATS, kv_format, weight_format
from ..errors import InputError
from ..hardware import GPU, find_gpu
from ..plan.deployment import SETTINGS, Setting
from ..units import parse_count, parse_size

FORMAT_VERSION = 1


class FieldError(Exception):
    """A field value is wrong; the caller adds file:line and the field's name."""


# --- field parsers: value -> parsed, or FieldError ---------------------------------------------------

def int_value(value, minimum: int = 1, maximum: int = 1 << 40) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"expected an integer, got {shown_value(value)}")
    if value < minimum:
        raise FieldError(f"must be at least {minimum}, got {value}")
    if value > maximum:
        raise FieldError(f"{value:,} is implausibly large (at most {maximum:,})")
    return value


def tokens_value(value, maximum: int = 1 << 40) -> int:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, str)):
        raise FieldError(f"expected a token count (an integer or like 32k), got {shown_value(value)}")
    try:
        return parse_count(value, "value", maximum=maximum)
    except InputError as exc:
        raise FieldError(str(exc).removeprefix("value: ")) from None


def _size(value) -> int:
    if isinstance(value, (bool, float)) or not isinstance(value, (int, str)):
        raise FieldError(f"expected a size (bytes, or like 80GiB / 24GB), got {shown_value(value)}")
    try:
        return parse_size(value, "value")
    except InputError as exc:
        raise FieldError(str(exc).removeprefix("value: ")) from None


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(f"expected a number, got {shown_value(value)}")
    return float(value)


def _unit_fraction(value) -> float:
    x = _number(value)
    if not 0.0 < x <= 1.0:
        raise FieldError(f"must be in (0, 1], got {value}")
    return x


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"expected a non-empty string, got {shown_value(value)}")
    return value.strip()


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise FieldError(f"expected true or false, got {shown_value(value)}")
    return value


def _gpu(value) -> GPU:
    try:
        return find_gpu(_text(value))
    except InputError as exc:
        raise FieldError(str(exc).replace("unknown --gpu", "unknown GPU").split(" (known:")[0]
                   + " (`kvplan estimate --help` lists the catalog; or give gpu_memory)") from None


def _gpu_memory(value) -> GPU:
    size = _size(value)
    if size <= 0:
        raise FieldError("must be positive")
    return GPU(f"custom {value}", size, None, None)


def _weight_dtype(value) -> str:
    try:
        return weight_format(_text(value)).name
    except InputError:
        raise FieldError(f"unknown weight dtype {shown_value(value)}; choose one of {', '.join(WEIGHT_FORMATS)}") from None


def _kv_dtype(value) -> str:
    text = _text(value).lower()
    try:
        kv_format(text)
    except InputError:
        raise FieldError(f"unknown kv_dtype {shown_value(value)}; choose one of auto, {', '.join(KV_FORMATS)}") from None
    return KV_DTYPE_ALIASES.get(text, text)


def _engine(value) -> str:
    """An engine name, optionally with the version its semantics follow (`vllm@0.8.5`)."""
    from ..plan.policies import engine_names, get_policy

    text, known = _text(value).strip().lower(), engine_names()
    name = text.split("@", 1)[0]
    if name not in known:
        raise FieldError(f"unknown engine {shown_value(value)}{near_miss_hint(name, known)}; choose one of {', '.join(known)}")
    try:
        get_policy(text)
    except InputError as exc:
        raise FieldError(str(exc)) from None
    return text


def _command(value) -> str | list[str]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return [str(v) for v in value]
    raise FieldError(f"expected a `vllm serve` command line (a string or a list of strings), got {shown_value(value)}")


def _headroom(value) -> tuple[float, int]:
    """(fraction of the KV budget, bytes per GPU): 0.1, "10%" or "2GiB"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            value = float(value.strip()[:-1]) / 100
        except ValueError:
            raise FieldError(f"cannot read {value!r} as a percentage") from None
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        if not 0.0 <= value < 1.0:
            raise FieldError(f"a fraction of the KV budget must be in [0, 1), got {value:g}")
        return float(value), 0
    if isinstance(value, str):
        return 0.0, _size(value)
    raise FieldError(f"expected a fraction below 1 (0.1), a percentage (10%) or a size (2GiB), got {shown_value(value)}")


def shown_value(value) -> str:
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def near_miss_hint(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- the field table ------------------------------------------------------------------------

_POSINT = {"type": "integer", "minimum": 1}
_TOKENS = {"oneOf": [_POSINT, {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?([eE][+]?[0-9]+)?\s*[kKmM]?\s*$"}]}
_SIZE = {"oneOf": [{"type": "integer", "minimum": 0},
                   {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?\s*[A-Za-z]*\s*$"}]}
_FRACTION = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
_STRING = {"type": "string", "minLength": 1}
_ARGS = {"oneOf": [_STRING, {"type": "array", "items": {"type": ["string", "number"]}}]}


@dataclass(frozen=True)
class _Field:
    parse: Callable
    schema: dict
    doc: str
    kwarg: str | None = None  # the Deployment field it sets


def _enum(names) -> dict:
    return {"type": "string", "enum": sorted(names)}


def _bounded(parse: Callable, maximum: int | None) -> Callable:
    return parse if maximum is None else lambda value: parse(value, maximum=maximum)


def _setting_field(s: Setting) -> _Field:
    """The file key of one Deployment setting: its parser and schema by kind, its help and default as docs."""
    parse, schema = _BY_KEY.get(s.key) or _BY_KIND[s.kind]
    if s.maximum is not None:
        parse = _bounded(parse, s.maximum)
        schema = ({"oneOf": [dict(schema["oneOf"][0], maximum=s.maximum), schema["oneOf"][1]]} if "oneOf" in schema
                  else dict(schema, maximum=s.maximum))
    if s.engine_default:
        return _Field(parse, schema, f"{s.help} (default: the engine's own)", s.name)
    if s.default is not None:
        return _Field(parse, dict(schema, default=s.default), f"{s.help} (default: {s.default})", s.name)
    return _Field(parse, schema, s.help, s.name)


_BY_KIND = {"count": (int_value, _POSINT), "tokens": (tokens_value, _TOKENS), "fraction": (_unit_fraction, _FRACTION),
            "size": (_size, _SIZE), "gpu": (_gpu, _STRING)}
_BY_KEY = {  # text settings, each with its own vocabulary
    "dtype": (_weight_dtype, _enum(set(WEIGHT_FORMATS) | {k for k, v in WEIGHT_DTYPE_ALIASES.items() if v})),
    "kv_dtype": (_kv_dtype, _enum(set(KV_FORMATS) | set(KV_DTYPE_ALIASES) | {"auto"})),
    "engine": (_engine, _STRING),
}
_SETTING_FIELDS = {s.key: _setting_field(s) for s in SETTINGS.values() if s.in_file}

DEPLOYMENT_FIELDS: dict[str, _Field] = {
    "name": _Field(_text, _STRING, "Unique name within the file (default: the model)"),
    "model": _Field(_text, _STRING, "Bundled spec (`kvplan models`), HF id in the local cache, config.json or "
                                    "model directory (relative to this file)"),
    "gpu": _SETTING_FIELDS.pop("gpu"),
    "gpu_memory": _Field(_gpu_memory, _SIZE, "GPU memory instead of `gpu`: 80GiB, 24GB", "gpu"),
    **_SETTING_FIELDS,
    "vllm_args": _Field(_command, _ARGS, "The `vllm serve` command line this deployment is launched with"),
    "manifest": _Field(_text, _STRING, "Kubernetes manifest or docker-compose file (relative to this file) "
                                       "whose `vllm serve` container this entry checks"),
    "container": _Field(_text, _STRING, "Container (Kubernetes) or service (compose) name inside `manifest`"),
    "requirements": _Field(None, {"$ref": "#/$defs/requirements"}, "Rules `kvplan check` enforces"),
}

_USERS_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["users"],
                 "properties": {"users": _POSINT, "context_tokens": _TOKENS}}

REQUIREMENT_FIELDS: dict[str, _Field] = {
    "must_fit": _Field(_flag, {"type": "boolean"}, "Weights fit and one request of max_model_len fits "
                                                   "(what the engine needs to start); default true"),
    "min_concurrent_users": _Field(None, {"oneOf": [_USERS_SCHEMA, {"type": "array", "items": _USERS_SCHEMA}]},
                                   "{users: N, context_tokens: C}: N requests of C tokens fit at once "
                                   "(C defaults to max_model_len); or a list of such"),
    "min_context_tokens": _Field(tokens_value, _TOKENS, "max_model_len and the longest request that fits are at "
                                                   "least this"),
    "max_kv_budget_fraction": _Field(_unit_fraction, _FRACTION, "The load (min_concurrent_users, else one "
                                     "max_model_len request) uses at most this fraction of the KV budget"),
    "headroom": _Field(_headroom, {"oneOf": [{"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                             {"type": "string"}]},
                       "Safety margin taken off the KV budget before every rule: 0.1 / 10% of it, or 2GiB per GPU"),
}

KWARG_TO_KEY = {f.kwarg: k for k, f in DEPLOYMENT_FIELDS.items() if f.kwarg and k != "gpu_memory"}
KEY_ALIASES = {"tensor_parallel_size": "tp", "pipeline_parallel_size": "pp", "kv_cache_dtype": "kv_dtype",
            "quantization": "dtype", "weight_dtype": "dtype"}
TOP_KEYS = ("version", "defaults", "deployments")
SOURCE_KEYS = ("model", "vllm_args", "manifest")
PER_ENTRY_KEYS = ("name", "vllm_args", "manifest", "container")  # not allowed in `defaults`


def json_schema() -> dict:
    """JSON Schema (2020-12) of the deployment file; docs/deployment.schema.json is this, verbatim."""
    props = {k: dict(f.schema, description=f.doc) for k, f in DEPLOYMENT_FIELDS.items()}
    deployment = {"type": "object", "additionalProperties": False, "properties": props,
                  "anyOf": [{"required": [k]} for k in SOURCE_KEYS]}
    defaults = {"type": "object", "additionalProperties": False,
                "properties": {k: v for k, v in props.items() if k not in PER_ENTRY_KEYS}}
    multi = {"type": "object", "additionalProperties": False, "required": ["deployments"],
             "properties": {"version": {"const": FORMAT_VERSION}, "defaults": defaults,
                            "deployments": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/deployment"}}}}
    single = {"allOf": [{"$ref": "#/$defs/deployment"}], "not": {"required": ["deployments"]}}
    requirements = {"type": "object", "additionalProperties": False,
                    "properties": {k: dict(f.schema, description=f.doc) for k, f in REQUIREMENT_FIELDS.items()}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://kvplan.dev/deployment.schema.json",
        "title": "kvplan deployment file",
        "description": "One deployment, or `deployments:` with optional `defaults:`. See docs/ci.md.",
        "oneOf": [multi, single],
        "$defs": {"deployment": deployment, "requirements": requirements},
    }
