"""What a simulation measures, and how each figure is defined.

Time-weighted figures are integrals over the simulated steps (idle gaps between arrivals, when
no request is in the system, do not count), each step weighted by its duration dt:

| key                     | definition                                                            |
|-------------------------|-----------------------------------------------------------------------|
| mean_concurrency        | integral(running requests) / busy time                                |
| memory_utilization      | integral(filled slots) / integral(allocated slots)                    |
| internal_fragmentation  | integral(allocated - filled slots) / integral(allocated slots)        |
| mean_pool_usage         | integral(allocated slots) / (busy time x pool slots)                  |
| prefix_hit_rate         | prefix-cache tokens / tokens to prefill, over all admissions          |
| queueing_delay          | first admission time - arrival time, per request (not per sample)     |

Per request (latency_summary, over RequestTimes; the runtime's `profile` measures the same columns):

| key                     | definition                                                            |
|-------------------------|-----------------------------------------------------------------------|
| ttft                    | first token time - arrival time (the end of the step that sampled it) |
| tpot                    | (finish - first token time) / (output tokens - 1), requests with >= 2 |
| e2e                     | finish time (its last sample's last token) - arrival time             |
| output_tokens_per_s     | output tokens of all samples / (last finish - first arrival)          |
| total_tokens_per_s      | (prompt + output tokens) / (last finish - first arrival)              |
| prompt_hit_rate         | prompt tokens from the prefix cache at first admission / prompt tokens |
| slo                     | share of requests with ttft <= --slo-ttft, tpot <= --slo-tpot, both   |

A *slot* is one token position of one block (a block of block_size tokens has block_size slots,
each spanning the G layers of its page group). *Allocated* slots belong to blocks with a
refcount > 0 (paged) or to reservations (contiguous). *Filled* slots hold a computed token; a
block shared by several requests (prefix hit, fork) counts once. So memory_utilization +
internal_fragmentation = 1: the two keys state the same split from both sides.
"""

from array import array
from dataclasses import dataclass, field

QUANTILES = (50, 90, 99)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values) -> dict:
    """mean, p50, p90, p99, max of `values` (0 for each when there are none)."""
    ordered = sorted(values)
    return {"mean": sum(ordered) / len(ordered) if ordered else 0.0,
            **{f"p{q}": percentile(ordered, q) for q in QUANTILES}, "max": ordered[-1] if ordered else 0.0}


@dataclass
class RequestTimes:
    """One row per completed request (a request with n samples is one row): what latency_summary reads.
    Columns in arrays, 8 bytes per value; times in the clock's unit."""

    arrival: array = field(default_factory=lambda: array("d"))
    first_token: array = field(default_factory=lambda: array("d"))  # when its first output token exists
    finish: array = field(default_factory=lambda: array("d"))  # when its last sample's last token exists
    prompt_tokens: array = field(default_factory=lambda: array("q"))
    output_tokens: array = field(default_factory=lambda: array("q"))  # per sample
    samples: array = field(default_factory=lambda: array("q"))
    cached_prompt_tokens: array = field(default_factory=lambda: array("q"))  # prefix-cache hit at first admission

    def add(self, arrival: float, first_token: float, finish: float, prompt_tokens: int, output_tokens: int,
            samples: int = 1, cached_prompt_tokens: int = 0) -> None:
        if not arrival <= first_token <= finish or output_tokens < 1 or prompt_tokens < cached_prompt_tokens:
            raise ValueError(f"inconsistent request times: {arrival}, {first_token}, {finish}")
        self.arrival.append(arrival)
        self.first_token.append(first_token)
        self.finish.append(finish)
        self.prompt_tokens.append(prompt_tokens)
        self.output_tokens.append(output_tokens)
        self.samples.append(samples)
        self.cached_prompt_tokens.append(cached_prompt_tokens)

    def __len__(self) -> int:
        return len(self.arrival)


def latency_summary(times: RequestTimes, slo_ttft: float | None = None, slo_tpot: float | None = None) -> dict:
    """TTFT, TPOT and end-to-end latency distributions, token throughput, the prompt tokens served from
    the prefix cache, and the share of requests meeting the SLOs (None when none is given); the module
    docstring defines each. A request with one output token has no TPOT and meets any TPOT SLO."""
    ttft = [f - a for a, f in zip(times.arrival, times.first_token)]
    tpot_of = [(e - f) / (o - 1) if o > 1 else None for f, e, o in zip(times.first_token, times.finish,
                                                                       times.output_tokens)]
    tpot = [x for x in tpot_of if x is not None]
    duration = max(times.finish) - min(times.arrival) if len(times) else 0.0
    outputs = sum(o * n for o, n in zip(times.output_tokens, times.samples))
    prompts = sum(times.prompt_tokens)
    out = {
        "ttft": distribution(ttft), "tpot": distribution(tpot),
        "e2e": distribution(e - a for a, e in zip(times.arrival, times.finish)),
        "output_tokens_per_s": outputs / duration if duration else 0.0,
        "total_tokens_per_s": (outputs + prompts) / duration if duration else 0.0,
        "prompt_hit_rate": sum(times.cached_prompt_tokens) / prompts if prompts else 0.0,
        "slo": None,
    }
    if slo_ttft is not None or slo_tpot is not None:
        n = len(times) or 1
        ok_ttft = [slo_ttft is None or x <= slo_ttft for x in ttft]
        ok_tpot = [slo_tpot is None or x is None or x <= slo_tpot for x in tpot_of]
        out["slo"] = {"ttft": slo_ttft, "tpot": slo_tpot, "meeting_ttft": sum(ok_ttft) / n,
                      "meeting_tpot": sum(ok_tpot) / n, "meeting_both": sum(a and b for a, b in zip(ok_ttft, ok_tpot)) / n}
    return out


