"""Time metrics (issue 17.3): TTFT, TPOT, end-to-end latency, tokens/s, prompt tokens from the prefix
cache and SLO shares, recomputed here from every sampled token's time, and through the CLI."""

import json

import numpy as np
import pytest

from kvplan.cli import main
from kvplan.model import FullAttention, ModelSpec
from kvplan.model.grouping import page_layout
from kvplan.paging import SchedulerConfig
from kvplan.simulation import Simulator, SyntheticWorkload
from kvplan.simulation.clock import CostModel
from kvplan.simulation.metrics import RequestTimes, latency_summary
from kvplan.simulation.workload import Distribution

COST = CostModel(weights_bytes=8 * 10**9, kv_bytes_per_token=65536, flops_per_token=1.6e10, bandwidth_bytes_per_s=3e12,
                 peak_flops=9e14)
LAYOUT = page_layout(ModelSpec("t", "t", (FullAttention((0, 1, 2, 3), 8, 128, 128),), 4))


class TokenClock:
    """Wraps a step-mode simulator's scheduler: the time each sequence samples each token, the prefix hit
    of each request's first admission, measured step by step."""

    def __init__(self, sim: Simulator):
        self.sim, self.now = sim, 0.0
        self.tokens: dict[str, list[float]] = {}  # request id -> times its tokens were sampled
        self.family: dict[str, int] = {}  # request id -> its workload request (forked samples share it)
        self.first_cached: dict[int, int] = {}
        self.prompt: dict[int, int] = {}
        self.arrival: dict[int, float] = {}
        self.samples: dict[int, int] = {}
        sched = sim.sched
        self._schedule, self._update, self._fork = sched.schedule, sched.update, sched.fork
        sched.schedule, sched.update, sched.fork = self.schedule, self.update, self.fork

    def schedule(self):
        sched = self.sim.sched
        if not sched.running and sched.waiting:  # an idle gap up to the next arrival
            self.now = max(self.now, min(r.arrival_time for r in sched.waiting))
        out = self._schedule()
        for s in out.scheduled:
            r = s.request
            if r.request_id not in self.family:  # a new workload request, admitted for the first time
                k = self.family[r.request_id] = len(self.prompt)
                self.first_cached[k], self.prompt[k], self.arrival[k] = r.num_cached_tokens, r.num_prompt_tokens, r.arrival_time
                self.samples[k] = r.num_samples  # before the fork: a one-token request's samples end with it
        self.end = self.now + self.sim.clock.step_time(sum(s.num_new_tokens for s in out.scheduled),
                                                       sum(s.start_position + s.num_new_tokens for s in out.scheduled))
        self.now = self.end
        return out

    def update(self, out, sampled):
        for s in out.scheduled:
            if s.needs_logits:
                self.tokens.setdefault(s.request.request_id, []).append(self.end)
        return self._update(out, sampled)

    def fork(self, parent, child):
        self.family[child.request_id] = self.family[parent.request_id]
        self.tokens[child.request_id] = [self.tokens[parent.request_id][-1]]  # the sample forked with its token
        return self._fork(parent, child)

    def per_request(self):
        """arrival, first token, finish, prompt tokens, output tokens per sample, samples, cached: per request."""
        rows = {}
        for rid, times in self.tokens.items():
            k = self.family[rid]
            row = rows.setdefault(k, [self.arrival[k], min(times), max(times), self.prompt[k], len(times), self.samples[k],
                                      self.first_cached[k]])
            row[1], row[2] = min(row[1], min(times)), max(row[2], max(times))
            assert row[4] == len(times)  # every sample generates as many tokens
        return [rows[k] for k in sorted(rows)]


def numpy_summary(rows, slo_ttft, slo_tpot) -> dict:
    a, f, e, p, o, n, c = (np.array(col, dtype=float) for col in zip(*rows))
    ttft, e2e = f - a, e - a
    many = o > 1
    tpot = (e - f)[many] / (o[many] - 1)
    dist = lambda x: {"mean": x.mean(), **{f"p{q}": np.percentile(x, q) for q in (50, 90, 99)}, "max": x.max()}
    duration = e.max() - a.min()
    ok_ttft = ttft <= slo_ttft
    ok_tpot = np.ones(len(rows), bool)
    ok_tpot[many] = tpot <= slo_tpot
    return {"ttft": dist(ttft), "tpot": dist(tpot), "e2e": dist(e2e), "output_tokens_per_s": (o * n).sum() / duration,
            "total_tokens_per_s": ((o * n).sum() + p.sum()) / duration, "prompt_hit_rate": c.sum() / p.sum(),
            "slo": {"ttft": slo_ttft, "tpot": slo_tpot, "meeting_ttft": ok_ttft.mean(), "meeting_tpot": ok_tpot.mean(),
                    "meeting_both": (ok_ttft & ok_tpot).mean()}}


@pytest.mark.parametrize("n,rate,blocks,contiguous", [(1, None, 400, False), (2, 3.0, 250, False), (1, None, 120, False),
                                                        (1, 0.5, 400, False), (1, 2.0, 1200, True)])
