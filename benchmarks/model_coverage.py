"""Coverage sweep: `kvplan estimate` on every decoder model type the installed transformers knows,
each figure checked against an oracle that does not use kvplan's code.

    python benchmarks/model_coverage.py [--only TYPE,...] [--jsonl OUT.jsonl] [--write-docs]

For each model_type with a causal-LM, image-text-to-text or multimodal-LM class, the config class's
defaults are written as config.json (huge defaults scaled down: hidden sizes only, every head,
kv-head, window and layer-type field kept) and `kvplan estimate DIR --gpu H100 --kv-dtype bf16
--context L --format json` runs in-process from an empty introspection cache. Outcomes:

  ok        exit 0 and every figure equals the oracle (weights within 0.5%)
  refused   exit 2, one line; the table says whether the oracle could build and run the model itself
  wrong     exit 0 but a figure differs from the oracle
  crash     any other exit code, a traceback, or over the time budget
  unchecked exit 0 but the oracle cannot run the model (so nothing to compare against)

The oracle builds the model itself with transformers on the meta device (the whole model class for
multimodal configs, else AutoModelForCausalLM) and measures:

  params    every tensor `save_pretrained` would write: the state dict, tied tensors once
            (`keep_vars`, deduplicated by identity), `_keys_to_ignore_on_save` dropped;
  per token and state
            it runs forward passes of T1 < T2 tokens and walks every tensor the returned cache
            object holds, generically (no knowledge of layer classes): bytes(T) = state + T x per_token.
            Serving engines keep less than transformers in three known places, applied here from
            the config and the tensors' names, not from kvplan: a conv state keeps kernel-1 of its
            `kernel` columns; an MLA layer caches one latent of kv_lora_rank + qk_rope_head_dim
            (reference/kv-accounting.md), not expanded K/V; K/V broadcast to more heads than the
            attention module projects count at the projected heads.
  steady    bytes held after a forward of L tokens (L past every window), the same walk; transformers
            keeps W-1 positions of a window W (the next token makes W), engines and kvplan W, so each
            windowed layer's steady figure is compared at W.
"""

import argparse
import contextlib
import io
import json
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "models.md"
BEGIN, END = "<!-- coverage:begin -->", "<!-- coverage:end -->"
BUDGET_S = 240
_HUGE_HIDDEN = 8192
_BF16 = 2


class Timeout(BaseException):
    pass


def _alarm(_signum, _frame):
    raise Timeout()


def model_types() -> list[str]:
    from transformers.models.auto import modeling_auto as auto

    names = set()
    for mapping in ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
                    "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES"):
        names |= set(getattr(auto, mapping, {}) or {})
    return sorted(names)


# Fields real configs of these families carry and the class defaults leave out (their defaults do not build).
_GLM_V = {"text_config": {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                              "mrope_section": [8, 12, 12]}}}
_REAL_FIELDS = {"glm4v": _GLM_V, "glm4v_moe": _GLM_V, "glm46v": _GLM_V, "glmga": _GLM_V,
                "dbrx": {"attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "rope_theta": 500000}},
                "deepseek_v2": {"num_experts_per_tok": 6, "moe_intermediate_size": 1408},  # DeepSeek-V2-Lite
                "dots1": {"n_routed_experts": 128, "n_shared_experts": 2, "num_experts_per_tok": 6},  # dots.llm1
                "bamba": {"attn_layer_indices": [5, 15, 25]},  # Bamba-9B
                "granitemoehybrid": {"layer_types": (["linear_attention"] * 5 + ["full_attention"]) * 5
                                     + ["linear_attention"] * 2},  # Granite 4.0: one attention layer in six
                "lfm2_moe": {"layer_types": ["conv", "conv", "full_attention"] * 10 + ["conv", "conv"]}}


def _merge(into: dict, fields: dict) -> None:
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def default_config(model_type: str) -> dict:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cfg = json.loads(CONFIG_MAPPING[model_type]().to_json_string(use_diff=False))
    cfg["model_type"] = model_type
    _merge(cfg, _REAL_FIELDS.get(model_type, {}))
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    heads, hidden = text.get("num_attention_heads"), text.get("hidden_size")
    # Some defaults leave these null and their class then fails to build; real configs set them.
    if "head_dim" in text and text["head_dim"] is None and isinstance(heads, int) and isinstance(hidden, int):
        text["head_dim"] = hidden // heads
    if "num_key_value_heads" in text and text["num_key_value_heads"] is None:
        text["num_key_value_heads"] = heads
    if isinstance(text.get("hidden_size"), int) and text["hidden_size"] > _HUGE_HIDDEN:
        scale = text["hidden_size"] // 4096
        for key in ("hidden_size", "intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"):
            if isinstance(text.get(key), int) and text[key] % scale == 0:
                text[key] //= scale
    return cfg


def context_for(cfg: dict) -> int:
    """Past every window/chunk the config names, so steady-state capping is exercised."""
    windows = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("sliding_window", "attention_chunk_size", "sliding_window_size") and isinstance(v, int):
                    windows.append(v)
                walk(v)
    walk(cfg)
    return max([64, *(2 * w + 16 for w in windows if w < 1 << 16)])


# --- kvplan ---------------------------------------------------------------------------------------

def run_kvplan(path: Path, context: int) -> tuple[int, dict | None, str]:
    from kvplan.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["estimate", str(path), "--gpu", "H100", "--kv-dtype", "bf16", "--context", str(context),
                   "--max-model-len", str(context), "--format", "json"])
    payload = json.loads(out.getvalue()) if rc == 0 else None
    return rc, payload, err.getvalue().strip()


