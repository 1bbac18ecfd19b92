"""Every attention kind through every engine policy, estimate and simulate; unknown kinds fail closed;
no code outside kvplan/model/kinds.py switches on a kind."""

import re
from pathlib import Path

import pytest

from kvplan.dtypes import kv_format
from kvplan.errors import InputError, KvplanError, UnsupportedModelError
from kvplan.model import (ChunkedLocal, FullAttention, IndexedMLA, LayerGroup, MLALatent, ModelSpec, RecurrentState,
                          SlidingWindow)
from kvplan.model.kinds import KINDS, cdiv
from kvplan.model.loaders import LoadedModel
from kvplan.plan import Deployment, estimate
from kvplan.plan.policies import engine_names
from kvplan.simulation import SyntheticWorkload
from kvplan.simulation.run import simulate
from kvplan.simulation.workload import Distribution
from kvplan.units import GiB

HEADS = dict(num_kv_heads=4, k_head_dim=64, v_head_dim=64)
W, C = 256, 512  # window and chunk, in tokens
MAX_MODEL_LEN, BATCHED, SEQS = 4096, 512, 64  # SEQS <= BATCHED: transformers refuses more requests than tokens
ENGINES = ("generic", "vllm", "vllm@0.8.5", "vllm-offline", "sglang", "trtllm", "transformers")
LAYERS = (0, 1, 2, 3)
ONE_OF_EACH = {
    "full": FullAttention(LAYERS, **HEADS),
    "sliding": SlidingWindow(LAYERS, **HEADS, window_tokens=W),
    "chunked": ChunkedLocal(LAYERS, **HEADS, window_tokens=C),
    "mla": MLALatent(LAYERS, kv_lora_rank=128, qk_rope_head_dim=32),
    "indexed_mla": IndexedMLA(LAYERS, kv_lora_rank=128, qk_rope_head_dim=32, index_head_dim=64),
    "state": RecurrentState(LAYERS, conv_elems=3000, ssm_elems=40000),
}
# What each engine models, written out here rather than read from the kinds.
MODELLED = {
    "generic": {"full", "sliding", "chunked", "mla", "indexed_mla", "state"},
    "vllm": {"full", "sliding", "chunked", "mla"}, "vllm@0.8.5": {"full", "sliding", "chunked", "mla"},
    "vllm-offline": {"full", "sliding", "chunked", "mla"},
    "sglang": {"full", "sliding", "chunked", "mla"}, "trtllm": {"full", "sliding", "chunked", "mla"},
    "transformers": {"full", "sliding"},
}
# Bytes per token per layer in bf16 on one GPU, by hand: K and V of 4 heads x 64, or one 160-wide latent
# (with a 64-wide fp8 indexer key and its fp32 scale for indexed_mla).
BF16_BYTES_PER_TOKEN = {"full": 2 * 4 * 64 * 2, "sliding": 2 * 4 * 64 * 2, "chunked": 2 * 4 * 64 * 2,
                        "mla": (128 + 32) * 2, "indexed_mla": (128 + 32) * 2 + 64 + 4, "state": 0}


def model(*groups: LayerGroup, name: str = "kinds") -> LoadedModel:
    num_layers = sum(g.num_layers for g in groups)
    return LoadedModel(ModelSpec(name, "test", groups, num_layers, hidden_size=256, num_attention_heads=4, head_dim=64,
                                 vocab_size=1000, max_position_embeddings=MAX_MODEL_LEN))


def mixed_attention() -> tuple[LayerGroup, ...]:
    """Full, sliding and chunked layers of one KV shape: one pool serves them all."""
    return (FullAttention((0,), **HEADS), SlidingWindow((1, 4), **HEADS, window_tokens=W),
            ChunkedLocal((2, 3), **HEADS, window_tokens=C))


def deployment(engine: str, **kw) -> Deployment:
    return Deployment(kv_cache_memory_bytes=GiB, max_model_len=MAX_MODEL_LEN, max_num_batched_tokens=BATCHED,
                      max_num_seqs=SEQS, engine=engine, **kw)


def test_the_tables_cover_every_kind_and_engine():
    assert set(ONE_OF_EACH) == set(KINDS) and set(BF16_BYTES_PER_TOKEN) == set(KINDS)
    assert {e.partition("@")[0] for e in ENGINES} == set(engine_names())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", sorted(ONE_OF_EACH))
