"""`kvplan sweep`: the vectorized rows equal `estimate` exactly; grid limits; every output format; the plot."""

import csv
import io
import json
import random
from fractions import Fraction

import pandas as pd
import pytest

from kvplan.cli import main
from kvplan.cli.sweep import parse_contexts
from kvplan.dtypes import KV_FORMATS, kv_format
from kvplan.errors import InputError
from kvplan.hardware import GPUS, find_gpu
from kvplan.model import ChunkedLocal, FullAttention, ModelSpec, bundled_names, load_model
from kvplan.sweep import COLUMNS, SweepGrid, estimate_row, request_bytes, run_sweep, select

KEY = ["model", "gpu", "tp", "pp", "weights_dtype", "kv_dtype", "context_tokens"]
# One model per attention layout: GQA, MLA, sliding+full, all-sliding, state+full, MXFP4 + tiny window, deep.
KINDS = ("llama-3.1-8b", "deepseek-v2-lite", "gemma-3-27b", "mistral-7b-v0.1", "qwen3-next-80b-a3b", "gpt-oss-20b",
         "llama-3.1-405b", "qwen2.5-7b")


def grid_for(**kw) -> SweepGrid:
    base = dict(models=KINDS, gpus=(find_gpu("H100"), find_gpu("L4"), find_gpu("A100-40GB"), find_gpu("MI300X")),
                tp=(1, 2, 8), pp=(1, 3), dtypes=(None, "fp8", "int4"), kv_dtypes=("auto", "fp8", "int8", "nvfp4"),
                contexts=(1, 15, 16, 17, 127, 128, 129, 1000, 1024, 1025, 4095, 4096, 4097, 32768, 100_000, 131072))
    base.update(kw)
    return SweepGrid(**base)


@pytest.fixture(scope="module")
def sweep():
    return run_sweep(grid_for())


def test_vectorized_rows_equal_estimate_on_random_sample(sweep):
    grid, frame = sweep.grid, sweep.frame
    assert sweep.vectorized and not frame.duplicated(KEY).any()
    by_key = frame.set_index(KEY)
    models = {m: load_model(m) for m in grid.models}
    rng = random.Random(20240601)
    checked = 0
    while checked < 300:
        m, g, t, p, d, k, c = (rng.choice(getattr(grid, a)) for a in
                               ("models", "gpus", "tp", "pp", "dtypes", "kv_dtypes", "contexts"))
        try:
            expected = estimate_row(models[m], grid, g, t, p, d, k, c)
        except InputError as exc:  # estimate refuses it: the sweep must have skipped it too
            assert any(str(exc) in s for s in sweep.skipped)
            assert not ((frame["model"] == models[m].spec.name) & (frame["tp"] == t) & (frame["pp"] == p)).any()
            continue
        row = by_key.loc[tuple(expected[c] for c in KEY)]
        for col in COLUMNS:
            if col not in KEY:
                value = None if pd.isna(row[col]) else row[col]
                assert value == expected[col], (col, expected)
                # exact integers, no floats; only a budget that weights and overhead exceed is null
                assert type(expected[col]) in (int, bool) or (col == "kv_budget_bytes" and expected[col] is None)
        checked += 1


def test_row_count_and_skips(sweep):
    grid = sweep.grid
    # qwen2.5-7b has 28 heads: tp=8 is refused by estimate, so all its tp=8 rows are skipped
    assert any(s.startswith("qwen2.5-7b tp=8 pp=1: --tp 8 does not divide") for s in sweep.skipped)
    per_model_tp = grid.size // len(grid.models) // len(grid.tp)  # every GPU, pp, dtype, KV dtype, context
    assert len(sweep.frame) == grid.size - per_model_tp
    assert list(sweep.frame.columns) == list(COLUMNS)


def test_per_row_loop_equals_vectorized():
    grid = grid_for(models=("gemma-3-27b", "qwen3-next-80b-a3b"), gpus=(find_gpu("H100"), find_gpu("L4")),
                    tp=(1, 4), pp=(1, 2), dtypes=(None, "fp8"), kv_dtypes=("auto", "int4"), contexts=(7, 1024, 5000))
    fast = run_sweep(grid)
    slow = run_sweep(grid, vectorize=False)
    assert fast.vectorized and not slow.vectorized
    pd.testing.assert_frame_equal(fast.frame, slow.frame)


