"""Trace formats (kvplan, Mooncake, Azure, BurstGPT): detection, streaming, errors with line numbers,
and prefix-cache hits equal to an LRU cache computed here from the raw files, independently of kvplan."""

import csv
import json
import random
from collections import OrderedDict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.cli import main
from kvplan.errors import InputError
from kvplan.model import load_model
from kvplan.model.grouping import page_layout
from kvplan.paging import SchedulerConfig
from kvplan.simulation import Simulator, StepClock, TraceWorkload
from kvplan.simulation.tokens import SegmentedPrompt

DATA = Path(__file__).resolve().parent / "data" / "traces"
SAMPLES = {"mooncake": "mooncake_sample.jsonl", "kvplan": "kvplan_sample.jsonl", "azure": "azure_2023_sample.csv",
           "azure-2024": "azure_2024_sample.csv", "burstgpt": "burstgpt_sample.csv",
           # the real files' layouts, own rows: FAST'25 (ids of one content always cover the same tokens,
           # several requests per time stamp), a slice of the arXiv trace (time not from 0), Azure 2025 (LMM)
           "mooncake-conversation": "mooncake_conversation_sample.jsonl",
           "mooncake-arxiv": "mooncake_arxiv_slice_sample.jsonl", "azure-2025": "azure_2025_multimodal_sample.csv"}
LAYOUT = page_layout(load_model("llama-3.1-8b").spec)


# ---- the oracle: token identities from the raw file, an LRU of full blocks -------------------------

def raw_requests(name: str, trace_block: int = 512) -> list[list]:
    """Each replayed request's prompt as a list of token identities, read with json/csv only.

    Mooncake: a token of trace block j is (ids[0..j], tokens in block j, offset): requests share a
    block when they share every id up to it and the block has the same length (a partial last block
    matches only a partial block of the same length). Tokens past the ids are the request's own.
    kvplan: (group, offset) for a group prefix, the given id for explicit tokens, else the request's own.
    CSV formats carry no sharing: every token is the request's own."""
    path = DATA / SAMPLES[name]
    prompts = []
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                p, o = (int(row["ContextTokens"]), int(row["GeneratedTokens"])) if "ContextTokens" in row else \
                    (int(row["Request tokens"]), int(row["Response tokens"]))
                if p and o:
                    prompts.append([("own", len(prompts), j) for j in range(p)])
        return prompts
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        k = len(prompts)
        if "input_length" in obj:
            n, ids = obj["input_length"], obj["hash_ids"]
            if not (n and obj["output_length"]):
                continue
            tokens = []
            for pos in range(n):
                j = pos // trace_block
                size = min(trace_block, n - j * trace_block)
                tokens.append((tuple(ids[:j + 1]), size, pos % trace_block) if j < len(ids) else ("own", k, pos))
        elif "prompt" in obj:
            tokens = [("id", t) for t in obj["prompt"]]
        else:
            prefix = obj.get("prefix_len", 0)
            tokens = [("group", obj["prefix_group"], j) if j < prefix else ("own", k, j)
                      for j in range(obj["prompt_len"])]
        prompts.append(tokens)
    return prompts


