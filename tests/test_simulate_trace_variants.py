"""The shapes real trace files come in: line endings, quoting, exported index columns, time origins,
order, compression, AIPerf's Mooncake keys; each replays as the plain sample does or is refused in
one line naming file:line. Memory stays flat in trace length for every format."""

import csv
import gzip
import io
import json
import tracemalloc
from pathlib import Path

import pytest

from kvplan.cli import main
from kvplan.errors import InputError
from kvplan.model import load_model
from kvplan.model.grouping import page_layout
from kvplan.paging import SchedulerConfig
from kvplan.simulation import Simulator, StepClock, TraceWorkload

DATA = Path(__file__).resolve().parent / "data" / "traces"
CSV_SAMPLES = ["azure_2023_sample.csv", "azure_2024_sample.csv", "azure_2025_multimodal_sample.csv",
               "burstgpt_sample.csv"]
JSONL_SAMPLES = ["mooncake_sample.jsonl", "mooncake_conversation_sample.jsonl", "mooncake_arxiv_slice_sample.jsonl",
                 "kvplan_sample.jsonl"]


def replayed(path: Path, **kw) -> list[tuple]:
    """What the simulator is given: (arrival, prompt tokens, output tokens, hash ids) per request."""
    workload = TraceWorkload(path, **kw)
    return [(i.arrival_time, i.num_prompt_tokens, i.output_len, i.hash_ids) for i in workload]