def test_estimate_every_kind_with_every_engine(kind, engine):
    loaded = model(ONE_OF_EACH[kind], name=kind)
    if kind not in MODELLED[engine]:
        with pytest.raises(UnsupportedModelError, match=rf"{re.escape(ONE_OF_EACH[kind].label)} layers \(kind '{kind}'\)"):
            estimate(loaded, deployment(engine))
        return
    e = estimate(loaded, deployment(engine))
    assert e.kv_bytes_per_token == 4 * BF16_BYTES_PER_TOKEN[kind]
    assert e.state_bytes_per_request == (4 * (3000 + 40000) * 2 if kind == "state" else 0)
    assert e.fits is True and e.max_concurrent_users >= 1
    assert e.num_blocks > 0 or kind == "state"  # a state-only model has no blocks: its budget holds state


@pytest.mark.parametrize("engine", ENGINES)
def test_estimate_a_model_mixing_kinds_with_every_engine(engine):
    groups = mixed_attention()
    if engine == "transformers":  # chunked layers: refused by name; full + sliding alone are sized
        with pytest.raises(UnsupportedModelError, match="chunked local attention"):
            estimate(model(*groups), deployment(engine))
        groups = (FullAttention((0, 2), **HEADS), SlidingWindow((1, 3, 4), **HEADS, window_tokens=W))
    e = estimate(model(*groups), deployment(engine))
    assert e.kv_bytes_per_token == 5 * 2 * 4 * 64 * 2
    assert e.fits is True and e.num_blocks > 0 and e.max_concurrent_users >= 1


def test_generic_estimate_mixing_every_kind_counts_windows_and_state():
    """1 full, 2 sliding, 2 chunked layers and one state layer, paged in blocks of 16."""
    groups = mixed_attention() + (RecurrentState((5,), conv_elems=3000, ssm_elems=40000),)
    e = estimate(model(*groups), deployment("generic", context_tokens=2000))
    full = 125  # cdiv(2000, 16)
    sliding = 49  # a prefill chunk keeps W - 1 + T = 767 positions; starting 15 into a block: 49 blocks
    chunked = 65  # at most C - 1 + T = 1023 positions back to the local chunk's start: 65 blocks at worst
    state = (3000 + 40000) * 2
    assert e.kv_bytes_per_request == (full + 2 * sliding + 2 * chunked) * 16 * BF16_BYTES_PER_TOKEN["full"] + state


def test_vllm_reserves_each_kinds_own_worst_case():
    """vLLM (`--engine vllm`: the newest family, 0.21) on the mixed model: 5 groups of one layer; each asks its kind's
    max_memory_usage_bytes."""
    e = estimate(model(*mixed_attention()), deployment("vllm"))
    full = cdiv(MAX_MODEL_LEN, 16)
    sliding = cdiv(min(W - 1 + BATCHED, MAX_MODEL_LEN), 16) + 1
    chunked = cdiv(min(C + BATCHED, MAX_MODEL_LEN), 16)
    assert e.engine_report["figures"]["num_groups"] == 5
    assert e.engine_report["figures"]["blocks_per_request"] == full + 2 * sliding + 2 * chunked == 482


def test_transformers_page_counts_k_and_v_head_dims():
    """A layer with 64-wide K and 32-wide V: transformers' page holds both at their own widths."""
    from kvplan.plan.policies.transformers import allocators

    spec = model(FullAttention(LAYERS, num_kv_heads=4, k_head_dim=64, v_head_dim=32)).spec
    (alloc,) = allocators(spec, kv_format("bf16"), 1, 256)
    assert alloc.bytes_per_page == 256 * 4 * (64 + 32) * 2


def test_tp_must_divide_split_kv_heads_but_not_a_latent():
    """24 query heads over tp 3: 8 KV heads cannot be split three ways; an MLA latent is not split at all."""
    def with_heads(group):
        return LoadedModel(ModelSpec("h", "test", (group,), 4, num_attention_heads=24, max_position_embeddings=4096))

    with pytest.raises(InputError, match="--tp 3 and the model's 8 KV heads"):
        estimate(with_heads(FullAttention(LAYERS, 8, 64, 64)), Deployment(tp=3, kv_cache_memory_bytes=GiB))
    assert estimate(with_heads(ONE_OF_EACH["mla"]), Deployment(tp=3, kv_cache_memory_bytes=GiB)).fits


