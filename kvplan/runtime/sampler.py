"""Token sampling: greedy, or temperature + top-p with a per-request seeded generator.

Each request owns its generator, so what it samples does not depend on which other requests
share its batch (batch invariance, up to floating-point differences in the logits themselves).
"""

from dataclasses import dataclass

import torch

from ..errors import InputError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise InputError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


GREEDY = SamplingParams()


class Sampler:
    def __init__(self, device: torch.device):
        self.device = device
        self._generators: dict[str, torch.Generator] = {}

    def sample(self, logits: torch.Tensor, request_ids: list[str], params: list[SamplingParams]) -> list[int]:
        """One token per row of `logits` `[N, vocab]`; a single host sync for the whole batch."""
        logits = logits.float()
        tokens = logits.argmax(-1)
        for row, (request_id, p) in enumerate(zip(request_ids, params)):
            if not p.greedy:
                tokens[row] = self._sample_row(logits[row], request_id, p)
        return tokens.tolist()

    def _sample_row(self, logits: torch.Tensor, request_id: str, p: SamplingParams) -> torch.Tensor:
        probs = torch.softmax(logits / p.temperature, -1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            before = sorted_probs.cumsum(-1) - sorted_probs  # mass of strictly more likely tokens
            sorted_probs = sorted_probs.masked_fill(before >= p.top_p, 0.0)
            choice = torch.multinomial(sorted_probs, 1, generator=self._generator(request_id, p))
            return order[choice[0]]
        return torch.multinomial(probs, 1, generator=self._generator(request_id, p))[0]

    def _generator(self, request_id: str, p: SamplingParams) -> torch.Generator:
        gen = self._generators.get(request_id)
        if gen is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(p.seed) if p.seed is not None else gen.seed()
            self._generators[request_id] = gen
        return gen

    def forget(self, request_id: str) -> None:
        self._generators.pop(request_id, None)
