"""Workloads: length distributions, seeded synthetic streams, synthetic token ids, JSONL traces."""

import json
import random
import statistics
from pathlib import Path

import pytest

from kvplan.errors import InputError
from kvplan.simulation import Distribution, SyntheticWorkload, TraceWorkload
from kvplan.simulation.workload import output_token, output_tokens

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "trace.jsonl"


@pytest.mark.parametrize("text,kind", [("500", "fixed"), ("uniform:50:4000", "uniform"), ("lognormal:1000:1", "lognormal"),
                                       ("exponential:200", "exponential"), (" Uniform:1:1 ", "uniform")])
def test_distribution_forms(text, kind):
    assert Distribution.parse(text, "x").kind == kind


@pytest.mark.parametrize("text", ["", "abc", "uniform:5", "uniform:9:3", "uniform:0:5", "lognormal:0.5:1", "lognormal:100:11",
                                  "lognormal:nan:1", "exponential:inf", "normal:5:1", "-3", "1.5", "uniform:a:b"])
def test_distribution_rejects(text):
    with pytest.raises(InputError, match="x:"):
        Distribution.parse(text, "x")


def test_distribution_samples():
    rng = random.Random(1)
    uniform = [Distribution.parse("uniform:50:4000", "x").sample(rng) for _ in range(20000)]
    assert min(uniform) >= 50 and max(uniform) <= 4000 and abs(statistics.mean(uniform) - 2025) < 40
    lognormal = [Distribution.parse("lognormal:1000:1", "x").sample(rng) for _ in range(40000)]
    assert abs(statistics.mean(lognormal) / 1000 - 1) < 0.05 and min(lognormal) >= 1
    assert abs(statistics.mean(Distribution.parse("exponential:300", "x").sample(rng) for _ in range(20000)) - 300) < 15


def test_synthetic_is_seeded_and_lazy():
    make = lambda seed: SyntheticWorkload(50, Distribution.parse("lognormal:300:1", "p"),
                                          Distribution.parse("uniform:1:99", "o"), arrival_rate=2.0, seed=seed)
    assert list(make(3)) == list(make(3)) and list(make(3)) != list(make(4))
    items = list(make(3))
    arrivals = [i.arrival_time for i in items]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0 and 10 < arrivals[-1] < 45  # ~49 gaps of 0.5
    huge = SyntheticWorkload(1 << 30, Distribution.parse("5", "p"), Distribution.parse("5", "o"))
    assert next(iter(huge)).index == 0  # nothing is materialized up front


def test_synthetic_token_ids_share_only_prefixes():
    w = SyntheticWorkload(6, Distribution.parse("4", "p"), Distribution.parse("2", "o"), shared_prefix=3, prefix_groups=2)
    items = list(w)
    ids = [i.prompt_ids() for i in items]
    assert all(len(x) == 7 for x in ids)
    assert ids[0][:3] == ids[2][:3] == ids[4][:3] != ids[1][:3] == ids[3][:3]
    own = [tuple(x[3:]) for x in ids]
    assert len(set(own)) == 6 and not set().union(*map(set, own)) & set().union(*(set(x[:3]) for x in ids))
    outs = {output_token(k, i) for k in range(6) for i in range(5)}
    assert len(outs) == 30 and all(t < 0 for t in outs)
    assert list(output_tokens(4, 2, 3)) == [output_token(4, i) for i in (2, 3, 4)]


@pytest.mark.parametrize("kw,match", [({"num_requests": 0}, "--requests"), ({"arrival_rate": -1.0}, "--arrival-rate"),
                                      ({"num_samples": 0}, "--n"), ({"shared_prefix": -1}, "--shared-prefix"),
                                      ({"prefix_groups": 0}, "--prefix-groups")])
def test_synthetic_validation(kw, match):
    args = {"num_requests": 1, "prompt_len": Distribution.parse("1", "p"), "output_len": Distribution.parse("1", "o")}
    with pytest.raises(InputError, match=match):
        SyntheticWorkload(**(args | kw))


def test_example_trace_parses():
    items = list(TraceWorkload(EXAMPLE))
    assert len(items) == TraceWorkload(EXAMPLE).validate() == 24
    grouped = [i for i in items if i.prefix_group is not None]
    assert grouped and all(i.num_prompt_tokens > i.prefix_len > 0 for i in grouped)
    assert any(i.prompt_token_ids for i in items) and any(i.num_samples == 3 for i in items)
    by_group = {}
    for i in grouped:
        by_group.setdefault(i.label, set()).add(tuple(i.prompt_ids()[:i.prefix_len]))
    assert all(len(prefixes) == 1 for prefixes in by_group.values())


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"prompt_len": 5}', "missing 'output_len'"),
    ('{"prompt_len": 5, "output_len": 0}', "'output_len' must be an integer >= 1"),
    ('{"prompt_len": 5, "output_len": 2, "arival": 1}', "unknown key 'arival'"),
    ('{"output_len": 2}', "exactly one of"),
    ('{"prompt": [], "output_len": 2}', "non-empty list"),
    ('{"prompt": [1, -2], "output_len": 2}', "token ids"),
    ('{"prompt": [1, 1099511627776], "output_len": 2}', "token ids"),
    ('{"prompt_len": 5, "output_len": 2, "arrival": -1}', "'arrival'"),
    ('{"prompt_len": 5, "output_len": 2, "arrival": 0.1}', "earlier than the previous"),
    ('{"prompt_len": 5, "output_len": 2, "prefix_len": 3}', "needs a 'prefix_group'"),
    ('{"prompt_len": 5, "output_len": 2, "prefix_group": "g", "prefix_len": 6}', "exceeds 'prompt_len'"),
    ('{"prompt_len": 5, "output_len": 2, "n": true}', "'n' must be"),
    ('{"prompt_len": 5.5, "output_len": 2}', "'prompt_len' must be"),
]


@pytest.mark.parametrize("line,match", BAD_LINES)
def test_malformed_trace_line_names_its_line(tmp_path, line, match):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt_len": 5, "output_len": 2, "arrival": 0.5}\n\n' + line + "\n")
    workload = TraceWorkload(path)
    first = next(iter(workload))  # streamed: the good first line comes out before the bad one is read
    assert first.num_prompt_tokens == 5
    with pytest.raises(InputError, match=f"t.jsonl:3: .*{match}"):
        workload.validate()


def test_trace_file_errors(tmp_path):
    with pytest.raises(InputError, match="no requests"):
        (tmp_path / "empty.jsonl").write_text("\n\n")
        TraceWorkload(tmp_path / "empty.jsonl").validate()
    with pytest.raises(InputError, match="No such file"):
        TraceWorkload(tmp_path / "missing.jsonl").validate()
    (tmp_path / "bin.jsonl").write_bytes(json.dumps({"prompt_len": 1, "output_len": 1}).encode() + b"\n\xff\xfe\n")
    with pytest.raises(InputError, match="bin.jsonl:2: not UTF-8"):
        TraceWorkload(tmp_path / "bin.jsonl").validate()