WORKLOAD = SyntheticWorkload(12, Distribution.parse("uniform:1:600", "prompt"), Distribution.parse("uniform:1:300", "output"),
                             seed=3)


@pytest.mark.parametrize("kind", sorted(set(ONE_OF_EACH) - {"state"}) + ["mixed"])
def test_simulate_every_kind(kind):
    groups = mixed_attention() + (RecurrentState((5,), 3000, 40000),) if kind == "mixed" else (ONE_OF_EACH[kind],)
    report = simulate(model(*groups), deployment("generic"), WORKLOAD, clock="steps")
    assert report.paged["completed_requests"] == 12
    assert report.contiguous["completed_requests"] == 12


def test_simulate_refuses_a_model_with_nothing_to_page():
    with pytest.raises(KvplanError):
        simulate(model(ONE_OF_EACH["state"]), deployment("generic"), WORKLOAD, clock="steps")


# --- a kind without answers fails closed, naming itself ---

class Sparse(LayerGroup):
    kind = "sparse"


@pytest.mark.parametrize("engine", ENGINES)
def test_an_unknown_kind_fails_closed_in_every_policy(engine):
    with pytest.raises(UnsupportedModelError, match="kind 'sparse'"):
        estimate(model(Sparse(LAYERS)), deployment(engine))


def test_an_unknown_kind_has_no_answers():
    sparse = Sparse(LAYERS)
    for ask in (lambda: sparse.holds_kv, lambda: sparse.tp_split_kv_heads,
                lambda: sparse.bytes_per_token_per_layer(kv_format("bf16")),
                lambda: sparse.tokens_held(10), lambda: sparse.peak_blocks(10, 16), lambda: sparse.unwindowed(),
                lambda: sparse.vllm_max_blocks(10, 16, 8), lambda: sparse.runtime_window_tokens()):
        with pytest.raises(UnsupportedModelError, match="kind 'sparse'"):
            ask()
    with pytest.raises(UnsupportedModelError, match="kind 'sparse'"):
        simulate(model(sparse), deployment("generic"), WORKLOAD, clock="steps")


def test_an_unknown_kind_leaves_weights_uncounted():
    """A parameter count needs every layer's attention block: an unknown kind gives None, not a guess."""
    from kvplan.model.params import count_params

    cfg = {"model_type": "llama", "hidden_size": 64, "vocab_size": 100, "num_attention_heads": 4,
           "num_key_value_heads": 4, "head_dim": 16, "intermediate_size": 128}
    assert count_params(cfg, [FullAttention((0,), 4, 16, 16)]) is not None
    assert count_params(cfg, [Sparse((0,))]) is None


# --- nothing outside the kind classes switches on a kind ---

ROOT = Path(__file__).resolve().parents[1] / "kvplan"
NO_KIND_SWITCHES = sorted({*ROOT.glob("plan/policies/*.py"), ROOT / "model/params.py", *ROOT.glob("runtime/*.py"),
                           *ROOT.glob("paging/*.py")})
KIND_SWITCH = re.compile(
    r"""\bkind\s*(==|!=)|\bkind\s+(not\s+)?in\s+[(\[{]"""  # comparing a kind
    r"""|["'](full|sliding|chunked|mla|indexed_mla|state)["']"""  # a kind's name as a string
    r"""|\bwindow_tokens\b"""  # reading a window from outside the kind (getattr or attribute)
    r"""|\b(FullAttention|SlidingWindow|ChunkedLocal|MLALatent|IndexedMLA|RecurrentState)\b""")  # naming a kind class


@pytest.mark.parametrize("path", NO_KIND_SWITCHES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_kind_switch_outside_the_kinds(path):
    hits = [f"{path.name}:{n}: {line.strip()}" for n, line in enumerate(path.read_text().splitlines(), 1)
            if KIND_SWITCH.search(line.split("#")[0])]
    assert not hits, "ask the kind (kvplan/model/kinds.py) instead:\n" + "\n".join(hits)