def test_other_engine_rows_come_from_estimate():
    grid = SweepGrid(models=("llama-3.1-8b", "gemma-3-27b"), gpus=(find_gpu("H100"),), tp=(1, 2),
                     kv_dtypes=("auto", "fp8"), contexts=(4096, 32768), engine="vllm")
    result = run_sweep(grid)
    assert not result.vectorized and len(result.frame) == grid.size
    models = {m: load_model(m) for m in grid.models}
    for r in result.frame.itertuples(index=False):
        m = next(k for k, v in models.items() if v.spec.name == r.model)
        kv = "auto" if r.kv_dtype != "fp8" else "fp8"
        assert r._asdict() == estimate_row(models[m], grid, find_gpu(r.gpu), r.tp, r.pp, None, kv, r.context_tokens)
    with pytest.raises(InputError, match="generic engine only"):
        run_sweep(grid, vectorize=True)


def test_request_bytes_matches_spec_exactly():
    specs = [load_model(n).spec for n in sorted({p.stem for p in bundled_names().values()})]
    chunked = ChunkedLocal(tuple(range(0, 6)), 8, 128, 128, window_tokens=8192)
    full = FullAttention(tuple(range(6, 8)), 8, 128, 128)
    specs.append(ModelSpec("chunked", "llama4", (chunked, full), 8))
    contexts = [1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025, 4095, 4096, 4097, 8191, 8192, 8193,
                16385, 100_003, 131072, 1 << 20]
    for spec in specs:
        for kv_name in KV_FORMATS:
            kv = kv_format(kv_name)
            for tp in (1, 2, 8):
                for bs in (1, 16, 64):
                    got = request_bytes(spec, kv, tp, bs, contexts)
                    want = [spec.bytes_per_request(c, kv, tp, bs) for c in contexts]
                    assert got.tolist() == want, (spec.name, kv_name, tp, bs)


def test_request_bytes_refuses_int64_overflow():
    spec = load_model("llama-3.1-405b").spec
    with pytest.raises(InputError, match="64-bit"):
        request_bytes(spec, kv_format("fp32"), 1, 1, [1 << 45])


def test_memory_limit_refused_before_any_work(tmp_path, capsys):
    grid = SweepGrid(models=("no-such-model",), gpus=GPUS, contexts=tuple(range(1, 300_001)))
    with pytest.raises(InputError, match=r"3,600,000 configurations need about .* over the 1.00 GiB limit"):
        run_sweep(grid, max_memory_bytes=1 << 30)  # refused before the unknown model is even looked up
    out = tmp_path / "grid.csv"
    rc = main(["sweep", "--gpu", "all", "--context", "1:90000:1", "--max-memory", "100MiB", "-o", str(out)])
    assert rc == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raise --max-memory" in err[0]


def test_select_filters():
    frame = run_sweep(grid_for(models=("llama-3.1-8b",), tp=(1,), pp=(1,))).frame
    fits = select(frame, fits_only=True)
    assert len(fits) and fits["fits"].all() and fits["within_model_max"].all()
    assert len(fits) == (frame["fits"] & frame["within_model_max"]).sum()
    many = select(frame, min_users=100)
    assert (many["max_concurrent_users"] >= 100).all() and len(many) == (frame["max_concurrent_users"] >= 100).sum()
    assert select(frame) is frame


def test_grid_validation():
    for kw, match in ((dict(tp=(0,)), "positive"), (dict(dtypes=("int3",)), "unknown --dtype"),
                      (dict(kv_dtypes=("fp9",)), "unknown --kv-dtype"), (dict(contexts=()), "no contexts"),
                      (dict(tp=(2, 2)), "twice")):
        with pytest.raises(InputError, match=match):
            grid_for(**kw)


def test_parse_contexts():
    assert parse_contexts("4k,1k, 4k") == (1024, 4096)
    assert parse_contexts("1k:16k:x2") == (1024, 2048, 4096, 8192, 16384)
    assert parse_contexts("1000:3000:1000,512") == (512, 1000, 2000, 3000)
    for bad in ("1k:2k", "2k:1k:x2", "1k:4k:x1", "1k:4k:x", "abc"):
        with pytest.raises(InputError):
            parse_contexts(bad)


CLI = ["sweep", "-m", "llama-3.1-8b,qwen3-8b", "--gpu", "H100,L4", "--tp", "1,2", "--kv-dtype", "auto,fp8",
       "--context", "1k:32k:x2"]


