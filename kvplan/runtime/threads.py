"""CPU threads for the engine: as many intra-op threads as the cores this process may use.

torch sizes its thread pool from the machine's cores, not from the process's affinity mask or a
container's CPU quota; on a small share of a big host (or a 2-core CI machine shared with other
work) the oversubscribed threads spin against each other (a CPU profile that takes 6 minutes
alone took 25). The count here is the affinity mask, bounded by the tightest cgroup CPU quota on
the process's own cgroup path (/proc/self/cgroup), not only the hierarchy's root.
"""

import os
from pathlib import Path

from ..errors import InputError
from ..inputs import CGROUP_CPU_FILE, PROC_CGROUP_FILE, read_text

_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(proc_cgroup: Path = _PROC_CGROUP, root: Path = _CGROUP_ROOT) -> float | None:
    """CPUs the tightest quota on this process's cgroup or its ancestors allows (e.g. 1.5), or None.

    /proc/self/cgroup names the cgroup: `0::/path` under the v2 hierarchy at `root`, or
    `N:cpu,cpuacct:/path` under the v1 cpu controller's hierarchy (mounted as `root/cpu,cpuacct`,
    or `root/cpu`). A quota may sit on any level up to the mount; the smallest binds."""
    try:
        lines = read_text(proc_cgroup, PROC_CGROUP_FILE).splitlines()
    except InputError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            limits += _along(root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for mount in dict.fromkeys((root / controllers, root / "cpu,cpuacct", root / "cpu")):
                limits += _along(mount, path, _v1_quota)
    return min(limits) if limits else None


def _along(mount: Path, path: str, read) -> list[float]:
    """The quotas set on `mount/path` and each of its ancestors up to `mount`."""
    directory = mount / path.strip("/")
    found = []
    while True:
        quota = read(directory)
        if quota is not None:
            found.append(quota)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = read_text(directory / "cpu.max", CGROUP_CPU_FILE).split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (InputError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int(read_text(directory / "cpu.cfs_quota_us", CGROUP_CPU_FILE))
        period = int(read_text(directory / "cpu.cfs_period_us", CGROUP_CPU_FILE))
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