def rewritten(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize("name", CSV_SAMPLES + JSONL_SAMPLES)
@pytest.mark.parametrize("variant", ["crlf", "blank lines", "byte-order mark"])
def test_line_level_variants_replay_the_same(tmp_path, name, variant):
    text = (DATA / name).read_text()
    if variant == "crlf":  # Windows line endings, as Excel or a .NET export writes them
        text = text.replace("\n", "\r\n")
    elif variant == "blank lines":  # a trailing empty line, a blank one between rows, trailing spaces
        lines = text.splitlines()
        text = "\n".join(lines[:2] + ["", "   "] + lines[2:]) + "\n\n\n"
    else:
        text = "\ufeff" + text
    assert replayed(rewritten(tmp_path, name, text)) == replayed(DATA / name)


def _rows(name: str) -> list[list[str]]:
    with open(DATA / name, newline="") as f:
        return list(csv.reader(f))


def _csv_text(rows, **kw) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n", **kw).writerows(rows)
    return out.getvalue()


@pytest.mark.parametrize("name", CSV_SAMPLES)
@pytest.mark.parametrize("variant", ["all quoted", "pandas index column", "float token counts", "spaces after commas"])
def test_csv_variants_replay_the_same(tmp_path, name, variant):
    rows = _rows(name)
    if variant == "all quoted":
        text = _csv_text(rows, quoting=csv.QUOTE_ALL)
    elif variant == "pandas index column":  # df.to_csv() without index=False
        text = _csv_text([[""] + rows[0]] + [[str(k)] + r for k, r in enumerate(rows[1:])])
    elif variant == "float token counts":  # a column that held a NaN once is written as floats
        tokens = {rows[0].index(c) for c in ("ContextTokens", "GeneratedTokens", "Request tokens",
                                             "Response tokens") if c in rows[0]}
        text = _csv_text([rows[0]] + [[f"{v}.0" if k in tokens else v for k, v in enumerate(r)] for r in rows[1:]])
    else:
        text = "\n".join(", ".join(r) for r in rows) + "\n"
    assert replayed(rewritten(tmp_path, name, text)) == replayed(DATA / name)


def test_extra_and_reordered_columns_are_ignored(tmp_path):
    """BurstGPT's announced SessionID / Elapsed time columns, and columns in another order."""
    path = rewritten(tmp_path, "b.csv", "Session ID,Log Type,Response tokens,Elapsed time,Request tokens,Timestamp\n"
                                        "s1,API log,18,1.5,472,5\ns2,API log,230,3.2,1087,45\n")
    assert replayed(path) == [(0.0, 472, 18, ()), (40.0, 1087, 230, ())]


# ---- time: units, origin, order ----------------------------------------------------------------------

def test_mooncake_time_is_milliseconds_from_the_first_request(tmp_path):
    rows = [(1178625, 600), (1178625, 700), (1181678.5, 800), (1181000, 900), (1190000, 100)]
    path = rewritten(tmp_path, "m.jsonl", "".join(json.dumps({"timestamp": t, "input_length": n, "output_length": 4,
                                                              "hash_ids": [7]}) + "\n" for t, n in rows))
    workload = TraceWorkload(path, speed=2.0)
    arrivals = [i.arrival_time for i in workload]
    # duplicates kept; 1,181,000 is earlier than 1,181,678.5: replayed at the previous arrival
    assert arrivals == pytest.approx([0.0, 0.0, 1.52675, 1.52675, 5.6875])
    assert workload.reordered == 1 and workload.origin_s == 1178.625
    notes = " ".join(workload.notes())
    assert "stamped 1,178.625 s into the file" in notes and "not sorted" in notes


def test_kvplan_time_is_its_own(tmp_path):
    path = rewritten(tmp_path, "k.jsonl", '{"prompt_len": 5, "output_len": 2, "arrival": 7.5}\n')
    workload = TraceWorkload(path)
    assert replayed(path) == [(7.5, 5, 2, ())] and workload.origin_s == 0.0 and workload.notes() == []


def test_skipped_first_row_is_not_the_origin(tmp_path):
    path = rewritten(tmp_path, "b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                                        "3,ChatGPT,10,0,10,API log\n5,ChatGPT,10,4,14,API log\n"
                                        "9,GPT-4,10,4,14,API log\n")
    workload = TraceWorkload(path)
    assert [(i.arrival_time, i.num_prompt_tokens) for i in workload] == [(0.0, 10), (4.0, 10)]
    assert workload.skipped == {"0 Request or Response tokens (failed)": 1}


@pytest.mark.parametrize("stamp,seconds", [("2024-05-12 00:00:00+00:00", 0.0), ("2024-05-12 00:00:00.5+00:00", 0.5),
                                           ("2024-05-12 02:00:01.25+02:00", 1.25), ("2024-05-12T00:00:02Z", 2.0),
                                           ("2024-05-12 00:00:03.1234567", 3.1234567)])
def test_azure_time_stamps_in_every_form_seen(tmp_path, stamp, seconds):
    """2023: naive, 7 fractional digits; 2024: +00:00, with or without a fraction; 2025: T...Z."""
    path = rewritten(tmp_path, "a.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                        f"2024-05-12 00:00:00+00:00,5,5\n{stamp},5,5\n")
    assert replayed(path)[1][0] == pytest.approx(seconds, abs=1e-9)


def test_trace_limit_counts_replayed_requests_and_speed_scales_from_the_origin():
    path = DATA / "burstgpt_sample.csv"
    every = replayed(path)
    assert replayed(path, limit=3) == every[:3]
    assert [a for a, *_ in replayed(path, speed=4.0)] == pytest.approx([a / 4 for a, *_ in every])


# ---- refused in one line -----------------------------------------------------------------------------

@pytest.mark.parametrize("compress,kind", [(gzip.compress, "gzip"), (lambda b: b"PK\x03\x04" + b, "zip")])
def test_compressed_traces_are_refused_with_what_to_run(tmp_path, capsys, compress, kind):
    path = tmp_path / "AzureLMMInferenceTrace_multimodal.csv.gz"
    path.write_bytes(compress((DATA / "azure_2025_multimodal_sample.csv").read_bytes()))
    code = main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and f"a {kind}-compressed file; decompress it first" in err and err.count("\n") == 1


@pytest.mark.parametrize("text,line,match", [
    ('{"timestamp": 0, "input_length": 10, "output_length": 2}\n{"text_input": "hi", "output_length": 3}\n', 2,
     "missing 'timestamp'"),  # AIPerf's text_input lines carry no length kvplan can replay
    ('{"session_id": "a", "delay": 5, "input_length": 10, "output_length": 2}\n', 1, "missing 'timestamp'"),
    ('{"timestamp": 0, "output_length": 2, "hash_ids": [1]}\n', 1, "missing 'input_length'"),
    ('{"timestamp": 0, "input_length": 10.5, "output_length": 2}\n', 1, "'input_length' must be an integer"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", 0, "no requests"),
    ('{\n    "timestamp": 27482,\n    "input_length": 6955\n}\n', 1, "an indented JSON object; a trace has one JSON "
     "object per line \\(jq -c . FILE"),  # the Mooncake README's sample, pasted
    ('[{"timestamp": 0, "input_length": 10, "output_length": 2}]\n', 1, "a JSON array; .* \\(jq -c '.\\[\\]'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-12 00:00:00+00:00,12.5,3\n", 2,
     "ContextTokens must be a whole number of tokens, got '12.5'"),
    ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,GPT-4,,1,1,API log\n", 2,
     "Request tokens must be a whole number of tokens, got ''"),
    ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,GPT-4,1e400,1,1,API log\n", 2,
     "Request tokens must be a whole number"),
])
def test_bad_variants_name_their_line(tmp_path, text, line, match):
    path = rewritten(tmp_path, "t.trace", text)
    where = f"t.trace:{line}: .*" if line else ""
    with pytest.raises(InputError, match=f"{where}{match}"):
        TraceWorkload(path).validate()


# ---- caching: requests in one step ---------------------------------------------------------------------

def test_same_step_requests_hit_each_other(tmp_path):
    """Two requests stamped alike, sharing their first trace block: admitted in one step, the second
    hits the blocks the first registered when they were allocated (vLLM's rule), as it does one at a
    time: 512 tokens either way. Real traces stamp several requests alike (FAST'25: 10 at 0 ms)."""
    line = '{"timestamp": 0, "input_length": 600, "output_length": 2, "hash_ids": [1, %d]}\n'
    path = rewritten(tmp_path, "m.jsonl", line % 2 + line % 3)
    layout = page_layout(load_model("llama-3.1-8b").spec)

    def cached(max_num_seqs):
        sim = Simulator(layout, 1000, 16, 4096, SchedulerConfig(max_num_seqs, 8192), StepClock())
        return sim.run(TraceWorkload(path)).cached_tokens

    assert (cached(256), cached(1)) == (512, 512)


# ---- memory: streamed ----------------------------------------------------------------------------------

def _write(path: Path, rows: int, fmt: str) -> None:
    with open(path, "w") as f:
        if fmt == "azure":
            f.write("TIMESTAMP,ContextTokens,GeneratedTokens\n")
        elif fmt == "burstgpt":
            f.write("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n")
        for i in range(rows):
            n = 500 + i % 7000
            if fmt == "mooncake":
                ids = [0] + list(range(i * 20, i * 20 + (n + 511) // 512 - 1))
                f.write(json.dumps({"timestamp": i * 7, "input_length": n, "output_length": 9, "hash_ids": ids}) + "\n")
            elif fmt == "azure":
                f.write(f"2024-05-10 {i // 3_600_000 % 24:02d}:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}."
                        f"{i % 1000:03d}311+00:00,{n},9\n")
            else:
                f.write(f"{i * 0.25},ChatGPT,{n},{i % 3},{n + i % 3},Conversation log\n")


@pytest.mark.parametrize("fmt", ["mooncake", "azure", "burstgpt"])
def test_reading_memory_is_flat_in_trace_length(tmp_path, fmt):
    peaks = []
    for rows in (1_000, 40_000):
        path = tmp_path / f"{rows}.{fmt}"
        _write(path, rows, fmt)
        tracemalloc.start()
        try:
            count = TraceWorkload(path).validate()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert count == (rows - -(-rows // 3) if fmt == "burstgpt" else rows)  # BurstGPT: every third failed
    assert peaks[1] < 2 * peaks[0] + 64 * 1024, peaks  # 40x the rows, one line and one request at a time


def test_azure_date_times_against_datetime():
    """Differences of parsed time stamps equal datetime's, to the microsecond it keeps, over 2,000
    random stamps in every zone form; impossible dates and times are not date-times."""
    import random
    from datetime import datetime, timezone

    from kvplan.simulation.trace_formats import _nanoseconds

    rng = random.Random(3)
    ref_text, ref = "2023-11-16 18:15:46", datetime(2023, 11, 16, 18, 15, 46, tzinfo=timezone.utc)
    for _ in range(2_000):
        stamp = datetime(rng.randint(1970, 2100), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                         rng.randint(0, 59), rng.randint(0, 59), rng.randrange(10**6))
        zone = rng.choice(["", "Z", "+00:00", "+05:30", "-08:00"])
        text = stamp.isoformat(sep=rng.choice([" ", "T"]), timespec="microseconds") + zone
        aware = datetime.fromisoformat(text.replace("Z", "+00:00"))
        aware = aware if aware.tzinfo else aware.replace(tzinfo=timezone.utc)
        d = aware - ref
        expected_ns = (d.days * 86400 + d.seconds) * 10**9 + d.microseconds * 1000
        assert _nanoseconds(text) - _nanoseconds(ref_text) == expected_ns, text
    for bad in ("2023-02-30 00:00:00", "2023-11-16 24:00:00", "2023-11-16 18:60:00", "2023-11-16 18:00:60",
                "\u0662\u0660\u0662\u0663-11-16 18:00:00", "2023-11-16", "18:00:00"):
        assert _nanoseconds(bad) is None, bad



def test_requests_longer_than_the_context_are_noted(capsys):
    """Mooncake prompts reach 100k tokens; a model with a shorter context replays them cut, and says so."""
    path = DATA / "mooncake_conversation_sample.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    longer = sum(r["input_length"] + r["output_length"] > 4096 for r in rows)
    assert main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096", "--trace", str(path),
                 "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["truncated_requests"] == longer == 7 and d["completed_requests"] == len(rows)
    assert f"{longer} requests longer than max_model_len 4,096 cut to it" in " ".join(d["notes"])


@pytest.mark.parametrize("text,line", [
    ("TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:17:03.9799600,4808,10\r\n"
     "2023-11-16 18:17:61,5,5\r\n", 3),
    ('{"timestamp": 0, "input_length": 600, "output_length": 2, "hash_ids": [1, 2]}\n{"timestamp": 1}\n', 2),
    ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,472,18,490\n", 2),
])
def test_cli_refuses_a_bad_row_in_one_line(tmp_path, capsys, text, line):
    path = rewritten(tmp_path, "real.trace", text)
    code = main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--trace", str(path), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and captured.err.startswith(f"kvplan: error: {path}:{line}: ")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_a_late_origin_is_noted_in_plain_seconds(tmp_path):
    """A BurstGPT slice 61 days in: the note gives the stamp as a number a person reads, not 5.2704e+06."""
    path = rewritten(tmp_path, "b.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                                        "5270400,ChatGPT,10,4,14,API log\n5270401.5,ChatGPT,10,4,14,API log\n")
    workload = TraceWorkload(path)
    assert [i.arrival_time for i in workload] == [0.0, 1.5]
    assert workload.notes() == [
        "trace: time counted from the first replayed request, stamped 5,270,400 s into the file"]
