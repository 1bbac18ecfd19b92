"""EventScheduler: the Scheduler's policy, stepping only the requests that have something to do.

A running request in decode whose next steps only write one slot each (no new block, no copy,
no release, not finishing) is *lazy*: its counters advance implicitly and it is brought up to
date ("woken") at its next event, when it is preempted, or when a step needs every request.

| quantity at step t           | lazy part, from aggregates kept in O(1)                       |
|------------------------------|---------------------------------------------------------------|
| tokens computed              | one per lazy request                                          |
| context tokens               | sum(c0 - t0) + n_lazy * (t + 1)                               |
| filled KV slots              | sum(rate) * (t + 1) - sum(rate * t0)                          |

(t0: step from which the request is lazy, c0: its computed tokens then, rate: slots per decode.)

Pool operations happen in the same order as in Scheduler.schedule()/update() (active requests in
running order, preemption victims from the back), with two exceptions that no metric can see:
  - a lazy request crossing a block boundary gets its block without waking up, in no particular
    order among that step's pops. Pops take the free list's front and nothing else happens in the
    running phase of a full-attention step, so the same blocks leave the free list, only under
    other names; when the pool could run out that step, the requests are woken instead;
  - a lazy request's newly full blocks are registered in the prefix cache when it wakes; they hold
    its own sampled tokens, which no other request's prompt contains, so no lookup can tell.
Tests compare every metric, the timeline and the final pool (up to block names) with the
step-by-step run.
"""

from heapq import heappop, heappush

from ..paging.lazy_decode import LazyDecode
from ..paging.request import Request, RequestStatus
from ..paging.scheduler import Scheduler, SchedulerOutput

_RUNNING = RequestStatus.RUNNING


