"""SGLang start-up logs (tests/data/sglang_logs, each citing its source) read and replayed from their own figures."""

import json
from pathlib import Path

import pytest

from kvplan.cli import main
from kvplan.cli.options import load_model_from_flags
from kvplan.logs.explain import explain_log
from kvplan.logs.log_deployment import deployment_for_log
from kvplan.logs.startup import parse_startup_log, read_startup_log

LOGS = Path(__file__).parent / "data" / "sglang_logs"


def explain(name):
    log = read_startup_log(str(LOGS / name))
    args = log.kvplan_args
    flags = {args[i].lstrip("-").replace("-", "_"): args[i + 1] for i in range(0, len(args), 2)}
    loaded = load_model_from_flags(flags["model"])
    dep, mml = deployment_for_log(log, loaded.spec, flags, None, None)
    ex = explain_log(log, loaded, dep, mml)
    return log, {r.figure.split(" (")[0]: r for r in ex.rows}, ex


# Each log's own figures, copied from it by hand: min free GiB before and after loading over the ranks, the
# server_args mem_fraction_static, the bytes per token on one rank (layers x KV heads per rank x (K + V dims)
# x 2 B, or MLA's 576-wide latent x 61 layers x 2 B) and the logged pool. SGLang's profile_max_num_token:
# int((after - before x (1 - fraction)) x 2^30) // cell.
REPLAYED = [
    ("llama-3.1-8b-sgldocs-2025-01.log", 78.81, 63.72, 0.88, 32 * 8 * 256 * 2, 444500),  # TP1, 0.4.1 era, H100
    ("qwq-32b-tp4-l4-llmsinclouds.log", 21.63, 6.09, 0.85, 64 * 2 * 256 * 2, 46611),  # TP4 on L4, 0.4.3.post4
    ("kimi-k2.5-tp8-mi355x-sgl058.log", 283.53, 209.96, 0.8260405859375, 61 * 576 * 2, 2454421),  # MLA MoE TP8
    ("qwen3-30b-a3b-fp8-h100-vllmhybrid.log", 78.48, 49.33, 0.83, 48 * 4 * 256 * 2, 392920),  # MoE, 2026 build
    ("qwen3-30b-a3b-fp8-kt-h100-vllmhybrid.log", 78.48, 76.34, 0.841, 48 * 4 * 256 * 2, 697336),  # MoE, experts on CPU
    ("deepseek-r1-0528-tp8-kt-h100-vllmhybrid.log", 77.33, 74.10, 0.831, 61 * 576 * 2, 932468),  # MLA MoE TP8
]


@pytest.mark.parametrize("name,before,after,fraction,cell,logged", REPLAYED)
def test_max_total_num_tokens_replays_within_0_15_percent(name, before, after, fraction, cell, logged):
    log, rows, ex = explain(name)
    assert (log.sglang["before_gib"], log.sglang["after_gib"], log.sglang["tokens"]) == (before, after, logged)
    assert log.settings["mem_fraction_static"] == fraction and ex.settings["cell_bytes"] == cell
    expected = int((after - before * (1 - fraction)) * 2**30) // cell
    row = rows["max_total_num_tokens"]
    assert row.predicted.startswith(f"{expected:,} (range")
    assert abs(expected - logged) / logged <= 0.0015 and row.agrees


def test_the_replay_reproduces_the_published_arithmetic_to_the_token():
    """The header arithmetic of each file is the same figure (a second, hand-written record of it)."""
    assert [int((a - b * (1 - f)) * 2**30) // c for _, b, a, f, c, _ in REPLAYED] == [
        444520, 46620, 2454504, 393089, 697539, 932544]


@pytest.mark.parametrize("name", [r[0] for r in REPLAYED])
def test_the_estimate_flags_in_the_note_size_the_same_pool(name, capsys):
    """`--non-torch-memory 0`, the free memory before load as the GPU and whole-model weights: no tp confusion."""
    _, rows, ex = explain(name)
    note = next(n for n in ex.notes if "kvplan estimate" in n)
    args = note.split("`kvplan estimate ")[1].split("`")[0].split()
    assert main(["estimate", *args, "-f", "json"]) == 0
    tokens = json.loads(capsys.readouterr().out)["kv_cache_tokens"]
    assert f"{tokens:,} (range" in rows["max_total_num_tokens"].predicted


def test_max_total_tokens_caps_the_pool():
    log, rows, ex = explain("qwen2.5-0.5b-capped-sgldocs-2025-06.log")
    assert ex.settings["max_total_tokens"] == 20480
    assert int((45.61 - 46.58 * (1 - 0.874)) * 2**30) // (24 * 2 * 128 * 2) > 20480
    assert rows["max_total_num_tokens"].predicted.startswith("20,480 ") and rows["max_total_num_tokens"].agrees
    assert any("caps the pool, which estimate does not" in n for n in ex.notes)


