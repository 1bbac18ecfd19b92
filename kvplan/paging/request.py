"""Request: one sequence as the allocator and the scheduler see it (host data only, no tensors).

Token bookkeeping (positions are 0-based):

| range                                   | meaning                                           |
|-----------------------------------------|---------------------------------------------------|
| [0, num_cached_tokens)                  | prefix-cache hit at the last admission            |
| [0, num_computed_tokens)                | KV in the cache (written by a forward pass)       |
| [num_computed_tokens, num_tokens)       | still to compute (prompt chunk, or the last token)|

A running request in decode has exactly one token to compute: the one sampled last step.
"""

from dataclasses import dataclass, field
from enum import Enum


class RequestStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"  # released its blocks; waits at the front of the queue to recompute
    FINISHED_LENGTH = "finished_length"
    FINISHED_STOPPED = "finished_stopped"


class _Unheld:
    """Request.kv_state while no KV cache manager holds the request: its manager is nobody, so a
    manager's hot path needs one identity test, not a None test first."""
    __slots__ = ()
    manager = None


UNHELD = _Unheld()


@dataclass(eq=False, slots=True)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    max_tokens: int
    output_token_ids: list[int] = field(default_factory=list)
    arrival_time: float = 0.0
    eos_token_id: int | None = None
    prefix_group: str | None = None
    num_samples: int = 1  # sequences it becomes: the caller forks n - 1 children after the prompt, then sets 1
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0
    num_preemptions: int = 0
    # Chain values of the full blocks of all_token_ids (paging.hashing), filled lazily by the KV cache manager.
    block_hashes: list[int] = field(default_factory=list, repr=False)
    # Their check values, computed once (a prefix of block_hashes: keys may be given ahead of them).
    block_checks: list[int] = field(default_factory=list, repr=False)
    # The KV cache manager's bookkeeping while the request holds blocks (UNHELD otherwise): kept here,
    # as nano-vllm keeps a sequence's block table on it, so a decode step finds it without a lookup.
    kv_state: object = field(default=UNHELD, repr=False)

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"request {self.request_id}: max_tokens must be at least 1")
        if not self.prompt_token_ids:
            raise ValueError(f"request {self.request_id}: empty prompt")

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def token_ids(self, start: int, stop: int) -> list[int]:
        """all_token_ids[start:stop] without building the whole list."""
        p = len(self.prompt_token_ids)
        if stop <= p:
            return self.prompt_token_ids[start:stop]
        if start >= p:
            return self.output_token_ids[start - p:stop - p]
        return self.prompt_token_ids[start:] + self.output_token_ids[:stop - p]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status in (RequestStatus.FINISHED_LENGTH, RequestStatus.FINISHED_STOPPED)

    def append_token(self, token_id: int) -> None:
        """Add a sampled token and finish on max_tokens or EOS."""
        self.output_token_ids.append(token_id)
        if self.eos_token_id is not None and token_id == self.eos_token_id:
            self.status = RequestStatus.FINISHED_STOPPED
        elif len(self.output_token_ids) >= self.max_tokens:
            self.status = RequestStatus.FINISHED_LENGTH
