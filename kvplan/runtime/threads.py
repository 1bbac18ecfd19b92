"""CPU threads for the engine: as many intra-op threads as the cores this process may use.

torch sizes its thread pool from the machine's cores, not from the process's affinity mask or a
container's CPU quota; on a small share of a big host (or a 2-core CI machine shared with other
work) the oversubscribed threads spin against each other (a CPU profile that takes 6 minutes
alone took 25). The count here is the affinity mask, bounded by a cgroup CPU quota.
"""

import os
from pathlib import Path

from ..errors import InputError
from ..inputs import CGROUP_CPU_FILE, read_text

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def cgroup_cpu_limit(v2: Path = _CGROUP_V2, v1: tuple[Path, Path] = _CGROUP_V1) -> float | None:
    """CPUs the cgroup quota allows (e.g. 1.5), or None when there is no quota."""
    try:
        quota, period = read_text(v2, CGROUP_CPU_FILE).split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (InputError, ValueError):
        pass
    try:
        quota, period = (int(read_text(p, CGROUP_CPU_FILE)) for p in v1)
        return quota / period if quota > 0 and period > 0 else None
    except (InputError, ValueError):
        return None


def available_cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, int(limit)))
    return max(1, cores)


def limit_torch_threads() -> int:
    """Lower torch's intra-op threads to the available cores (never raise them); returns the count."""
    import torch

    cores = available_cores()
    if torch.get_num_threads() > cores:
        torch.set_num_threads(cores)
    return torch.get_num_threads()
