"""Shared bits of the fuzz suites: a case counter reported at the end of the run.

The hypothesis profiles (`ci`, the default, and `nightly`) are registered in conftest.py so that
`pytest --hypothesis-profile nightly` can select them.
"""

from collections import Counter

CASES: Counter = Counter()


def count(suite: str) -> None:
    CASES[suite] += 1
