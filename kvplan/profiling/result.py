"""What a profile reports: each figure predicted (by the static estimate and by the simulator),
measured on the device, and how each measured figure was obtained.

Every measured-side figure carries a basis: `measured` (read from the device, the allocator or
the run) or `computed` (derived from measured figures by a formula, e.g. blocks = budget // page).
Figures a device cannot measure stay None, `not measured`, with the reason. Where the KV budget
needs a term the device did not measure, it uses the estimate's and says so in the notes.
"""

from dataclasses import asdict, dataclass, field

from ..errors import FindingError

# The compared figures, in report order.
METRICS = ("weights_bytes", "activation_peak_bytes", "non_torch_bytes", "kv_pool_bytes", "total_memory_bytes",
           "num_blocks", "max_concurrent_users", "memory_utilization", "internal_fragmentation",
           "allocator_fragmentation_bytes", "peak_allocated_bytes", "preemptions", "decode_tokens_per_s")
# Figures of the run's dynamics: their prediction of record is the simulator's.
DYNAMIC = ("max_concurrent_users", "memory_utilization", "internal_fragmentation", "preemptions")
BASIS_KINDS = ("measured", "computed", "not measured")


@dataclass
class ProfileResult:
    model: str
    model_source: str
    device: str
    device_name: str
    on_cpu: bool
    dtype: str
    kv_dtype: str
    random_weights: bool | None
    deployment: dict
    workload: dict
    estimate: dict | None = None
    predicted: dict = field(default_factory=dict)  # the prediction of record per metric (see predicted_basis)
    predicted_basis: dict = field(default_factory=dict)  # metric -> "static" | "simulated"
    predicted_static: dict = field(default_factory=dict)  # the estimate alone
    predicted_simulated: dict = field(default_factory=dict)  # the paging simulator over the same workload
    measured: dict = field(default_factory=dict)
    measured_basis: dict = field(default_factory=dict)  # metric -> {"kind": BASIS_KINDS, "how": text}
    error: dict = field(default_factory=dict)  # measured - predicted, in the metric's unit
    relative_error: dict = field(default_factory=dict)  # (measured - predicted) / predicted
    simulated: dict | None = None  # the simulator's full summary
    run: dict | None = None
    contiguous: dict | None = None
    samples: list[dict] = field(default_factory=list)
    phase: str = "estimate"  # last phase reached; "done" when complete
    finding: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    def record(self, key: str, value, kind: str, how: str) -> None:
        """A measured-side figure and how it was obtained."""
        if kind not in BASIS_KINDS:
            raise ValueError(f"unknown basis {kind!r}")
        self.measured[key] = value
        self.measured_basis[key] = {"kind": kind, "how": how}

    def unmeasured(self, key: str, why: str) -> None:
        self.record(key, None, "not measured", why)

    def to_dict(self) -> dict:
        return asdict(self)


def compare_figures(result: ProfileResult) -> None:
    """error and relative_error of every metric against its prediction of record (None where a side is)."""
    for key in METRICS:
        p, m = result.predicted.get(key), result.measured.get(key)
        if p is None or m is None:
            result.error[key] = result.relative_error[key] = None
            continue
        result.error[key] = m - p
        result.relative_error[key] = (m - p) / p if p else (0.0 if m == p else None)


def raise_for_finding(result: ProfileResult) -> None:
    if result.finding:
        raise FindingError(f"profile finding: {result.finding}")
