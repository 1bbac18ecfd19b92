"""Shared bits of the fuzz suites: hypothesis profiles and a case counter reported at the end."""

import os
from collections import Counter

from hypothesis import HealthCheck, settings

CASES: Counter = Counter()

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("KVPLAN_FUZZ_PROFILE", "ci"))


def count(suite: str) -> None:
    CASES[suite] += 1
