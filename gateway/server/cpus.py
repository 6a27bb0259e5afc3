"""usable_cpus: how many CPUs this process may really use — its CPU affinity, capped by the container's CPU quota
(cgroup v2 ``cpu.max``, or cgroup v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``) rounded up; never the host's
count, which a container limited to 2 CPUs on a 64-core node would otherwise see."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def usable_cpus(root: Path = CGROUP) -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The CPU quota in CPUs (quota / period), or None when unlimited or unknown: cgroup v2's ``cpu.max`` of this
    process's cgroup (``/proc/self/cgroup``; the root when the container has its own cgroup namespace)."""
    for folder in (root, root / _own_cgroup()):
        try:
            fields = (folder / "cpu.max").read_text().split()
        except OSError:
            continue
        try:
            if fields and fields[0] != "max":
                return int(fields[0]) / int(fields[1] if len(fields) > 1 else 100_000)
        except (ValueError, ZeroDivisionError):
            pass
        return None
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _own_cgroup() -> str:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].lstrip("/")
    except OSError:
        pass
    return ""
