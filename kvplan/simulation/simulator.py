"""Simulator: drive the real Scheduler and KV managers with a workload and a clock, no tensors.

Loop: add the requests that have arrived; if none is in the system jump to the next arrival;
otherwise run one scheduler step, take its duration from the clock, record the metrics
(after scheduling, i.e. with the step's blocks allocated and its tokens written), apply the
step (advance, sample synthetic tokens, fork n > 1 samples after the prompt, free finished).

mode="step" calls Scheduler.schedule()/update() for every step. mode="event" uses
EventScheduler, which touches a decode request only when something happens to it (a block
boundary, a release, a copy, its end); both give identical metrics (tested).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import InputError, KvplanError
from ..model.grouping import PageLayout
from ..paging.contiguous import ReservingKVCacheManager
from .events import EventScheduler
from ..paging.kv_cache_manager import KVCacheManager
from .metrics import Metrics
from .tokens import SegmentedPrompt
from ..paging.request import Request
from ..paging.scheduler import Scheduler, SchedulerConfig
from .workload import WorkItem, output_token, output_tokens


class PoolTooSmall(KvplanError):
    """A request cannot run even alone in the pool: the simulation would never end."""


class _Family:
    """A workload request and its samples, from arrival until the last sample finishes."""

    __slots__ = ("samples", "left", "arrival", "prompt_tokens", "first_token", "cached")

    def __init__(self, samples: int, arrival: float, prompt_tokens: int):
        self.samples = self.left = samples  # sequences; not finished yet
        self.arrival, self.prompt_tokens = arrival, prompt_tokens
        self.first_token: float | None = None
        self.cached = 0  # prompt tokens from the prefix cache at its first admission


@dataclass(eq=False)
class SimRequest(Request):
    uid: int = 0  # sequence number: keys its synthetic output tokens
    family: _Family | None = None  # the workload request this sequence belongs to (shared by forked samples)


def _token(req: SimRequest, index: int) -> int:
    return output_token(req.uid, index)


def _tokens(req: SimRequest, first: int, count: int) -> range:
    return output_tokens(req.uid, first, count)


class Simulator:
    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, max_model_len: int,
                 config: SchedulerConfig, clock=None, *, prefix_caching: bool = True,
                 contiguous: bool = False, mode: str = "event", check: bool = False,
                 progress: Callable[[int], None] | None = None):
        from .clock import StepClock

        if mode not in ("event", "step"):
            raise InputError(f"--mode must be 'event' or 'step', got {mode!r}")
        if max_model_len < 2:
            raise InputError(f"--max-model-len {max_model_len} leaves no room for a prompt and an output token")
        self.config = config
        self.clock = clock or StepClock()
        self.max_model_len = max_model_len
        if contiguous:
            self.kv = ReservingKVCacheManager(layout, num_blocks, block_size, max_model_len,
                                              self.config.max_num_batched_tokens)
        else:
            self.kv = KVCacheManager(layout, num_blocks, block_size, prefix_caching)
        capacity = num_blocks * block_size
        self._block_size = block_size
        self._hashes = getattr(self.kv, "enable_prefix_caching", False)
        self.mode = mode
        self.sched = (EventScheduler(self.kv, self.config, _token, _tokens) if mode == "event"
                      else Scheduler(self.kv, self.config))
        self.metrics = Metrics(capacity)
        self.check = check
        self.progress = progress
        self._next_uid = 0
        self._first_tokens: list[_Family] = []  # sampled their first token in this step
        self._done: list[tuple[_Family, int]] = []  # finished in this step, with output tokens per sample
        self.now = 0.0

    def _make_request(self, item: WorkItem) -> SimRequest:
        limit = self.max_model_len
        prompt_len, output_len = item.num_prompt_tokens, item.output_len
        if prompt_len >= limit or prompt_len + output_len > limit:
            prompt_len = min(prompt_len, limit - 1)
            output_len = min(output_len, limit - prompt_len)
            self.metrics.truncated_requests += 1
        if not self.config.enable_chunked_prefill and prompt_len + output_len > self.config.max_num_batched_tokens:
            raise InputError(f"request {item.index}: {prompt_len + output_len} tokens exceed --max-num-batched-tokens "
                             f"{self.config.max_num_batched_tokens} and chunked prefill is off")
        prompt = item.prompt(prompt_len)
        uid = self._next_uid
        self._next_uid += 1
        # Keys of the full blocks from the prompt's segments and the sequence's outputs (their ids are
        # output_tokens(uid, ...): its own), so the allocator hashes no ids (tokens.py).
        keys = (prompt.block_keys(self._block_size, (b"out %d" % uid, output_len))
                if self._hashes and isinstance(prompt, SegmentedPrompt) else [])
        family = _Family(item.num_samples, item.arrival_time, prompt_len)
        return SimRequest(str(uid), prompt, output_len, arrival_time=item.arrival_time, num_samples=item.num_samples,
                          block_hashes=keys, uid=uid, family=family)

    def _after_update(self, out, finished) -> list[SimRequest]:
        m = self.metrics
        children = []
        for s in out.scheduled:
            if not s.needs_logits:
                continue
            parent = s.request
            family = parent.family
            if family.first_token is None:
                self._first_tokens.append(family)
                family.first_token = -1.0  # stamped with the end of this step by run()
            if parent.num_samples == 1:
                continue
            extra, parent.num_samples = parent.num_samples - 1, 1
            if parent.is_finished:  # one token per sample: the other samples end at once as well
                m.completed_sequences += extra
                m.output_tokens += extra
                family.left -= extra
                continue
            for _ in range(extra):
                uid = self._next_uid
                self._next_uid += 1
                child = SimRequest(str(uid), parent.prompt_token_ids, parent.max_tokens, [output_token(uid, 0)],
                                   arrival_time=parent.arrival_time, uid=uid, family=family)
                self.sched.fork(parent, child)
                children.append(child)
        for req in finished:
            m.completed_sequences += 1
            m.output_tokens += req.num_output_tokens
            family = req.family
            family.left -= 1
            if not family.left:
                m.completed_requests += 1
                self._done.append((family, req.num_output_tokens))
        return children

    def _stamp(self, end: float) -> None:
        """Tokens sampled in a step exist at its end: the first tokens and the requests done in it."""
        for family in self._first_tokens:
            family.first_token = end
        self._first_tokens.clear()
        for family, outputs in self._done:
            self.metrics.requests.add(family.arrival, family.first_token, end, family.prompt_tokens, outputs,
                                      family.samples, family.cached)
        self._done.clear()

    def _plain_step(self):
        sched, kv = self.sched, self.kv
        out = sched.schedule()
        batch_tokens = sum(s.num_new_tokens for s in out.scheduled)
        context = sum(s.start_position + s.num_new_tokens for s in out.scheduled)
        stats = (len(sched.running), kv.num_allocated_slots, kv.num_filled_slots)
        sampled = {s.request.request_id: _token(s.request, s.request.num_output_tokens)
                   for s in out.scheduled if s.needs_logits}
        finished = sched.update(out, sampled)
        children = self._after_update(out, finished)
        return out, batch_tokens, context, *stats, finished, children

    def run(self, workload: Iterable[WorkItem]) -> Metrics:
        sched, m, clock = self.sched, self.metrics, self.clock
        step = sched.step if self.mode == "event" else None
        items = iter(workload)
        pending = next(items, None)
        now = self.now
        # A step admits at most max_num_seqs requests and never looks past the first one it cannot
        # admit, so arrived requests beyond that many stay in the workload stream, unbuilt: memory
        # is bounded by the queue the scheduler can see, not by the backlog.
        visible = self.config.max_num_seqs + 1
        while True:
            while pending is not None and pending.arrival_time <= now and len(sched.waiting) < visible:
                sched.add_request(self._make_request(pending))
                pending = next(items, None)
            if not sched.has_unfinished_requests():
                if pending is None:
                    break
                now = pending.arrival_time
                continue
            waiting_before = len(sched.waiting)
            result = step(self._after_update) if step else self._plain_step()
            out, batch_tokens, context, running, allocated, filled, finished, _ = result
            if not batch_tokens:
                stuck = out.preempted[-1] if out.preempted else sched.waiting[0]
                raise PoolTooSmall(f"a request of {stuck.num_tokens:,} tokens (n={stuck.num_samples}) does not fit in "
                                  "the KV pool even alone; raise the KV budget or lower --max-model-len")
            m.preemptions += len(out.preempted)
            admitted = 0 if out.preempted else waiting_before - len(sched.waiting)
            if admitted:
                for s in out.scheduled[-admitted:]:
                    req = s.request
                    m.admissions += 1
                    m.prefill_tokens += req.num_tokens - s.needs_logits
                    m.cached_tokens += req.num_cached_tokens
                    if req.num_preemptions == 0:
                        m.delays.append(now - req.arrival_time)
                        req.family.cached = req.num_cached_tokens
            dt = clock.step_time(batch_tokens, context)
            m.record_step(now, dt, running, allocated, filled)
            now += dt
            self._stamp(now)
            if step and sched.last_step_quiet:  # nothing but lazy decodes until the next event or arrival
                # A waiting request that cannot be admitted now will not be while nothing changes but
                # blocks taken by lazy requests crossing a boundary (those steps are recorded here too).
                until = pending.arrival_time if pending is not None and not sched.waiting else float("inf")
                while True:
                    now, sched.step_index = m.record_quiet_steps(now, sched.step_index, sched.next_event_step(),
                                                                 until, clock.step_time, *sched.quiet_steps())
                    if now >= until or not sched.cross_quietly():
                        break
                    if self.check:
                        self.kv.check_integrity()
                    batch, context, running, allocated, filled, rate = sched.quiet_steps()
                    t = sched.step_index  # the crossing step was t - 1: it attends to context + batch * t
                    dt = clock.step_time(batch, context + batch * t)
                    m.record_step(now, dt, running, allocated, filled + rate * t)
                    now += dt
            if self.check:
                self.kv.check_integrity()
            if finished and self.progress:
                self.progress(m.completed_requests)
        self.now = now
        return m