def test_a_log_without_mem_fraction_static_is_not_guessed():
    log, rows, ex = explain("gemma-3-4b-sglpr4826.log")
    assert "mem_fraction_static" in log.missing and "max_total_num_tokens" not in rows
    assert ex.settings["mem_fraction_static"] is None
    assert any("kvplan does not guess it" in n for n in ex.notes)


def test_weights_offloaded_or_of_another_architecture_are_not_compared():
    _, rows, ex = explain("deepseek-r1-0528-tp8-kt-h100-vllmhybrid.log")
    assert "weights per GPU" not in rows and any("ktransformers" in n for n in ex.notes)
    _, rows, ex = explain("kimi-k2.5-tp8-mi355x-sgl058.log")
    assert "weights per GPU" not in rows and any("KimiK25ForConditionalGeneration" in n for n in ex.notes)


@pytest.mark.parametrize("name,tokens,k_gib", [
    ("gemma-3-4b-sglpr4826.log", 834615, "54.12"),  # 34 layers x 4 heads x 256 x 2 B = 69,632 B of K per token
    ("qwen3-32b-tp4-sglpr22537.log", 2206208, "67.33"),  # 64 layers x 2 heads per rank x 128 x 2 B = 32,768 B
    ("qwen3-235b-a22b-fp8-tp4-vllm21348.log", 367404, "8.23"),
    ("qwen3-30b-a3b-sglang18263.log", 1669816, "76.44"),
    ("llama-3.1-8b-sgldocs-2025-01.log", 444500, "27.13"),  # 0.4.1 printed no #tokens: max_total_num_tokens gives it
    ("qwq-32b-tp4-l4-llmsinclouds.log", 46611, "1.42"),
])
def test_pool_sizes_follow_from_the_logged_tokens(name, tokens, k_gib):
    log, rows, _ = explain(name)
    assert log.sglang["tokens"] == tokens
    assert rows["K size"].logged == rows["K size"].predicted == k_gib and rows["V size"].agrees


@pytest.mark.parametrize("name,kv_gib", [("kimi-k2.5-tp8-mi355x-sgl058.log", "160.63"),
                                         ("deepseek-r1-0528-tp8-kt-h100-vllmhybrid.log", "61.03")])
def test_mla_logs_one_latent_size(name, kv_gib):
    _, rows, _ = explain(name)
    assert rows["KV size"].logged == rows["KV size"].predicted == kv_gib


@pytest.mark.parametrize("name", ["gemma-3-4b-sglpr4826.log", "qwen3-32b-tp4-sglpr22537.log",
                                  "qwen3-30b-a3b-sglang18263.log", "qwq-32b-tp4-l4-llmsinclouds.log",
                                  "qwen3-30b-a3b-fp8-h100-vllmhybrid.log"])
def test_mem_usage_is_the_weights_plus_loader_slack(name):
    """SGLang's "mem usage" is the free-memory drop while loading: the weights (with a vision tower) + <= 0.3 GiB."""
    _, rows, _ = explain(name)
    weights = rows["weights per GPU"]
    assert weights.agrees and 0 <= float(weights.logged) - float(weights.predicted) <= 0.30


def test_a_modified_budget_shows_as_a_difference():
    """PR 18263 shrinks the stock budget; the stock replay says so instead of agreeing."""
    _, rows, _ = explain("qwen3-30b-a3b-sglang18263.log")
    assert rows["max_total_num_tokens"].agrees is False


def test_mem_fraction_static_is_read_wherever_the_log_prints_it():
    wrapped = ("[2025-03-27 21:30:00] server_args=ServerArgs(model_path='m', mem_fraction_static=0.836, page_size=1, "
               "tp_size=1, bucket_tim\ne_to_first_token=None)\n")
    assert parse_startup_log(wrapped).settings["mem_fraction_static"] == 0.836
    debug = "self.server_args.mem_fraction_static 0.911\nLoad weight end. avail mem=230.20 GB, mem usage=56.98 GB.\n"
    log = parse_startup_log(debug)
    assert log.settings["mem_fraction_static"] == 0.911 and "mem_fraction_static" not in log.missing


def test_each_rank_counts_its_target_model_not_a_draft_loaded_after_it():
    """The smallest reading over the ranks, each rank's first: a speculative draft logs its own load later."""
    text = "\n".join([
        "[2026-08-28 21:19:30 TP0] Load weight begin. avail mem=111.97 GB",
        "[2026-08-28 21:19:30 TP1] Load weight begin. avail mem=111.90 GB",
        "[2026-08-28 21:32:38 TP0] Load weight end. elapsed=787.55 s, type=X, avail mem=29.01 GB, mem usage=82.97 GB.",
        "[2026-08-28 21:32:38 TP1] Load weight end. elapsed=787.55 s, type=X, avail mem=29.05 GB, mem usage=82.85 GB.",
        "[2026-08-28 21:32:39 TP0] Load weight begin. avail mem=28.81 GB",
        "[2026-08-28 21:34:13 TP0] Load weight end. elapsed=94.49 s, type=XMTP, avail mem=30.67 GB, mem usage=-1.86 GB.",
        "[2026-08-28 21:34:15 TP0] KV Cache is allocated. dtype: torch.bfloat16, #tokens: 159552, K size: 1.83 GB, "
        "V size: 1.83 GB",
        "[2026-08-28 21:34:15 TP0] KV Cache is allocated. dtype: torch.bfloat16, #tokens: 159552, K size: 0.33 GB, "
        "V size: 0.33 GB",
    ])
    log = parse_startup_log(text)
    assert (log.sglang["before_gib"], log.sglang["after_gib"], log.weights_gib) == (111.90, 29.01, 82.97)
    assert (log.sglang["k_size_gib"], log.sglang["architecture"]) == (1.83, "X")