def lru_hits(prompts: list[list], block_size: int, capacity_blocks: int) -> list[int]:
    """Tokens each request finds cached, in order: the longest run of whole blocks from the start
    (at most len - 1 tokens) whose prefixes an LRU of `capacity_blocks` full blocks holds."""
    cache: OrderedDict = OrderedDict()
    prefix_ids: dict = {}  # (id of the prefix before a block, the block's tokens) -> id of the prefix through it
    hits = []
    for tokens in prompts:
        keys, key = [], None
        for i in range(len(tokens) // block_size):
            key = prefix_ids.setdefault((key, tuple(tokens[i * block_size:(i + 1) * block_size])), len(prefix_ids))
            keys.append(key)
        found = 0
        while found < (len(tokens) - 1) // block_size and keys[found] in cache:
            cache.move_to_end(keys[found])
            found += 1
        hits.append(found * block_size)
        for key in keys[found:]:
            cache[key] = None
            if len(cache) > capacity_blocks:
                cache.popitem(last=False)
    return hits


def simulate(workload, block_size: int, num_blocks: int = 50_000, max_num_seqs: int = 1):
    """In file order, in a pool no request can fill: the LRU's sequence. (Requests admitted in one step
    hit each other's blocks, registered when allocated as in vLLM, so a batch finds what one request at
    a time finds: test_same_step_requests_hit_each_other.)"""
    sim = Simulator(LAYOUT, num_blocks, block_size, 32_768, SchedulerConfig(max_num_seqs, 8192), StepClock())
    return sim.run(workload)


# ---- detection and replay ------------------------------------------------------------------------

@pytest.mark.parametrize("name,fmt,requests,skipped", [
    ("mooncake", "mooncake", 13, 1), ("kvplan", "kvplan", 7, 0), ("azure", "azure", 8, 0),
    ("azure-2024", "azure", 5, 1), ("burstgpt", "burstgpt", 7, 3), ("mooncake-conversation", "mooncake", 16, 0),
    ("mooncake-arxiv", "mooncake", 10, 0), ("azure-2025", "azure", 5, 1)])
def test_each_format_is_detected_and_replays(name, fmt, requests, skipped, capsys):
    path = DATA / SAMPLES[name]
    workload = TraceWorkload(path)
    items = list(workload)
    assert workload.format == fmt and len(items) == requests == len(raw_requests(name))
    assert sum(workload.skipped.values()) == skipped and workload.describe()["skipped_requests"] == skipped
    arrivals = [i.arrival_time for i in items]
    assert arrivals == sorted(arrivals) and workload.reordered == 0
    code = main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "8192", "--trace", str(path),
                 "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["completed_requests"] == requests and d["workload"]["format"] == fmt
    assert any("skipped" in n for n in d["notes"]) == bool(skipped)


def test_arrival_times_per_format():
    first = lambda name, **kw: [i.arrival_time for i in TraceWorkload(DATA / SAMPLES[name], **kw)]
    assert first("mooncake")[:3] == [0.0, 1.0, 2.0]  # ms
    assert first("azure")[:3] == pytest.approx([0.0, 4.314579, 4.541877])  # from the first row; 7th digit dropped
    assert first("azure-2024")[:3] == pytest.approx([0.0, 0.020961, 0.99007])  # +00:00 offsets, a row without fraction
    assert first("azure-2025")[:3] == pytest.approx([0.0, 5.55, 6.244])  # ISO 8601 with T and Z
    assert first("burstgpt")[:3] == [0.0, 40.0, 113.0]  # seconds, from the first request (stamped 5)
    assert first("burstgpt", speed=2.0)[:3] == [0.0, 20.0, 56.5]
    assert first("mooncake-arxiv")[:5] == pytest.approx([0.0, 0.0, 0.0, 3.053, 3.053])  # ms, from 1,178,625
    assert first("mooncake-conversation")[-3:] == [15.0, 15.0, 18.0]  # from 0 already: unchanged
    assert len(first("mooncake", limit=4)) == 4
    burst = list(TraceWorkload(DATA / SAMPLES["burstgpt"]))
    assert [(i.num_prompt_tokens, i.output_len) for i in burst[:2]] == [(472, 18), (1087, 230)]


# ---- prefix-cache hits against the oracle --------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("block_size", [16, 48, 1024])
@pytest.mark.parametrize("batched", [False, True])
def test_hits_equal_an_independent_lru(name, block_size, batched):
    """One at a time (arrivals 100x further apart, one sequence running), or as stamped with many
    requests in a step: the same hits."""
    workload = TraceWorkload(DATA / SAMPLES[name], speed=1.0 if batched else 0.01)
    m = simulate(workload, block_size, max_num_seqs=256 if batched else 2 if name == "kvplan" else 1)
    expected = lru_hits(raw_requests(name), block_size, capacity_blocks=50_000)
    assert m.cached_tokens == sum(expected) and m.preemptions == 0
    assert m.prefill_tokens == sum(len(p) for p in raw_requests(name))
    if name in ("mooncake", "kvplan", "mooncake-conversation", "mooncake-arxiv") and block_size < 1024:
        assert m.cached_tokens > 0  # the samples do share


@pytest.mark.parametrize("trace_block", [64, 100])
def test_trace_block_size(tmp_path, trace_block):
    """The Mooncake sample's ids, read as blocks of another size."""
    path = tmp_path / "t.jsonl"
    lines = [json.loads(x) for x in (DATA / SAMPLES["mooncake"]).read_text().splitlines()]
    for x in lines:
        x["input_length"] = min(x["input_length"], len(x["hash_ids"]) * trace_block)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    SAMPLES["custom"] = path  # DATA / absolute path is the path
    try:
        for block_size in (16, 48):
            m = simulate(TraceWorkload(path, speed=0.01, block_tokens=trace_block), block_size)
            assert m.cached_tokens == sum(lru_hits(raw_requests("custom", trace_block), block_size, 50_000))
    finally:
        del SAMPLES["custom"]


def test_hits_without_the_derived_keys_are_the_same(monkeypatch):
    """The allocator hashing the token ids themselves finds the same hits as the keys from the segments."""
    keyed = simulate(TraceWorkload(DATA / SAMPLES["mooncake"], speed=0.01), 16)
    monkeypatch.setattr(SegmentedPrompt, "block_keys", lambda self, block_size, tail=None: [])
    hashed = simulate(TraceWorkload(DATA / SAMPLES["mooncake"], speed=0.01), 16)
    assert hashed.cached_tokens == keyed.cached_tokens > 0


def test_the_allocator_keys_prompts_by_their_derived_keys(monkeypatch):
    """The keys from the segments and the outputs are the pool's keys (each its own check value:
    paging.hashing), and no prompt ids are built for hashing: the block where a prompt ends and its
    outputs begin has a derived key too."""
    from kvplan.paging.hashing import GIVEN_KEYS

    built = []
    ids = SegmentedPrompt._ids
    monkeypatch.setattr(SegmentedPrompt, "_ids", lambda self, a, b: built.append(b - a) or ids(self, a, b))
    sim = Simulator(LAYOUT, 50_000, 16, 32_768, SchedulerConfig(256, 8192), StepClock())
    items = list(TraceWorkload(DATA / SAMPLES["mooncake"], speed=0.01))
    sim.run(items)
    pool = sim.kv.pool
    given = {key for key in pool.cached_blocks if key >= GIVEN_KEYS}
    expected = {k for uid, item in enumerate(items)  # the last output token is sampled, never computed
                for k in item.prompt(item.num_prompt_tokens).block_keys(16, (b"out %d" % uid, item.output_len))
                [:(item.num_prompt_tokens + item.output_len - 1) // 16]}
    assert given == expected and all(pool.block_check[pool.cached_blocks[k]] == k for k in given)
    assert len(pool.cached_blocks) == len(given) and sum(built) == 0


def test_keys_past_given_ones_chain_on_the_last_given_key():
    from kvplan.paging.hashing import GIVEN_KEYS, block_checks
    from kvplan.paging.request import Request

    prompt = SegmentedPrompt([0, 20], [100, 500], [b"a", b"b"], 40)
    keys = prompt.block_keys(8)
    req = Request("r", prompt, 10, list(range(-1, -17, -1)), block_hashes=list(keys))
    checks = block_checks(req, 8, 0, 7)  # 5 given blocks, then 2 over the prompt's end and outputs
    tokens = list(prompt) + req.output_token_ids
    after = [hash((keys[-1], *tokens[40:48]))]
    after.append(hash((after[0], *tokens[48:56])))
    assert len(keys) == 5 and all(k >= GIVEN_KEYS for k in keys)
    assert req.block_hashes == keys + after
    assert checks == keys + [hash((tuple(tokens[40:48]), keys[-1])), hash((tuple(tokens[48:56]), after[0]))]


def test_partial_and_differing_trace_blocks_do_not_match(tmp_path):
    rows = [(700, [7, 9]), (800, [7, 9]),  # same ids, last block partial with 188 vs 288 tokens
            (1024, [7, 8]), (1024, [7, 9])]  # second block differs: a block straddling 512 must miss
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"timestamp": 1000 * i, "input_length": n, "output_length": 3,
                                        "hash_ids": ids}) + "\n" for i, (n, ids) in enumerate(rows)))
    hits = lambda bs: [m.cached_tokens for m in [simulate(TraceWorkload(path, speed=0.01), bs)]][0]
    # 16: request 2 hits block 0 only (512); 3 and 4 hit 512 each: 1536. 48: 480 each (10 blocks; [480, 528) straddles).
    assert hits(16) == 3 * 512 and hits(48) == 3 * 480