def test_latency_matches_every_token_time(n, rate, blocks, contiguous):
    """Shared prefixes, forked samples, preemption (120 blocks), idle gaps (rate 0.5), contiguous reservations."""
    workload = SyntheticWorkload(60, Distribution.parse("lognormal:300:0.8", "p"), Distribution.parse("uniform:1:300", "o"),
                                 48, 2, rate, n, seed=5)
    sim = Simulator(LAYOUT, blocks, 16, 1024, SchedulerConfig(16, 512), COST, mode="step", contiguous=contiguous)
    clock = TokenClock(sim)
    got = sim.run(workload).summary(16, 0.05, 0.004)["latency"]
    rows = clock.per_request()
    assert len(rows) == 60 and (blocks != 120 or sim.metrics.preemptions > 0)
    want = numpy_summary(rows, 0.05, 0.004)
    for key, value in want.items():
        if isinstance(value, dict):
            for q, v in value.items():
                assert got[key][q] == pytest.approx(v, rel=1e-9, abs=1e-12), (key, q)
        else:
            assert got[key] == pytest.approx(value, rel=1e-9), key
    assert 0 < got["slo"]["meeting_both"] <= min(got["slo"]["meeting_ttft"], got["slo"]["meeting_tpot"]) <= 1
    event = Simulator(LAYOUT, blocks, 16, 1024, SchedulerConfig(16, 512), COST, contiguous=contiguous)
    assert event.run(workload).summary(16, 0.05, 0.004)["latency"] == got  # event-driven: the same floats


def test_latency_summary_by_hand():
    times = RequestTimes()
    times.add(0.0, 0.5, 2.5, 100, 5, cached_prompt_tokens=40)  # ttft 0.5, tpot 2.0 / 4 = 0.5, e2e 2.5
    times.add(1.0, 1.2, 1.2, 50, 1)  # one token: no tpot
    times.add(2.0, 3.0, 4.0, 30, 3, samples=2)  # ttft 1.0, tpot 0.5, e2e 2.0
    s = latency_summary(times, slo_ttft=0.6, slo_tpot=0.5)
    assert s["ttft"]["mean"] == pytest.approx(1.7 / 3) and s["ttft"]["p50"] == 0.5 and s["ttft"]["max"] == 1.0
    assert s["tpot"] == {"mean": 0.5, "p50": 0.5, "p90": 0.5, "p99": 0.5, "max": 0.5}
    assert s["e2e"]["p50"] == 2.0 and s["e2e"]["p90"] == pytest.approx(2.0 + 0.8 * 0.5)
    assert s["output_tokens_per_s"] == (5 + 1 + 6) / 4.0 and s["total_tokens_per_s"] == (12 + 180) / 4.0
    assert s["prompt_hit_rate"] == 40 / 180
    assert s["slo"] == {"ttft": 0.6, "tpot": 0.5, "meeting_ttft": 2 / 3, "meeting_tpot": 1.0, "meeting_both": 2 / 3}
    assert latency_summary(times)["slo"] is None
    assert latency_summary(RequestTimes())["ttft"]["p99"] == 0.0
    with pytest.raises(ValueError):
        times.add(5.0, 4.0, 6.0, 10, 2)  # first token before arrival


BASE = ["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096", "--requests", "40",
        "--prompt-len", "uniform:100:900", "--output-len", "uniform:1:200", "--arrival-rate", "20", "--shared-prefix", "64"]


def test_cli_latency_keys_and_table(capsys, monkeypatch):
    from test_json_keys import documented

    monkeypatch.setenv("COLUMNS", "200")  # labels on one line
    assert main(BASE + ["--slo-ttft", "0.2", "--slo-tpot", "0.01", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for run in (d, d["contiguous"]):
        lat = run["latency"]
        assert set(lat) == documented("simulate.latency") and set(lat["slo"]) == documented("simulate.latency.slo")
        assert set(lat["ttft"]) == documented("simulate.queueing_delay") and "H100-SXM" in lat["basis"]
    assert d["latency"]["prompt_hit_rate"] > 0 and d["latency"]["slo"]["ttft"] == 0.2
    assert main(BASE + ["--slo-ttft", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "TTFT p50 / p90 / p99 (ms, modelled)" in out and "TPOT p50 / p90 / p99 (ms, modelled)" in out and "requests meeting TTFT <= 0.2 s" in out
    assert "TPOT <=" not in out and "not measured" in out
    assert main(BASE + ["--format", "csv"]) == 0
    assert "ttft_p99," in capsys.readouterr().out


@pytest.mark.parametrize("args,match", [(["--slo-ttft", "-1"], "--slo-ttft must be a positive number"),
                                        (["--slo-tpot", "0.1", "--clock", "steps"], "--slo-tpot is in seconds")])
def test_cli_slo_errors(args, match, capsys):
    assert main(BASE + args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_one_request_by_hand(capsys):
    """docs/simulate.md's worked example: prefill is compute-bound, each decode step reads the weights and the KV."""
    assert main(["simulate", "llama-3.1-8b", "--gpu", "H100", "--max-model-len", "4096", "--requests", "1",
                 "--prompt-len", "1000", "--output-len", "101", "--no-contiguous", "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    c, lat = d["clock"], d["latency"]
    ttft = c["flops_per_token"] * 1000 / c["peak_flops"]  # 1,000 prompt tokens in one step
    decode = [(c["weights_bytes"] + c["kv_bytes_per_token"] * (1001 + j)) / c["bandwidth_bytes_per_s"] for j in range(100)]
    assert lat["ttft"]["p50"] == pytest.approx(ttft) and round(1000 * ttft, 1) == 16.2
    assert lat["tpot"]["p50"] == pytest.approx(sum(decode) / 100) and round(1000 * lat["tpot"]["p50"], 2) == 4.84
    assert lat["e2e"]["p50"] == pytest.approx(ttft + sum(decode)) and round(lat["e2e"]["p50"], 3) == 0.5
    assert lat["output_tokens_per_s"] == pytest.approx(101 / (ttft + sum(decode)))
