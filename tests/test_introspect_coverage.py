"""Model types transformers builds, from its own config defaults, shrunk to a few layers: `kvplan
estimate` must answer with KV bytes per token, state bytes and steady bytes per request equal to an
oracle that measures the model transformers builds (benchmarks/model_coverage.py: the cache tensors
a forward pass leaves, the state dict `save_pretrained` would write), and weights within 0.5%.

Each case covers one mechanism a coverage sweep found missing (benchmarks/model_coverage.py runs
the whole sweep; docs/models.md holds its table).
"""

import contextlib
import io
import json
import signal
import sys
import warnings
from pathlib import Path

import pytest

from kvplan.cli import main

pytest.importorskip("torch")
pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import model_coverage as coverage  # noqa: E402

BUDGET_S = 120  # per case: a hang guard, generous for a shared 2-core machine (a case takes seconds alone)

# model_type -> (decoder layers kept, why it is here)
CASES = {
    "mamba2": (2, "config written by transformers: time_step_limit holds {'__float__': 'Infinity'}"),
    "falcon_h1": (2, "the same special float, attention and Mamba side by side"),
    "gemma3": (6, "light-path family inside a wrapper: the vision tower must be counted"),
    "llava": (2, "Llama text inside a wrapper: the vision tower must be counted"),
    "voxtral": (2, "an audio tower (audio_config)"),
    "gemma4_text": (6, "sliding and full layers of different KV sizes share one pool"),
    "biogpt": (2, "the mask shortcut reads a meta tensor's value"),
    "longcat_flash": (2, "MoE routing calls nonzero on meta tensors"),
    "blip-2": (2, "the wrapper's forward needs pixels: its language model is probed"),
    "kimi_linear": (8, "MLA beside linear attention"),
    "jamba": (8, "Mamba and attention layers"),
    "mistral4": (2, "MLA text config whose only generating class is a wrapper's"),
}


def _shrink(cfg: dict, layers: int) -> dict:
    """Keep the first `layers` decoder layers (every per-layer list cut to match) and two of each tower's."""
    def cut(node: dict, keep: int) -> None:
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            n = node.get(key)
            if isinstance(n, int) and n > keep:
                node[key] = keep
                for k, v in list(node.items()):
                    if isinstance(v, list) and len(v) == n:
                        node[k] = v[:keep]
                    elif isinstance(v, dict) and v and all(str(i).isdigit() for i in v):  # per-layer overrides
                        node[k] = {i: x for i, x in v.items() if int(i) < keep}
        for key, value in node.items():
            if isinstance(value, dict) and key.endswith("_config") and key != "text_config":
                cut(value, 2)
    text = cfg["text_config"] if isinstance(cfg.get("text_config"), dict) else cfg
    cut(text, layers)
    if text is not cfg:
        cut(cfg, 2)
    return cfg


class _OverBudget(BaseException):
    """Raised by the alarm: a BaseException, so kvplan's own error handling cannot swallow it."""


@pytest.fixture
def budget():
    def expire(_signum, _frame):
        raise _OverBudget(f"over the {BUDGET_S}s budget")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(BUDGET_S)
    try:
        yield
    except _OverBudget as exc:
        pytest.fail(str(exc))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", sorted(CASES))
def test_estimate_equals_oracle(model_type, tmp_path, monkeypatch, budget):
    monkeypatch.setenv("KVPLAN_CACHE_DIR", str(tmp_path / "cache"))
    layers, _why = CASES[model_type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = _shrink(coverage.default_config(model_type), layers)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    context = coverage.context_for(cfg)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["estimate", str(tmp_path), "--gpu", "H100", "--kv-dtype", "bf16", "--context", str(context),
                   "--max-model-len", str(context), "--format", "json"])
    assert rc == 0
    got = json.loads(out.getvalue())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        truth = coverage.oracle(cfg, context)
    assert "forward_error" not in truth
    assert got["model_derivation"].startswith("introspection")
    assert got["kv_bytes_per_token"] == truth["per_token"]
    assert got["state_bytes_per_request"] == truth["state"]
    assert got["kv_bytes_per_request_steady"] == truth["steady"]
    counted = got["params"]["total"] + got["params"]["multimodal"]
    assert abs(counted - truth["params"]) <= 0.005 * truth["params"]


def test_special_floats_decode():
    from kvplan.model.introspect import _special_floats

    decoded = _special_floats({"a": [0.0, {"__float__": "Infinity"}], "b": {"__float__": "-Infinity"},
                               "c": {"__float__": "other"}})
    assert decoded["a"] == [0.0, float("inf")] and decoded["b"] == float("-inf")
    assert decoded["c"] == {"__float__": "other"}  # not a tag transformers writes: left alone


def test_towers_described():
    from kvplan.model.introspect import describes_towers

    assert describes_towers({"text_config": {}, "vision_config": {}})
    assert describes_towers({"text_config": {}, "encoder_config": {}, "projector_config": {}})
    assert not describes_towers({"attn_config": {"kv_n_heads": 8}, "quantization_config": {}})
    assert not describes_towers({"text_config": {}, "vision_config": None})


@pytest.mark.slow
def test_wrapper_lm_head_follows_the_text_config(budget):
    """Mistral-Small-3.1's config says tie_word_embeddings: false in text_config only; its checkpoint has an lm_head."""
    from kvplan.model.introspect import introspect

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = _shrink(coverage.default_config("mistral3"), 2)
    cfg.pop("tie_word_embeddings", None)
    cfg["text_config"]["tie_word_embeddings"] = False
    params = introspect(cfg, "test")["params"]
    assert params["lm_head"] == params["embedding"] == cfg["text_config"]["vocab_size"] * cfg["text_config"]["hidden_size"]
