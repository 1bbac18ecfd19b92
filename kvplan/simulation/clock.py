"""How long a scheduler step lasts in the simulation: a roofline cost model, or one unit per step.

The cost model is deliberately simple (one GPU of the deployment, no kernels modelled):

    step_s = max((weights_bytes + kv_bytes_per_token * context_tokens) / bandwidth,
                 flops_per_token * batch_tokens / peak_flops)

where context_tokens is the sum over scheduled requests of the tokens they attend to (their
position after the step) and batch_tokens the tokens computed in the step. It is a pure function
of two integers, so the event-driven and the step-by-step runs see bit-identical durations.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class StepClock:
    """Time counted in scheduler steps; arrival rates are then per step."""

    unit = "step"

    def step_time(self, batch_tokens: int, context_tokens: int) -> float:
        return 1.0

    def describe(self) -> dict:
        return {"clock": "steps"}


@dataclass(frozen=True)
class CostModel:
    weights_bytes: int  # read once per step, per GPU
    kv_bytes_per_token: int  # per GPU, read once per attended token
    flops_per_token: float  # 2 x active parameters / tp
    bandwidth_bytes_per_s: float
    peak_flops: float

    unit = "s"

    def __post_init__(self):
        if not (self.bandwidth_bytes_per_s > 0 and self.peak_flops > 0):
            raise ValueError("a cost model needs positive bandwidth and FLOP/s")

    def step_time(self, batch_tokens: int, context_tokens: int) -> float:
        memory_s = (self.weights_bytes + self.kv_bytes_per_token * context_tokens) / self.bandwidth_bytes_per_s
        compute_s = self.flops_per_token * batch_tokens / self.peak_flops
        return memory_s if memory_s > compute_s else compute_s

    def describe(self) -> dict:
        return {"clock": "cost", "weights_bytes": self.weights_bytes, "kv_bytes_per_token": self.kv_bytes_per_token,
                "flops_per_token": self.flops_per_token, "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
                "peak_flops": self.peak_flops}