# --- the oracle -----------------------------------------------------------------------------------

def build(cfg: dict):
    import torch
    import transformers
    from transformers.models.auto import modeling_auto as auto

    fields = transformers.PreTrainedConfig._decode_special_floats({k: v for k, v in cfg.items() if k != "model_type"})
    hf = transformers.AutoConfig.for_model(cfg["model_type"], **fields)
    for mapping in ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING", "MODEL_FOR_MULTIMODAL_LM_MAPPING",
                    "MODEL_FOR_CAUSAL_LM_MAPPING"):
        table = getattr(auto, mapping)
        if type(hf) in table:
            with torch.device("meta"):
                return hf, table[type(hf)]._from_config(hf, dtype=torch.bfloat16)
    raise LookupError("no model class")


def oracle_params(model) -> int:
    ignore = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    seen, total = set(), 0
    for key, tensor in model.state_dict(keep_vars=True).items():
        if key in ignore or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel()
    return total


def _tensor_bytes(node, conv: bool, seen: set) -> int:
    """Float tensors reachable from `node`, in bf16 elements (transformers keeps some recurrent states
    in fp32; engines keep them in the compute dtype); a conv state at kernel-1 of its columns."""
    import torch

    if id(node) in seen:
        return 0
    seen.add(id(node))
    if isinstance(node, torch.Tensor):
        if not node.is_floating_point():
            return 0  # positions, lengths: bookkeeping, not cache
        n = node.numel() * _BF16
        return n * (node.shape[-1] - 1) // node.shape[-1] if conv and node.dim() >= 2 else n
    if isinstance(node, (list, tuple)):
        return sum(_tensor_bytes(v, conv, seen) for v in node)
    if isinstance(node, dict):
        return sum(_tensor_bytes(v, conv or "conv" in str(k), seen) for k, v in node.items())
    if type(node).__module__.startswith("transformers") and hasattr(node, "__dict__") \
            and not isinstance(node, torch.nn.Module) and "Config" not in type(node).__name__:
        return sum(_tensor_bytes(v, conv or "conv" in k, seen) for k, v in vars(node).items())
    return 0


def slot_bytes(cache) -> list[int]:
    """Bytes per layer slot: each entry of `cache.layers`, each index of any other per-layer list the
    cache keeps (MiniMax's linear_cache), then everything else as one last slot."""
    per_layer = [v for k, v in vars(cache).items() if isinstance(v, list) and k != "layers"]
    layers = list(getattr(cache, "layers", None) or [])
    width = max([len(layers), *(len(v) for v in per_layer)])
    seen = {id(layers), *(id(v) for v in per_layer)}
    slots = []
    for i in range(width):
        parts = ([layers[i]] if i < len(layers) else []) + [v[i] for v in per_layer if i < len(v)]
        slots.append(sum(_tensor_bytes(p, False, seen) for p in parts))
    slots.append(sum(_tensor_bytes(v, "conv" in k, seen) for k, v in vars(cache).items() if id(v) not in seen))
    return slots


