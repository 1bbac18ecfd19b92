"""What an explanation is made of: rows of logged vs predicted figures, and how each row is judged.

Logged memory is rounded to 0.01 GiB, so every prediction made from it carries one rounding
quantum: integer figures are computed at the low and high ends of the rounding interval too, and
"agrees" means the logged value lies in that range. A GiB figure agrees when the prediction
rounds to the printed value, or lies within a stated tolerance (the `tolerance_gib` of the row).
"""

from dataclasses import asdict, dataclass, field

from ..units import GiB

LOG_QUANTUM_GIB = 0.005  # half of the 0.01 GiB the engines print


@dataclass(frozen=True)
class Row:
    figure: str
    logged: str
    predicted: str
    difference: str
    agrees: bool | None  # None: nothing to compare
    basis: str


@dataclass
class LogExplanation:
    engine: str
    engine_version: str
    model: str
    settings: dict
    rows: list[Row] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    predicted_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def gib_row(figure: str, logged_gib: float, predicted_bytes: int, basis: str, tolerance_gib: float = 0.0) -> Row:
    """Agrees when the prediction prints as the logged value, or is within `tolerance_gib` of it (a modelled term)."""
    predicted = predicted_bytes / GiB
    agrees = abs(round(predicted, 2) - logged_gib) < 0.0051 or abs(predicted - logged_gib) <= tolerance_gib
    if tolerance_gib:
        basis = f"{basis} (agrees within {tolerance_gib:.2f} GiB)"
    return Row(figure, f"{logged_gib:.2f}", f"{predicted:.2f}", f"{predicted - logged_gib:+.2f}", agrees, basis)


def int_row(figure: str, logged: int, predicted: int, low: int | None, high: int | None, basis: str) -> Row:
    agrees = low is not None and high is not None and min(low, high) <= logged <= max(low, high)
    span = f" (range {min(low, high):,}..{max(low, high):,})" if low is not None and high is not None else ""
    return Row(figure, f"{logged:,}", f"{predicted:,}{span}", f"{predicted - logged:+,}", agrees, basis)
