"""Shared bits of the fuzz suites: a case counter reported at the end of the run, and example budgets.

The hypothesis profiles (`ci`, the default, and `nightly`) are registered in conftest.py so that
`pytest --hypothesis-profile nightly` (or KVPLAN_FUZZ_PROFILE=nightly) can select them.
"""

from collections import Counter

from hypothesis import settings

CASES: Counter = Counter()


def count(suite: str) -> None:
    CASES[suite] += 1


def share(fraction: float) -> settings:
    """A fraction of the active profile's examples, for properties that each run a whole command
    (ci: 150 x fraction, nightly: 5,000 x fraction)."""
    return settings(max_examples=max(5, int(settings.default.max_examples * fraction)))
