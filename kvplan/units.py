"""Byte sizes: parsing user strings and printing with explicit units (GiB = 2^30, GB = 10^9)."""

import math
import re

from .errors import InputError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
KB = 10**3
MB = 10**6
GB = 10**9
TB = 10**12

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
    "k": KB, "kb": KB, "m": MB, "mb": MB, "g": GB, "gb": GB, "t": TB, "tb": TB,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int, what: str = "size") -> int:
    """`80GiB`, `24GB`, `81559MiB`, `1.5e9`, `1024` -> bytes. Decimal units are 10^n, binary 2^n."""
    if isinstance(text, bool):
        raise InputError(f"{what}: expected a size like 80GiB, got {text!r}")
    if isinstance(text, int):
        value, unit = text, ""
    else:
        match = _SIZE_RE.match(str(text))
        if not match:
            raise InputError(f"{what}: cannot read {text!r} as a size (examples: 80GiB, 24GB, 81559MiB, 1073741824)")
        value, unit = float(match.group(1)), match.group(2).lower()
        if unit not in _SIZE_UNITS:
            raise InputError(f"{what}: unknown unit {match.group(2)!r} in {text!r} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)")
    size = value * _SIZE_UNITS[unit]
    if not math.isfinite(size) or size < 0:
        raise InputError(f"{what}: {text!r} is not a non-negative size")
    if size > 1 << 60:
        raise InputError(f"{what}: {text!r} is implausibly large")
    return int(round(size))


def gib(num_bytes: float) -> float:
    return num_bytes / GiB


def fmt_gib(num_bytes: float, digits: int = 2) -> str:
    """Human form in binary units, always labelled GiB (or MiB/KiB when small)."""
    if num_bytes is None:
        return "-"
    a = abs(num_bytes)
    if a >= GiB / 10:
        return f"{num_bytes / GiB:,.{digits}f} GiB"
    if a >= MiB:
        return f"{num_bytes / MiB:,.{digits}f} MiB"
    if a >= KiB:
        return f"{num_bytes / KiB:,.{digits}f} KiB"
    return f"{int(num_bytes):,} B"


def fmt_gb(num_bytes: float, digits: int = 2) -> str:
    """Decimal form, labelled GB, for comparison with vendor figures."""
    if num_bytes is None:
        return "-"
    return f"{num_bytes / GB:,.{digits}f} GB"


def fmt_tokens(tokens: int) -> str:
    if tokens >= 1024 and tokens % 1024 == 0:
        return f"{tokens // 1024}k"
    return f"{tokens:,}"


def parse_count(text: str | int, what: str, minimum: int = 1, maximum: int = 1 << 40) -> int:
    """An integer count such as `131072`, `128k` (= 131072 tokens) or `1e6`, within [minimum, maximum]."""
    if isinstance(text, bool):
        raise InputError(f"{what}: expected an integer, got {text!r}")
    if isinstance(text, int):
        value = text
    else:
        s = str(text).strip().lower()
        try:
            if s.endswith("k") and s[:-1].isdigit():
                value = int(s[:-1]) * 1024
            elif s.endswith("m") and s[:-1].isdigit():
                value = int(s[:-1]) * 1024 * 1024
            else:
                f = float(s)
                if not math.isfinite(f) or f != int(f):
                    raise ValueError
                value = int(f)
        except ValueError:
            raise InputError(f"{what}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise InputError(f"{what}: must be at least {minimum}, got {value}")
    if value > maximum:
        raise InputError(f"{what}: {value:,} is implausibly large (at most {maximum:,})")
    return value