class _MetaScalars:
    """Meta tensors hold no values: a scalar read answers 1/True and nonzero assumes all set (torch's
    opt-in), so masks and MoE routers run through to the cache."""

    def __enter__(self):
        import torch
        from torch.fx.experimental import _config
        from torch.utils._python_dispatch import TorchDispatchMode

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
                    return True if args[0].dtype == torch.bool else 1
                return func(*args, **(kwargs or {}))
        self._patch = _config.patch(meta_nonzero_assume_all_nonzero=True)
        self._patch.__enter__()
        self._mode = Mode()
        self._mode.__enter__()

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self._patch.__exit__(*exc)


def forward_cache(model, tokens: int):
    import torch
    from transformers.cache_utils import Cache

    ids = torch.zeros((1, tokens), dtype=torch.long, device="meta")
    targets = [model] + [t for t in (getattr(model, "language_model", None),
                                     getattr(getattr(model, "model", None), "language_model", None)) if t is not None]
    failure = None
    for target in targets:
        for ctx in (contextlib.nullcontext, _MetaScalars):
            try:
                with torch.no_grad(), ctx():
                    out = target(input_ids=ids, use_cache=True)
            except Exception as exc:
                failure = failure or exc
                continue
            cache = next((v for v in out.values() if isinstance(v, Cache)), None)
            if cache is not None:
                return cache
            break
    raise failure or LookupError("no cache returned")


def _text(hf):
    return hf.get_text_config(decoder=True)


