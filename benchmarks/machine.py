"""What machine a benchmark ran on, for the reports in docs/benchmarks/."""

import os
import platform
from pathlib import Path


def describe_machine() -> str:
    """CPU model, logical CPUs, OS and Python, e.g. "AMD EPYC 7B13, 2 logical CPUs, Linux 6.1; Python 3.11.7"."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}")
