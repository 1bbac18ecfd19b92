"""ContiguousKVManager: the baseline that reserves max_model_len tokens per request up front.

Same interface as KVCacheManager as far as the Scheduler and the simulator use it, over the same
memory (num_blocks x block_size slots). Each request reserves, in every page group, the tokens its
layers can ever hold: max_model_len for full attention, the window for sliding/chunked layers
(a ring buffer). No prefix sharing; a fork copies into a reservation made at admission for all
of the request's samples.

| invariant                                                        | checked by        |
|------------------------------------------------------------------|-------------------|
| reserved slots == sum of live reservations <= capacity           | check_integrity() |
| filled slots == sum over requests of tokens_held per group       | check_integrity() |
"""

from ..model.grouping import PageLayout
from .request import Request


class ContiguousKVManager:
    enable_prefix_caching = False
    keeps_every_token = False  # no blocks: lazy decodes never cross a boundary in place

    def __init__(self, layout: PageLayout, num_blocks: int, block_size: int, max_model_len: int):
        self.layout = layout
        self.block_size = block_size
        self.capacity_slots = num_blocks * block_size
        self._caps = [g.attention.tokens_held(max_model_len) for g in layout.groups]
        self.reservation_slots = sum(self._caps)
        self.num_groups = len(self._caps)
        self._units: dict[str, int] = {}  # reservations held (n samples reserve n at admission)
        self._reqs: dict[str, Request] = {}
        self.num_reserved_slots = 0
        self.num_filled_slots = 0

    def _held(self, tokens: int) -> int:
        return sum(min(tokens, cap) for cap in self._caps)

    def get_computed_tokens(self, req: Request) -> int:
        return 0

    def allocate_slots(self, req: Request, num_new_tokens: int) -> bool:
        rid = req.request_id
        if rid not in self._units:
            units = req.num_samples
            if self.num_reserved_slots + units * self.reservation_slots > self.capacity_slots:
                return False
            self._units[rid] = units
            self._reqs[rid] = req
            self.num_reserved_slots += units * self.reservation_slots
            req.num_computed_tokens = req.num_cached_tokens = 0
        start = req.num_computed_tokens
        self.num_filled_slots += self._held(start + num_new_tokens) - self._held(start)
        return True

    def free(self, req: Request) -> None:
        units = self._units.pop(req.request_id, None)
        if units is None:
            return
        del self._reqs[req.request_id]
        self.num_reserved_slots -= units * self.reservation_slots
        self.num_filled_slots -= self._held(req.num_computed_tokens)

    def fork(self, parent: Request, child: Request) -> None:
        """The child takes one of the parent's spare reservations, or a fresh one if there is room."""
        if self._units[parent.request_id] > 1:
            self._units[parent.request_id] -= 1
        elif self.num_reserved_slots + self.reservation_slots <= self.capacity_slots:
            self.num_reserved_slots += self.reservation_slots
        else:
            raise RuntimeError("contiguous fork without a reservation")
        self._units[child.request_id] = 1
        self._reqs[child.request_id] = child
        child.num_computed_tokens = parent.num_computed_tokens
        self.num_filled_slots += self._held(child.num_computed_tokens)

    def catch_up(self, req: Request, num_tokens: int) -> None:
        start = req.num_computed_tokens
        self.num_filled_slots += self._held(start + num_tokens) - self._held(start)

    def cache_blocks(self, req: Request) -> None:
        return None

    def take_copies(self) -> list[tuple[int, int]]:
        return []

    @property
    def num_allocated_slots(self) -> int:
        return self.num_reserved_slots

    @property
    def usage(self) -> float:
        return self.num_reserved_slots / self.capacity_slots

    def slots_per_decode(self, req: Request) -> int:
        n = req.num_computed_tokens
        return sum(1 for cap in self._caps if n < cap)

    def decode_steps(self, req: Request) -> int:
        n = req.num_computed_tokens
        return min((cap - n for cap in self._caps if n < cap), default=1 << 62)

    def check_integrity(self) -> None:
        reserved = sum(self._units.values()) * self.reservation_slots
        if reserved != self.num_reserved_slots or reserved > self.capacity_slots:
            raise AssertionError(f"reserved slots {self.num_reserved_slots} != {reserved} "
                                 f"(capacity {self.capacity_slots})")
        filled = sum(self._held(r.num_computed_tokens) for r in self._reqs.values())
        if filled != self.num_filled_slots:
            raise AssertionError(f"filled slots {self.num_filled_slots} != {filled}")