def test_lru_oracle_sees_eviction():
    """The oracle is an LRU, not a set: with room for 2 blocks the first prefix is gone by the third request."""
    a, b = [("a", j) for j in range(33)], [("b", j) for j in range(33)]
    assert lru_hits([a, b, a], 16, capacity_blocks=2) == [0, 0, 0]
    assert lru_hits([a, b, a], 16, capacity_blocks=4) == [0, 0, 32]


# ---- segmented prompts: ids on demand, keys exact ------------------------------------------------

def test_segmented_prompt_is_a_sequence_of_ids():
    p = SegmentedPrompt([0, 3, 5], [100, 7, 50], [b"x", b"y", b"z"], 9)
    ids = [100, 101, 102, 7, 8, 50, 51, 52, 53]
    assert len(p) == 9 and list(p) == ids and p[2:7] == ids[2:7] and p[-1] == 53 and p[4] == 8
    assert p[7:] == ids[7:] and p[5:2] == [] and p[::2] == ids[::2] and p + [-1] == ids + [-1]
    with pytest.raises(IndexError):
        p[9]


segments = st.lists(st.tuples(st.integers(1, 9), st.sampled_from([b"a", b"b", b"c"])), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(segments, segments, st.integers(1, 8))
def test_keys_equal_exactly_when_prefixes_equal(a, b, block_size):
    """Block i's keys are equal iff the two prompts hold the same tokens up to its end, where a token is
    (segment identity, offset): identities with different ids stand for different contents."""
    def build(segs):
        firsts = {b"a": 1000, b"b": 2000, b"c": 3000}
        starts = [sum(n for n, _ in segs[:m]) for m in range(len(segs))]
        prompt = SegmentedPrompt(starts, [firsts[i] for _, i in segs], [i for _, i in segs], sum(n for n, _ in segs))
        return prompt, [(i, o) for n, i in segs for o in range(n)]
    (pa, ta), (pb, tb) = build(a), build(b)
    for i, (ka, kb) in enumerate(zip(pa.block_keys(block_size), pb.block_keys(block_size))):
        end = (i + 1) * block_size
        assert (ka == kb) == (ta[:end] == tb[:end])
    assert len(pa.block_keys(block_size)) == len(ta) // block_size


# ---- errors name the line; options -----------------------------------------------------------------

BAD = [
    ("mooncake", '{"timestamp": 0, "input_length": 10, "output_length": 2}\n{"timestamp": 5, "input_length": 3}\n',
     2, "missing 'output_length'"),
    ("mooncake", '{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1, "x"]}\n', 1,
     "'hash_ids' must be a list of integers"),
    ("mooncake", '{"timestamp": 0, "input_length": 600, "output_length": 2, "hash_ids": [1, 2, 3]}\n', 1,
     "3 hash_ids for 600 input tokens, more than the 2 blocks"),
    ("mooncake", '{"timestamp": -1, "input_length": 6, "output_length": 2}\n', 1, "'timestamp' must be"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,5,3\n2023-11-16 25:00:00,5,3\n", 3,
     "TIMESTAMP '2023-11-16 25:00:00' is not a date-time"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,5\n", 2, "2 columns, the header has 3"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,-5,3\n", 2, "ContextTokens must be >= 0"),
    ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,GPT-4,x,1,1,API log\n", 2,
     "Request tokens must be a whole number"),
    ("burstgpt", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\nnan,GPT-4,1,1,2,API log\n", 2,
     "Timestamp must be a non-negative number"),
    ("unknown", "time,prompt,output\n1,2,3\n", 1, "not a trace kvplan reads"),
]


