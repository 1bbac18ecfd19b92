"""Scheduler: continuous batching with a token budget, FIFO admission and preemption by recompute.

Each step (vLLM v1 style, no prefill/decode phases):
  1. running requests, oldest first, get what they still need (1 token in decode, the rest of the
     prompt under chunked prefill) within the token budget; when blocks run out the newest running
     request is preempted (blocks freed, back to the front of the queue, recomputed later);
  2. if nobody was preempted, waiting requests are admitted in FIFO order while the budget,
     max_num_seqs and the pool allow; a prompt that does not fit the budget is chunked.

| invariant                                                      | where             |
|----------------------------------------------------------------|-------------------|
| len(running) <= max_num_seqs (forked samples counted)          | _schedule_waiting |
| scheduled tokens per step <= max_num_batched_tokens            | _schedule_running |
| a preempted request holds no block and has 0 computed tokens   | _preempt          |
| the head of the queue is never overtaken (strict FIFO)         | _schedule_waiting |

No clock and no tensors: the engine and the simulator drive it.
"""

from collections import deque
from operator import attrgetter
from dataclasses import dataclass, field

from ..errors import InputError
from .request import Request, RequestStatus


_num_samples = attrgetter("num_samples")


@dataclass(frozen=True)
class SchedulerConfig:
    """The step limits, as a deployment resolved them (their defaults are the engine policies'; none here)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    enable_chunked_prefill: bool = True

    def __post_init__(self):
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise InputError(f"--max-num-batched-tokens ({self.max_num_batched_tokens}) must be at least "
                             f"--max-num-seqs ({self.max_num_seqs}), as in vLLM")


@dataclass
class ScheduledRequest:
    request: Request
    num_new_tokens: int
    start_position: int
    needs_logits: bool  # the chunk reaches the request's last token: sample after the forward


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)


class Scheduler:
    def __init__(self, kv_manager, config: SchedulerConfig):
        self.kv = kv_manager
        self.config = config
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def add_request(self, req: Request) -> None:
        if req.num_samples > self.config.max_num_seqs:
            raise InputError(f"request {req.request_id}: n={req.num_samples} exceeds max_num_seqs "
                             f"{self.config.max_num_seqs}")
        req.status = RequestStatus.WAITING
        self.waiting.append(req)

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self._schedule_running(list(self.running), self.config.max_num_batched_tokens, out)
        if not out.preempted:
            self._schedule_waiting(budget, out)
        out.copies = self.kv.take_copies()
        return out

    def _schedule_running(self, candidates: list[Request], budget: int, out: SchedulerOutput) -> int:
        kv = self.kv
        for req in candidates:
            if budget <= 0:
                break
            if req.status is not RequestStatus.RUNNING:  # preempted earlier in this step
                continue
            num_new = min(req.num_tokens - req.num_computed_tokens, budget)
            while not kv.allocate_slots(req, num_new):
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is req:
                    return budget
            start = req.num_computed_tokens
            out.scheduled.append(ScheduledRequest(req, num_new, start, start + num_new == req.num_tokens))
            budget -= num_new
        return budget

    def _schedule_waiting(self, budget: int, out: SchedulerOutput) -> int:
        kv, cfg, waiting = self.kv, self.config, self.waiting
        if not waiting or len(self.running) >= cfg.max_num_seqs:  # the common full case, without a sum
            return budget
        sequences = self.num_sequences
        while waiting and budget > 0:
            req = waiting[0]
            if sequences + req.num_samples > cfg.max_num_seqs:
                break
            num_new = req.num_tokens - kv.get_computed_tokens(req)
            if num_new > budget:
                if not cfg.enable_chunked_prefill:
                    break
                num_new = budget
            if not kv.allocate_slots(req, num_new):
                break
            waiting.popleft()
            self._append_running(req)
            sequences += req.num_samples
            start = req.num_computed_tokens
            out.scheduled.append(ScheduledRequest(req, num_new, start, start + num_new == req.num_tokens))
            budget -= num_new
        return budget

    def _append_running(self, req: Request) -> None:
        req.status = RequestStatus.RUNNING
        self.running.append(req)

    def _preempt(self, victim: Request, out: SchedulerOutput) -> None:
        self.running.pop()
        self.kv.free(victim)
        victim.status = RequestStatus.PREEMPTED
        victim.num_computed_tokens = 0
        victim.num_preemptions += 1
        self.waiting.appendleft(victim)
        out.preempted.append(victim)

    def update(self, out: SchedulerOutput, sampled: dict[str, int]) -> list[Request]:
        """Account the forward pass: advance, append samples, free finished (full blocks were
        registered when their slots were allocated)."""
        kv = self.kv
        finished = []
        for s in out.scheduled:
            req = s.request
            req.num_computed_tokens += s.num_new_tokens
            if s.needs_logits:
                req.append_token(sampled[req.request_id])
                if req.is_finished:
                    finished.append(req)
        for req in finished:
            self.running.remove(req)
            kv.free(req)
        return finished

    @property
    def num_sequences(self) -> int:
        """Running sequences, counting the samples a parent will fork after its prompt."""
        return sum(map(_num_samples, self.running))

    def fork(self, parent: Request, child: Request) -> None:
        """Add `child` (parent's computed tokens, its own sampled token) sharing the parent's blocks."""
        self.kv.fork(parent, child)
        self._append_running(child)
