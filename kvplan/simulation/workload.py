"""Workloads: seeded synthetic request streams and traces, yielded in arrival order.

A workload yields `WorkItem`s lazily (a trace is read line by line), so memory stays bounded by
the requests in flight, not by the length of the workload.

Synthetic token ids (the simulator only compares them, for prefix caching; all fit an int64):

| tokens                                              | ids                                         |
|-----------------------------------------------------|---------------------------------------------|
| trace tokens given explicitly                       | 0 <= id < 2**40                             |
| shared prefix of group g, position j                | 2**40 + g * 2**32 + j                       |
| own prompt of request k, position j                 | 2**53 + k * 2**32 + j                       |
| Mooncake trace block (hash id h, L tokens), token j | 3 * 2**61 + fold39(h, L) * 2**22 + j        |
| output i of sequence k                              | -(k * 2**32 + i + 1)                        |

fold39 is 39 bits of blake2b over (h, L). Prompts are `SegmentedPrompt`s (tokens.py): the ids are
made only for the slices asked for, and the prefix-cache keys of full blocks come from the segments'
identities (group g; request k; Mooncake h and L, exact, not folded), not from the ids.
"""

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b

from ..errors import InputError
from ..inputs import MAX_TOKENS
from .tokens import SegmentedPrompt

MAX_TRACE_TOKEN_ID = 1 << 40
MAX_SAMPLES = 1024  # n per request
_PREFIX_BASE, _OWN_BASE, _SPAN = 1 << 40, 1 << 53, 1 << 32
_HASHED_BASE, _HASHED_OFFSET_BITS = 3 << 61, 22
MAX_TRACE_BLOCK_TOKENS = 1 << _HASHED_OFFSET_BITS  # tokens per hash id of a Mooncake trace


@dataclass(frozen=True)
class Distribution:
    """A length distribution: `500`, `uniform:50:4000`, `lognormal:MEAN:SIGMA`, `exponential:MEAN`."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str | int, what: str, minimum: int = 1) -> "Distribution":
        s = str(text).strip().lower()
        parts = s.split(":")
        try:
            if len(parts) == 1:
                value = int(parts[0])
                dist = cls("fixed", value)
                bad = value < minimum
            elif parts[0] == "uniform" and len(parts) == 3:
                lo, hi = int(parts[1]), int(parts[2])
                dist, bad = cls("uniform", lo, hi), lo < minimum or hi < lo
            elif parts[0] == "lognormal" and len(parts) == 3:
                mean, sigma = float(parts[1]), float(parts[2])
                dist, bad = cls("lognormal", mean, sigma), not (mean >= 1 and 0 <= sigma <= 10)
            elif parts[0] == "exponential" and len(parts) == 2:
                mean = float(parts[1])
                dist, bad = cls("exponential", mean), not mean >= 1
            else:
                raise ValueError
        except ValueError:
            raise InputError(f"{what}: cannot read {text!r} (use N, uniform:LO:HI, lognormal:MEAN:SIGMA "
                             "or exponential:MEAN)") from None
        if bad or not all(-MAX_TOKENS <= x <= MAX_TOKENS for x in (dist.a, dist.b)):  # also NaN; before float()
            raise InputError(f"{what}: {text[:40]!r} is out of range (lengths are integers >= {minimum} and <= "
                             f"{MAX_TOKENS:,}; uniform needs LO <= HI; lognormal MEAN >= 1 and SIGMA in [0, 10])")
        return dist

    def sample(self, rng: random.Random, minimum: int = 1) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        if self.kind == "lognormal":  # a is the mean of the distribution, not of its logarithm
            mu = math.log(self.a) - self.b * self.b / 2
            return max(minimum, round(rng.lognormvariate(mu, self.b)))
        return max(minimum, round(rng.expovariate(1.0 / self.a)))

    def describe(self) -> str:
        return {"fixed": f"{int(self.a)}", "uniform": f"uniform:{int(self.a)}:{int(self.b)}",
                "lognormal": f"lognormal:{self.a:g}:{self.b:g}", "exponential": f"exponential:{self.a:g}"}[self.kind]


@dataclass(frozen=True)
class WorkItem:
    index: int  # 0-based position in the workload (among the requests a trace replays)
    arrival_time: float
    output_len: int
    prompt_len: int  # own tokens after the shared prefix (ignored when prompt_token_ids is given)
    prefix_group: int | None = None
    prefix_len: int = 0
    prompt_token_ids: tuple[int, ...] | None = None
    num_samples: int = 1
    label: str | None = None  # prefix group name from a trace
    # Mooncake traces: one id per `hash_block_tokens` prompt tokens (the last block may be partial);
    # prompts with the same first k ids share their first k blocks. Tokens past the ids are the request's own.
    hash_ids: tuple[int, ...] = ()
    hash_block_tokens: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids) if self.prompt_token_ids is not None else self.prefix_len + self.prompt_len

    def prompt(self, limit: int | None = None) -> Sequence[int]:
        """The prompt's token ids, at most `limit` of them: a list when the trace gave them, else a
        SegmentedPrompt (a 3-billion-token trace line is never built)."""
        limit = self.num_prompt_tokens if limit is None else min(limit, self.num_prompt_tokens)
        if self.prompt_token_ids is not None:
            return list(self.prompt_token_ids[:limit])
        starts, firsts, identities = [], [], []  # the segments, cut at `limit` (tokens.py)
        position = 0
        if self.prefix_len:
            g = self.prefix_group
            starts.append(0)
            firsts.append(_PREFIX_BASE + g * _SPAN)
            identities.append(b"group %d" % g)
            position = self.prefix_len
        size, total = self.hash_block_tokens, self.num_prompt_tokens
        for h in self.hash_ids:
            if position >= limit:
                break
            identity = b"hash %d %d" % (min(size, total - position), h)  # the block's length as the trace has it
            fold = int.from_bytes(blake2b(identity, digest_size=5).digest(), "little") >> 1
            starts.append(position)
            firsts.append(_HASHED_BASE + (fold << _HASHED_OFFSET_BITS))
            identities.append(identity)
            position += size
        if position < limit:
            starts.append(position)
            firsts.append(_OWN_BASE + self.index * _SPAN)
            identities.append(b"own %d" % self.index)
        return SegmentedPrompt(starts, firsts, identities, limit)

    def prompt_ids(self, limit: int | None = None) -> list[int]:
        """The prompt's token ids as a list, at most `limit` of them."""
        return list(self.prompt(limit))