def test_rank_tags_of_every_layout_are_told_apart():
    text = "\n".join([
        "[2025-11-04 05:27:13 DP0 TP0 EP0] Load weight begin. avail mem=182.18 GB",
        "[2025-11-04 05:27:13 DP1 TP1 EP1] Load weight begin. avail mem=182.10 GB",
        "[gpu=0] Load weight begin. avail mem=78.84 GB",
        "[2025-11-04 05:27:13 DP0 TP0 EP0] Load weight begin. avail mem=75.11 GB",  # the same rank again: a draft
    ])
    assert parse_startup_log(text).sglang["before_gib"] == 78.84


def test_only_the_architectures_sglang_splits_get_a_sliding_window_pool():
    """configs/model_config.py is_hybrid_swa_model: gpt-oss is split, Gemma-3 keeps all 34 layers in one pool (as the
    Gemma-3-4B log of PR #4826 shows: its K size counts every layer)."""
    from kvplan.model import load_model
    from kvplan.plan.deployment import Deployment
    from kvplan.plan.estimate import estimate

    dep = Deployment(engine="sglang", kv_cache_memory_bytes=2**30, max_model_len=4096)
    gemma = estimate(load_model("gemma-3-4b"), dep)
    assert gemma.kv_cache_tokens == 2**30 // (34 * 4 * 256 * 2 * 2) and "swa_tokens" not in gemma.engine_report["figures"]
    oss = estimate(load_model("gpt-oss-20b"), dep)
    all_layers = 2**30 // (24 * 8 * 64 * 2 * 2)
    assert oss.kv_cache_tokens == int(all_layers * 24 / (0.8 * 12 + 12))


def test_a_hybrid_swa_log_replays_the_full_attention_share():
    """A log shaped like SGLang's for gpt-oss-20b (figures made up for the test): the replay splits the pool with the
    server_args swa_full_tokens_ratio, as set_num_tokens_hybrid_swa does."""
    text = ("[t] server_args=ServerArgs(model_path='openai/gpt-oss-20b', mem_fraction_static=0.85, max_total_tokens=None, "
            "page_size=1, swa_full_tokens_ratio=0.5, disable_hybrid_swa_memory=False, tp_size=1)\n"
            "[t] Load weight begin. avail mem=78.50 GB\n"
            "[t] Load weight end. type=GptOssForCausalLM, dtype=torch.bfloat16, avail mem=65.00 GB, mem usage=13.50 GB.\n"
            "[t] KV Cache is allocated. #tokens: 1000000, K size: 1.00 GB, V size: 1.00 GB\n")
    log = parse_startup_log(text)
    loaded = load_model_from_flags("gpt-oss-20b")
    dep, mml = deployment_for_log(log, loaded.spec, {}, None, None)
    row = next(r for r in explain_log(log, loaded, dep, mml).rows if r.figure == "max_total_num_tokens")
    all_layers = int((65.00 - 78.50 * 0.15) * 2**30) // (24 * 8 * 64 * 2 * 2)
    assert row.predicted.startswith(f"{int(all_layers * 24 / (0.5 * 12 + 12)):,} (range")


def test_settings_the_replay_does_not_model_are_named():
    text = ("[t] server_args=ServerArgs(model_path='m', mem_fraction_static=0.8, tp_size=8, dp_size=8, "
            "enable_dp_attention=True, speculative_algorithm='EAGLE', page_size=1)\n"
            "[t TP0] Load weight begin. avail mem=78.50 GB\n"
            "[t TP0] Load weight end. type=DeepseekV3ForCausalLM, avail mem=20.00 GB, mem usage=58.50 GB.\n"
            "[t TP0] KV Cache is allocated. #tokens: 100000, KV size: 6.54 GB\n")
    log = parse_startup_log(text)
    loaded = load_model_from_flags("deepseek-v3")
    dep, mml = deployment_for_log(log, loaded.spec, {}, None, None)
    notes = " ".join(explain_log(log, loaded, dep, mml).notes)
    assert "DP attention (dp_size 8)" in notes and "speculative decoding (EAGLE)" in notes