@pytest.mark.parametrize("fmt,text,line,match", BAD)
def test_bad_rows_name_their_line(tmp_path, fmt, text, line, match):
    path = tmp_path / "t.trace"
    path.write_text(text)
    with pytest.raises(InputError, match=f"t.trace:{line}: .*{match}"):
        TraceWorkload(path).validate()


def test_reordered_rows_replay_at_the_previous_arrival(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("\ufeffTimestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                    "10,ChatGPT,5,5,10,API log\n8,ChatGPT,5,5,10,API log\n12,ChatGPT,5,5,10,API log\n")
    workload = TraceWorkload(path)
    assert [i.arrival_time for i in workload] == [0, 0, 2] and workload.reordered == 1
    assert any("not sorted" in n for n in workload.notes())
    assert any("from the first replayed request, stamped 10 s" in n for n in workload.notes())


def test_byte_order_mark_before_json(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('\ufeff{"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [4]}\n')
    assert [i.hash_ids for i in TraceWorkload(path)] == [(4,)]


def test_only_skipped_rows_is_no_trace(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00+00:00,0,5\n")
    with pytest.raises(InputError, match="no requests .*1 rows with 0 ContextTokens or GeneratedTokens skipped"):
        TraceWorkload(path).validate()


@pytest.mark.parametrize("kw,match", [({"speed": 0.0}, "--trace-speed"), ({"speed": float("inf")}, "--trace-speed"),
                                      ({"limit": 0}, "--trace-limit"), ({"block_tokens": 0}, "--trace-block-size")])
def test_option_bounds(kw, match):
    with pytest.raises(InputError, match=match):
        TraceWorkload(DATA / SAMPLES["mooncake"], **kw)


def test_cli_trace_options(capsys, tmp_path):
    base = ["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "8192", "--format", "json"]
    assert main(base + ["--trace", str(DATA / SAMPLES["mooncake"]), "--trace-limit", "5", "--trace-speed", "4",
                        "--trace-block-size", "512"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["completed_requests"] == 5 and d["workload"]["speed"] == 4 and d["workload"]["trace_block_size"] == 512
    for args, match in [(["--trace-limit", "3"], "--trace-limit goes with --trace"),
                        (["--trace", str(DATA / SAMPLES["azure"]), "--trace-block-size", "64"],
                         "--trace-block-size goes with a Mooncake trace"),
                        (["--trace", str(tmp_path)], "is a directory")]:
        assert main(base + args) == 2
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err


def test_random_mooncake_traces_against_the_oracle(tmp_path):
    """Random trees of hash ids, partial blocks included, at kvplan block sizes that do and do not divide 64."""
    rng = random.Random(7)
    lines, children, next_id = [], {}, [0]

    def child(parent):
        if next_id[0] and rng.random() < 0.1:  # an id seen under another parent: shares nothing there
            return rng.randrange(next_id[0])
        kids = children.setdefault(parent, [])
        if not kids or rng.random() < 0.3:
            kids.append(next_id[0])
            next_id[0] += 1
        return rng.choice(kids)

    for i in range(40):
        ids, parent = [], None
        for _ in range(rng.randint(1, 6)):
            parent = child((parent, len(ids)))
            ids.append(parent)
        n = (len(ids) - 1) * 64 + rng.choice([64, rng.randint(1, 64)])
        lines.append({"timestamp": 1000 * i, "input_length": n, "output_length": rng.randint(1, 20), "hash_ids": ids})
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    SAMPLES["random"] = path
    try:
        for block_size in (8, 16, 24, 100):
            m = simulate(TraceWorkload(path, speed=0.01, block_tokens=64), block_size)
            assert m.cached_tokens == sum(lru_hits(raw_requests("random", 64), block_size, 50_000))
    finally:
        del SAMPLES["random"]


@pytest.mark.parametrize("name", ["mooncake", "burstgpt"])
def test_trace_workload_keys_are_documented(name, capsys):
    from test_json_keys import documented

    assert main(["simulate", "--gpu", "H100", "--max-model-len", "8192", "--trace", str(DATA / SAMPLES[name]),
                 "--no-contiguous", "--format", "json"]) == 0
    keys = set(json.loads(capsys.readouterr().out)["workload"])
    assert keys == documented("simulate.workload.trace") - ({"trace_block_size"} if name != "mooncake" else set())


@pytest.mark.parametrize("name", ["mooncake-conversation", "mooncake-arxiv"])
def test_cli_hits_one_at_a_time_equal_the_lru(name, capsys):
    """docs/simulate.md's recipe, through the command line: one request at a time, far apart, in the
    deployment's own pool (28,340 blocks of 16 tokens, far more than these samples hold)."""
    assert main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "8192", "--trace",
                 str(DATA / SAMPLES[name]), "--max-num-seqs", "1", "--trace-speed", "0.001", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    prompts = raw_requests(name)
    expected = sum(lru_hits(prompts, d["block_size"], d["num_blocks"]))
    assert d["prefill_tokens_saved"] == expected > 0 and d["preemptions"] == 0
    assert d["prefix_hit_rate"] == pytest.approx(expected / sum(map(len, prompts)))


def test_conversations_like_fast25_against_the_oracle(tmp_path):
    """200 requests built the way the FAST'25 traces are: a few system prompts, multi-turn conversations
    whose next turn keeps the full blocks of the last one and re-ids the block that was partial, many
    requests per time stamp; replayed one at a time at block sizes that do and do not divide 512."""
    rng = random.Random(11)
    next_id = [0]

    def new_id():
        next_id[0] += 1
        return next_id[0]

    systems = [[new_id() for _ in range(rng.randint(1, 4))] for _ in range(3)]  # full 512-token blocks
    talks: list[tuple[list[int], int]] = []  # (ids, input_length) of each conversation's last turn
    lines = []
    for i in range(200):
        if talks and rng.random() < 0.6:  # a next turn
            k = rng.randrange(len(talks))
            ids, n = talks[k]
            n2 = n + rng.randint(1, 1500)
            keep = n // 512  # the last turn's full blocks
            ids2 = ids[:keep] + [new_id() for _ in range(-(-n2 // 512) - keep)]
            talks[k] = (ids2, n2)
        else:
            system = rng.choice(systems)
            n2 = len(system) * 512 + rng.randint(1, 3000)
            ids2 = system + [new_id() for _ in range(-(-n2 // 512) - len(system))]
            talks.append((ids2, n2))
        lines.append({"timestamp": 3000 * (i // 7), "input_length": n2, "output_length": rng.randint(1, 12),
                      "hash_ids": ids2})
    path = tmp_path / "fast25.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    SAMPLES["fast25"] = path
    try:
        prompts = raw_requests("fast25")
        for block_size in (16, 48):
            m = simulate(TraceWorkload(path, speed=0.001), block_size)
            assert m.cached_tokens == sum(lru_hits(prompts, block_size, 50_000)) > 0
            assert m.prefill_tokens == sum(map(len, prompts)) and m.preemptions == 0
    finally:
        del SAMPLES["fast25"]