def test_cli_csv_equals_library(capsys):
    assert main(CLI + ["-f", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    grid = SweepGrid(models=("llama-3.1-8b", "qwen3-8b"), gpus=(find_gpu("H100"), find_gpu("L4")), tp=(1, 2),
                     kv_dtypes=("auto", "fp8"), contexts=parse_contexts("1k:32k:x2"))
    expected = run_sweep(grid).frame
    assert len(frame) == grid.size == 2 * 2 * 2 * 2 * 6
    for col in COLUMNS:
        assert frame[col].astype(str).tolist() == expected[col].astype(str).tolist(), col


def test_cli_files_and_formats(tmp_path, capsys):
    parquet = tmp_path / "grid.parquet"
    pytest.importorskip("pyarrow")
    assert main(CLI + ["-o", str(parquet)]) == 0  # format from the suffix
    back = pd.read_parquet(parquet)
    assert len(back) == 96 and list(back.columns) == list(COLUMNS)
    assert back["max_concurrent_users"].dtype == "int64" and back["fits"].dtype == bool
    capsys.readouterr()
    assert main(CLI + ["-f", "json", "--fits-only"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records and all(r["fits"] for r in records)
    assert main(CLI + ["-f", "markdown", "--min-users", "50"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("## kvplan sweep:") and "| model | GPU |" in md and "GiB = 2^30 bytes." in md
    assert main(CLI + ["--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "showing 5 of 96 rows" in out


def test_cli_plot(tmp_path, capsys):
    png = tmp_path / "plots" / "users.png"
    assert main(CLI + ["-f", "csv", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["users.png"]  # written atomically, no temp left
    assert "plotted 16 configuration(s)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--dtype", "int3"], "unknown --dtype"),
    (["-f", "parquet"], "give --output FILE.parquet"),
    (["--gpu", "H1000"], "unknown --gpu"),
    (["-m", "llama-9b"], "unknown model"),
    (["--context", "1k:2k"], "START:STOP:STEP"),
    (["--max-memory", "lots"], "--max-memory"),
])
def test_cli_bad_input_exit_2(argv, message, capsys):
    assert main(["sweep"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_sweep_figures_by_hand():
    """Two rows recomputed from first principles (GQA bytes per token, block rounding, pool in whole blocks)."""
    grid = SweepGrid(models=("llama-3.1-8b",), gpus=(find_gpu("H100"),), contexts=(1000, 8192))
    frame = run_sweep(grid).frame
    per_token = 32 * 8 * (128 + 128) * 2  # layers x KV heads x (K + V dims) x bf16 bytes
    page = per_token * 16
    budget = int(frame["kv_budget_bytes"][0])
    pool = budget // page * page
    for row, context in zip(frame.itertuples(), (1000, 8192)):
        blocks = -(-context // 16)
        assert row.kv_bytes_per_request_per_gpu == blocks * page
        assert row.max_concurrent_users == pool // (blocks * page)
        assert row.num_blocks == budget // page and row.kv_cache_tokens == budget // page * 16
    assert Fraction(int(frame["kv_bytes_per_request"][0]), page) == 63  # 1000 tokens fill 63 blocks


def test_no_budget_is_null_and_does_not_fit(tmp_path, capsys):
    """qwen3-32b's bf16 weights (~65.5 GB) exceed 0.9 x an L4's 24 GB: no KV budget, written as null."""
    args = ["sweep", "-m", "qwen3-32b", "--gpu", "L4,H100", "--context", "4k"]
    assert main(args + ["-f", "csv"]) == 0
    rows = {r["gpu"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    l4, h100 = rows["L4"], rows["H100-SXM"]
    weights = int(l4["weights_bytes_per_gpu"])
    assert weights > 0.9 * find_gpu("L4").memory_bytes  # the weights alone do not fit
    assert l4["kv_budget_bytes"] == "" and l4["fits"] == "False"
    assert (l4["num_blocks"], l4["kv_cache_tokens"], l4["max_concurrent_users"]) == ("0", "0", "0")
    assert int(h100["kv_budget_bytes"]) > 0 and h100["fits"] == "True"
    pytest.importorskip("pyarrow")
    parquet = tmp_path / "grid.parquet"
    assert main(args + ["-o", str(parquet)]) == 0
    back = pd.read_parquet(parquet)
    assert str(back["kv_budget_bytes"].dtype) == "Int64" and back["kv_budget_bytes"].isna().tolist() == [True, False]


def test_frame_fast_path_writes_what_the_rows_say():
    """CSV and JSON of a sweep are written by pandas from the frame: the same text and objects as row by row."""
    from dataclasses import replace

    from kvplan.report.formats import csv_rows, json_doc
    from kvplan.report.sweep import sweep_report

    frame = run_sweep(SweepGrid(models=("qwen3-32b", "gemma-2-9b"), gpus=(find_gpu("L4"), find_gpu("H200")),
                                kv_dtypes=("auto", "fp8"), contexts=(1000, 8192, 200_000))).frame
    fast = sweep_report(frame)
    slow = replace(fast, records=replace(fast.records, frame=None))
    slow.data = slow.records
    assert csv_rows.render(fast) == csv_rows.render(slow)
    assert json.loads(json_doc.render(fast)) == json.loads(json_doc.render(slow))
    assert frame["kv_budget_bytes"].isna().any()  # nulls included