class EventScheduler(Scheduler):
    def __init__(self, kv_manager, config, token_fn, tokens_fn):
        super().__init__(kv_manager, config)
        self.token_fn = token_fn  # (request, output index) -> token id
        self.tokens_fn = tokens_fn  # (request, first index, count) -> token ids
        self.lazy_decode = LazyDecode(kv_manager)  # the allocator's side of skipping decode steps
        self.step_index = 0
        self._rank: dict[str, int] = {}
        self._next_rank = 0
        self._lazy: dict[str, tuple] = {}  # id -> (request, t0, c0, rate, event step, finishing step)
        self._events: dict[int, list[str]] = {}  # step -> requests with something to do then
        self._event_steps: list[int] = []  # heap of the keys of _events
        self.last_step_quiet = False  # the last step only advanced lazy requests (crossing in place): so will the next ones
        self._active: dict[str, Request] = {}
        self._rate_sum = self._rate_t0_sum = self._ctx_base = 0
        self.num_wakes = 0
        self.num_quiet_crossings = 0  # steps run by cross_quietly

    def _append_running(self, req: Request) -> None:
        super()._append_running(req)
        self._rank[req.request_id] = self._next_rank
        self._next_rank += 1

    def _preempt(self, victim: Request, out: SchedulerOutput) -> None:
        if victim.request_id in self._lazy:
            self._wake(victim.request_id, self.step_index)
        super()._preempt(victim, out)

    def _push_event(self, step: int, rid: str) -> None:
        bucket = self._events.get(step)
        if bucket is None:
            bucket = self._events[step] = []
            heappush(self._event_steps, step)
        bucket.append(rid)

    def next_event_step(self) -> int:
        """The first step from now on at which some request may have something to do."""
        steps = self._event_steps
        while steps and steps[0] < self.step_index:
            heappop(steps)
        return steps[0] if steps else 1 << 62

    def quiet_steps(self) -> tuple[int, int, int, int, int, int]:
        """Steps from now to the next event in which only lazy requests advance (the caller knows they
        do), as step() would count them: (batch tokens n, context base c, running, allocated slots,
        filled base f, filled rate r); step t attends to c + n * (t + 1) tokens and fills f + r * (t + 1)
        slots. The caller takes them by moving step_index."""
        return (len(self._lazy), self._ctx_base, len(self.running), self.kv.num_allocated_slots,
                self.kv.num_filled_slots - self._rate_t0_sum, self._rate_sum)

    def cross_quietly(self) -> bool:
        """Run step `step_index` here and say True if all it does is cross block boundaries in place
        (lazy requests take their next blocks, nobody wakes, nothing else is scheduled); the caller
        records it (quiet_steps gives its figures, taken after the crossings). The caller knows that
        the waiting queue cannot be admitted: the last step scheduled nothing, and since then only
        blocks were taken (no free, no new cache key, the same budget), so the head still does not
        fit. A take of a block of the head's prefix hit (as its last walk found it) shrinks the hit:
        the head then needs one more block per lost one (it takes them instead of reviving them),
        unless the budget caps its chunk. So when the head's prompt exceeds the budget and the
        crossings took such a block, say False with the crossings done (the step's first part) and
        step_index unchanged: step() runs the rest of the step."""
        t, lazy = self.step_index, self._lazy
        bucket = self._events.get(t)
        if self._active or not bucket or not self.lazy_decode.in_place:
            return False
        boundaries = {}
        for rid in bucket:
            entry = lazy.get(rid)
            if entry is None or entry[4] != t or rid in boundaries:  # stale, or pushed twice
                continue
            if t == entry[5]:  # it finishes: a real step
                return False
            boundaries[rid] = entry
        if boundaries and not self.lazy_decode.room_to_cross(len(boundaries), []):
            return False
        del self._events[t]
        taken = self._cross(boundaries, t)
        waiting = self.waiting
        if (waiting and self.config.enable_chunked_prefill
                and waiting[0].num_tokens > self.config.max_num_batched_tokens - len(lazy)
                and not self.lazy_decode.hit_kept(waiting[0], taken)):
            return False
        self.step_index = t + 1
        self.num_quiet_crossings += 1
        return True

    def _cross(self, boundaries: dict, t: int) -> list[int]:
        if not boundaries:
            return []
        taken = self.lazy_decode.cross([entry[0] for entry in boundaries.values()])
        lazy, next_boundary = self._lazy, t + self.kv.block_size
        crossing_again = []  # their next event is their next boundary: one bucket for all of them
        for rid, entry in boundaries.items():
            if entry[5] < next_boundary:  # it finishes first
                lazy[rid] = entry[:4] + (entry[5], entry[5])
                self._push_event(entry[5], rid)
            else:
                lazy[rid] = entry[:4] + (next_boundary, entry[5])
                crossing_again.append(rid)
        if crossing_again:
            bucket = self._events.get(next_boundary)
            if bucket is None:
                self._events[next_boundary] = crossing_again
                heappush(self._event_steps, next_boundary)
            else:
                bucket += crossing_again
        return taken

    def _wake(self, rid: str, t: int) -> None:
        req, t0, c0, rate, _, _ = self._lazy.pop(rid)
        self._rate_sum -= rate
        self._rate_t0_sum -= rate * t0
        self._ctx_base -= c0 - t0
        self.num_wakes += 1
        k = t - t0
        if k:
            self.lazy_decode.catch_up(req, k)
            req.num_computed_tokens = c0 + k
            req.output_token_ids.extend(self.tokens_fn(req, req.num_output_tokens, k))
            self.kv.cache_blocks(req)

    def _classify(self, req: Request, t_next: int) -> None:
        rid = req.request_id
        if (req.num_tokens - req.num_computed_tokens != 1 or req.eos_token_id is not None or req.num_samples > 1
                or not req.output_token_ids):  # its first token is sampled in view, for its time to first token
            self._active[rid] = req
            return
        to_finish = req.max_tokens - req.num_output_tokens - 1
        steps = min(self.lazy_decode.steps_until_change(req), to_finish)
        if steps <= 0:
            self._active[rid] = req
            return
        event = t_next + steps
        rate = self.lazy_decode.slots_per_decode(req)
        self._lazy[rid] = (req, t_next, req.num_computed_tokens, rate, event, t_next + to_finish)
        self._rate_sum += rate
        self._rate_t0_sum += rate * t_next
        self._ctx_base += req.num_computed_tokens - t_next
        self._push_event(event, rid)

    def step(self, after_update):
        """One scheduler step; returns (output, batch tokens, context tokens, running, allocated
        slots, filled slots, finished, forked children). `after_update(out, finished)` forks."""
        t = self.step_index
        active, self._active = self._active, {}
        lazy = self._lazy
        boundaries = {}
        bucket = self._events.pop(t, ())
        quiet, wakes = not active, self.num_wakes  # quiet: it only crosses boundaries in place, if anything
        for rid in bucket:
            entry = lazy.get(rid)
            if entry is None or entry[4] != t or rid in boundaries:  # stale, or pushed twice
                continue
            if self.lazy_decode.in_place and t != entry[5]:
                boundaries[rid] = entry
            else:
                self._wake(rid, t)
                active[rid] = entry[0]
        candidates = [r for r in active.values() if r.status is _RUNNING]
        if boundaries:
            if self.lazy_decode.room_to_cross(len(boundaries), candidates):
                self._cross(boundaries, t)
            else:  # the pool may run out: take the exact path
                for rid, entry in boundaries.items():
                    self._wake(rid, t)
                    candidates.append(entry[0])
        budget = self.config.max_num_batched_tokens
        demand = len(lazy) + sum(r.num_tokens - r.num_computed_tokens for r in candidates)
        if demand > budget:  # the budget binds: run this step over every request
            for rid in list(lazy):
                self._wake(rid, t)
            candidates = list(self.running)
        else:
            rank = self._rank
            candidates.sort(key=lambda r: rank[r.request_id])
        out = SchedulerOutput()
        self._schedule_running(candidates, budget - len(lazy), out)
        scheduled_tokens = sum(s.num_new_tokens for s in out.scheduled)
        if not out.preempted:
            self._schedule_waiting(budget - scheduled_tokens - len(lazy), out)
            scheduled_tokens = sum(s.num_new_tokens for s in out.scheduled)
        out.copies = self.kv.take_copies()
        self.last_step_quiet = quiet and self.num_wakes == wakes and not out.scheduled and not out.preempted

        n_lazy = len(lazy)
        batch_tokens = scheduled_tokens + n_lazy
        context = sum(s.start_position + s.num_new_tokens for s in out.scheduled) + self._ctx_base + n_lazy * (t + 1)
        filled = self.kv.num_filled_slots + self._rate_sum * (t + 1) - self._rate_t0_sum
        stats = (len(self.running), self.kv.num_allocated_slots, filled)

        token_fn = self.token_fn
        sampled = {s.request.request_id: token_fn(s.request, s.request.num_output_tokens)
                   for s in out.scheduled if s.needs_logits}
        finished = self.update(out, sampled)
        for req in finished:
            del self._rank[req.request_id]
        children = after_update(out, finished)
        touched = {r.request_id: r for r in candidates}
        touched.update((s.request.request_id, s.request) for s in out.scheduled)
        touched.update((c.request_id, c) for c in children)
        for req in touched.values():
            if req.status is _RUNNING and req.request_id not in lazy:
                self._classify(req, t + 1)
        self.step_index = t + 1
        return out, batch_tokens, context, *stats, finished, children
