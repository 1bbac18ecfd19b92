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

A *slot* is one token position of one block (a block of block_size tokens has block_size slots,
each spanning the G layers of its page group). *Allocated* slots belong to blocks with a
refcount > 0 (paged) or to reservations (contiguous). *Filled* slots hold a computed token; a
block shared by several requests (prefix hit, fork) counts once. So memory_utilization +
internal_fragmentation = 1: the two keys state the same split from both sides.
"""

from array import array
from dataclasses import dataclass, field


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


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

    def summary(self, max_num_seqs: int) -> dict:
        delays = sorted(self.delays)
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
            "queueing_delay": {
                "mean": sum(delays) / len(delays) if delays else 0.0,
                "p50": percentile(delays, 50), "p90": percentile(delays, 90), "p99": percentile(delays, 99),
                "max": delays[-1] if delays else 0.0,
            },
            "steps": self.steps,
            "busy_time": self.busy_time,
        }