@dataclass
class Metrics:
    capacity_slots: int
    max_points: int = 2048
    steps: int = 0
    busy_time: float = 0.0
    running_time: float = 0.0  # integral of running requests
    allocated_time: float = 0.0  # integral of allocated slots
    filled_time: float = 0.0  # integral of filled slots
    peak_concurrency: int = 0
    peak_allocated_slots: int = 0
    preemptions: int = 0
    admissions: int = 0
    prefill_tokens: int = 0  # tokens that needed KV at admission (prompt, or prompt + outputs after preemption)
    cached_tokens: int = 0
    completed_requests: int = 0
    completed_sequences: int = 0
    output_tokens: int = 0
    truncated_requests: int = 0
    delays: array = field(default_factory=lambda: array("d"))  # 8 bytes per request, for the percentiles
    requests: RequestTimes = field(default_factory=RequestTimes)  # 56 bytes per completed request
    timeline: list[tuple] = field(default_factory=list)  # (step, time, running, allocated slots, filled slots)
    _stride: int = 1

    def record_step(self, now: float, dt: float, running: int, allocated: int, filled: int) -> None:
        step = self.steps
        self.steps = step + 1
        self.busy_time += dt
        self.running_time += running * dt
        self.allocated_time += allocated * dt
        self.filled_time += filled * dt
        if running > self.peak_concurrency:
            self.peak_concurrency = running
        if allocated > self.peak_allocated_slots:
            self.peak_allocated_slots = allocated
        if step % self._stride == 0:
            self.timeline.append((step, now, running, allocated, filled))
            if len(self.timeline) > self.max_points:
                self._stride *= 2
                self.timeline = [p for p in self.timeline if p[0] % self._stride == 0]

    def record_quiet_steps(self, now: float, t: int, end: int, until: float, step_time, batch: int, context: int,
                           running: int, allocated: int, filled: int, rate: int) -> tuple[float, int]:
        """record_step for steps t, t + 1, ... before `end` while now < until, in which `batch` tokens
        are computed over context + batch * (t + 1) tokens with filled + rate * (t + 1) slots filled
        (EventScheduler.quiet_steps); the same sums in the same order as step by step. Returns (now, t)."""
        if running > self.peak_concurrency:
            self.peak_concurrency = running
        if allocated > self.peak_allocated_slots:
            self.peak_allocated_slots = allocated
        step, busy, running_time, allocated_time, filled_time = (
            self.steps, self.busy_time, self.running_time, self.allocated_time, self.filled_time)
        stride, timeline = self._stride, self.timeline
        while t < end and now < until:
            t += 1
            dt = step_time(batch, context + batch * t)
            busy += dt
            running_time += running * dt
            allocated_time += allocated * dt
            filled_time += (filled + rate * t) * dt
            if step % stride == 0:
                timeline.append((step, now, running, allocated, filled + rate * t))
                if len(timeline) > self.max_points:
                    stride *= 2
                    timeline = [p for p in timeline if p[0] % stride == 0]
            step += 1
            now += dt
        self.steps, self.busy_time, self.running_time, self.allocated_time, self.filled_time = (
            step, busy, running_time, allocated_time, filled_time)
        self._stride, self.timeline = stride, timeline
        return now, t

    def summary(self, max_num_seqs: int, slo_ttft: float | None = None, slo_tpot: float | None = None) -> dict:
        busy = self.busy_time or 1.0
        allocated = self.allocated_time
        utilization = self.filled_time / allocated if allocated else 0.0
        mean_concurrency = self.running_time / busy
        return {
            "peak_concurrency": self.peak_concurrency,
            "mean_concurrency": mean_concurrency,
            "effective_batch": mean_concurrency / max_num_seqs,
            "memory_utilization": utilization,
            "internal_fragmentation": (allocated - self.filled_time) / allocated if allocated else 0.0,
            "mean_pool_usage": allocated / (busy * self.capacity_slots),
            "peak_pool_usage": self.peak_allocated_slots / self.capacity_slots,
            "prefix_hit_rate": self.cached_tokens / self.prefill_tokens if self.prefill_tokens else 0.0,
            "prefill_tokens_saved": self.cached_tokens,
            "prefill_tokens": self.prefill_tokens,
            "preemptions": self.preemptions,
            "completed_requests": self.completed_requests,
            "completed_sequences": self.completed_sequences,
            "output_tokens": self.output_tokens,
            "truncated_requests": self.truncated_requests,
            "queueing_delay": distribution(self.delays),
            "steps": self.steps,
            "busy_time": self.busy_time,
            "latency": latency_summary(self.requests, slo_ttft, slo_tpot),
        }