def output_token(seq_uid: int, index: int) -> int:
    """The synthetic id of output `index` of sequence `seq_uid` (distinct from every prompt id)."""
    return -(seq_uid * _SPAN + index + 1)


def output_tokens(seq_uid: int, first: int, count: int) -> range:
    """output_token(seq_uid, i) for i in [first, first + count)."""
    base = -(seq_uid * _SPAN + first + 1)
    return range(base, base - count, -1)


@dataclass(frozen=True)
class SyntheticWorkload:
    num_requests: int
    prompt_len: Distribution
    output_len: Distribution
    shared_prefix: int = 0  # tokens common to every request of a prefix group, before its own prompt
    prefix_groups: int = 1
    arrival_rate: float | None = None  # requests per time unit, Poisson; None: all at time 0
    num_samples: int = 1
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.num_requests <= 1 << 30:
            raise InputError(f"--requests must be between 1 and 2**30, got {self.num_requests}")
        if self.shared_prefix < 0 or self.shared_prefix >= _SPAN:
            raise InputError(f"--shared-prefix must be between 0 and 2**32, got {self.shared_prefix}")
        if not 1 <= self.prefix_groups <= 1 << 20:
            raise InputError(f"--prefix-groups must be between 1 and 2**20, got {self.prefix_groups}")
        if self.arrival_rate is not None and not (self.arrival_rate > 0 and math.isfinite(self.arrival_rate)):
            raise InputError(f"--arrival-rate must be a positive number, got {self.arrival_rate}")
        if not 1 <= self.num_samples <= MAX_SAMPLES:
            raise InputError(f"--n must be between 1 and {MAX_SAMPLES}, got {self.num_samples}")
        if self.shared_prefix == 0 and self.prompt_len.kind in ("fixed", "uniform") and self.prompt_len.a < 1:
            raise InputError("--prompt-len must be at least 1 without --shared-prefix")

    def __iter__(self):
        rng = random.Random(self.seed)
        now = 0.0
        own_min = 0 if self.shared_prefix else 1
        for i in range(self.num_requests):
            if self.arrival_rate is not None and i:
                now += rng.expovariate(self.arrival_rate)
            prompt = self.prompt_len.sample(rng, own_min)
            output = self.output_len.sample(rng)
            group = i % self.prefix_groups if self.shared_prefix else None
            yield WorkItem(i, now, output, prompt, group, self.shared_prefix, None, self.num_samples)

    def notes(self) -> list[str]:
        return []

    def describe(self) -> dict:
        return {"kind": "synthetic", "requests": self.num_requests, "prompt_len": self.prompt_len.describe(),
                "output_len": self.output_len.describe(), "shared_prefix": self.shared_prefix,
                "prefix_groups": self.prefix_groups, "arrival_rate": self.arrival_rate, "n": self.num_samples,
                "seed": self.seed}