def mla_latent_bytes(hf) -> int | None:
    """Per layer per token, from the config (reference/kv-accounting.md): one latent, plus DSA's fp8 indexer key."""
    text = _text(hf)
    rank = getattr(text, "kv_lora_rank", None)
    if not rank:
        return None
    per_layer = (rank + text.qk_rope_head_dim) * _BF16
    index = getattr(text, "index_head_dim", None)
    if index:
        per_layer += index + 4 * -(-index // 128)  # fp8 indexer key + fp32 scale per 128
    return per_layer


def broadcast_factor(hf) -> int:
    """Cached heads / projected heads where a model broadcasts K/V before caching (Falcon new decoder)."""
    text = _text(hf)
    projected = getattr(text, "num_kv_heads", None) if getattr(text, "new_decoder_architecture", False) else None
    heads = getattr(text, "num_attention_heads", None)
    return heads // projected if projected and heads and heads % projected == 0 else 1


def oracle(cfg: dict, context: int) -> dict:
    hf, model = build(cfg)
    out = {"params": oracle_params(model)}
    t1, t2 = 2, 3
    try:
        s1, s2 = slot_bytes(forward_cache(model, t1)), slot_bytes(forward_cache(model, t2))
        held = slot_bytes(forward_cache(model, context))
    except Timeout:
        raise
    except Exception as exc:  # built, but no forward pass: parameters only
        return {**out, "forward_error": _line(exc)}
    factor, latent = broadcast_factor(hf), mla_latent_bytes(hf)
    per_token = state = steady = 0
    for b1, b2, bl in zip(s1, s2, held):
        pt = b2 - b1
        st = b1 - t1 * pt
        windowed = bl < st + context * pt  # stopped growing: transformers keeps W-1, engines W
        kept = (bl - st) // pt + windowed if pt else 0
        if pt and latent is not None:
            pt = latent
        pt //= factor
        per_token += pt
        state += st
        steady += st + kept * pt
    return {**out, "per_token": per_token, "state": state, "steady": steady}


# --- one model type -------------------------------------------------------------------------------

def check(model_type: str, work: Path) -> dict:
    row = {"model_type": model_type}
    try:
        cfg = default_config(model_type)
    except Exception as exc:
        return {**row, "outcome": "no default config", "detail": _line(exc)}
    context = context_for(cfg)
    row["context"] = context
    folder = work / model_type
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    start = time.perf_counter()
    try:
        rc, payload, err = run_kvplan(folder, context)
    except Timeout:
        return {**row, "outcome": "crash", "detail": f"kvplan over {BUDGET_S}s"}
    row["kvplan_s"] = round(time.perf_counter() - start, 2)
    truth = None
    try:
        truth = oracle(cfg, context)
    except Timeout:
        row["oracle_error"] = "timeout"
    except Exception as exc:
        row["oracle_error"] = _line(exc)
    if rc == 2:
        return {**row, "outcome": "refused", "detail": err, "buildable": truth is not None and "forward_error" not in truth,
                "oracle": truth}
    if rc != 0:
        return {**row, "outcome": "crash", "detail": f"exit {rc}: {err[-300:]}"}
    mine = {"per_token": payload["kv_bytes_per_token"], "state": payload["state_bytes_per_request"],
            "steady": payload["kv_bytes_per_request_steady"], "params": (payload.get("params") or {}).get("total"),
            "params_mm": (payload.get("params") or {}).get("multimodal"), "derivation": payload["model_derivation"],
            "layout": payload["layout"]}
    row["kvplan"] = mine
    row["oracle"] = truth
    if truth is None or "forward_error" in truth:
        return {**row, "outcome": "unchecked", "detail": row.get("oracle_error") or truth["forward_error"]}
    problems = []
    if mine["per_token"] != truth["per_token"]:
        problems.append(f"per_token {mine['per_token']} != {truth['per_token']}")
    if mine["state"] != truth["state"]:
        problems.append(f"state {mine['state']} != {truth['state']}")
    if mine["steady"] != truth["steady"]:
        problems.append(f"steady {mine['steady']} != {truth['steady']}")
    if mine["params"] is None:
        problems.append("no weights")
    else:
        counted = mine["params"] + (mine["params_mm"] or 0)
        if abs(counted - truth["params"]) > 0.005 * truth["params"]:
            problems.append(f"params {counted} vs {truth['params']} ({100 * (counted / truth['params'] - 1):+.2f}%)")
    return {**row, "outcome": "wrong" if problems else "ok", "detail": "; ".join(problems)}


def _num_layers(cfg: dict) -> int:
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else cfg
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(text.get(key), int):
            return text[key]
    return 1


def _line(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:300]


def _transformers_verdict(row: dict) -> str:
    truth = row.get("oracle")
    if truth is None:
        return "no: does not build"
    error = truth.get("forward_error")
    if error is None:
        return "yes"
    return "runs, returns no cache" if "no cache returned" in error else "builds; its forward fails on meta"


def markdown(rows: list[dict], version: str) -> str:
    counts = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    exact = [r for r in rows if r["outcome"] == "ok"]
    light = [r["model_type"] for r in exact if not r["kvplan"]["derivation"].startswith("introspection")]
    lines = [f"transformers {version}, {len(rows)} model types: "
             + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", "",
             f"**Exact** ({len(exact)}; KV bytes per token, state bytes and steady bytes per request equal the "
             "oracle's, weights within 0.5%; *italic*: read by the light normalizer, the rest by introspection): "
             + ", ".join(f"*{r['model_type']}*" if r["model_type"] in light else r["model_type"] for r in exact)
             + ".", "",
             "| model_type | outcome | transformers builds and runs it | kvplan's line |", "|---|---|---|---|"]
    for r in rows:
        if r["outcome"] == "ok":
            continue
        runs = _transformers_verdict(r) if r["outcome"] == "refused" else ""
        note = (r.get("detail") or "").removeprefix("kvplan: error: ")
        note = note.split("config.json: ", 1)[-1].replace("|", "/")
        lines.append(f"| {r['model_type']} | {r['outcome']} | {runs} | {note[:180]} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--jsonl", default="")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    warnings.simplefilter("ignore")
    import transformers
    transformers.logging.set_verbosity_error()
    types = [t for t in args.only.split(",") if t] or model_types()
    signal.signal(signal.SIGALRM, _alarm)
    done = {}
    if args.jsonl and Path(args.jsonl).exists():
        for line in Path(args.jsonl).read_text().splitlines():
            row = json.loads(line)
            done[row["model_type"]] = row
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["KVPLAN_CACHE_DIR"] = str(Path(tmp) / "cache")
        for model_type in types:
            if model_type in done:
                rows.append(done[model_type])
                continue
            signal.alarm(BUDGET_S)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    row = check(model_type, Path(tmp))
            except Timeout:
                row = {"model_type": model_type, "outcome": "crash", "detail": f"over {BUDGET_S}s"}
            except Exception as exc:
                row = {"model_type": model_type, "outcome": "crash", "detail": _line(exc)}
            finally:
                signal.alarm(0)
            rows.append(row)
            print(f"{model_type:32} {row['outcome']:10} {row.get('detail', '')[:150]}", file=sys.stderr, flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
    table = markdown(rows, transformers.__version__)
    if args.write_docs:
        text = DOCS.read_text()
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        DOCS.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
