"""CPU accounting on this Linux box: a process tree's CPU seconds, the whole machine's busy time, quiet waits."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

TICK = float(os.sysconf("SC_CLK_TCK"))


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of the process plus its reaped children) for every process we can read."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        # fields[0] is the state; ppid, utime, stime, cutime, cstime are fields 4, 14-17 of proc(5).
        ppid = int(fields[1])
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        table[int(entry)] = (ppid, ticks / TICK)
    return table


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of ``root`` and all its live descendants (plus children they already reaped)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            total += table[pid][1]
        todo.extend(children.get(pid, []))
    return total


def tree_size(root: int) -> int:
    """How many live processes the tree under ``root`` has (the root included)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    count, todo = 0, [root]
    while todo:
        pid = todo.pop()
        count += pid in table
        todo.extend(children.get(pid, []))
    return count


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle, not iowait) since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(v) for v in parts[:8]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / TICK


def children_cpu_seconds() -> float:
    """CPU seconds used by this process's reaped children (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cores() -> int:
    return os.cpu_count() or 1


def wait_quiet(max_busy_cores: float, timeout_s: float, sample_s: float = 1.0) -> tuple[float, float]:
    """Wait until the machine's busy cores over ``sample_s`` drop below ``max_busy_cores`` (or timeout).

    Returns (seconds waited, busy cores in the last sample)."""
    start = time.monotonic()
    while True:
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(sample_s)
        busy = (machine_busy_seconds() - b0) / (time.monotonic() - t0)
        waited = time.monotonic() - start
        if busy <= max_busy_cores or waited >= timeout_s:
            return waited, busy


@dataclass
class CpuWindow:
    """CPU used during one measurement window by the server tree, the load generator and everything else."""

    server_pid: int
    wall_s: float = 0.0
    server_s: float = 0.0
    client_s: float = 0.0
    machine_s: float = 0.0

    def __enter__(self) -> CpuWindow:
        self._t = time.monotonic()
        self._server = tree_cpu_seconds(self.server_pid)
        self._client = children_cpu_seconds()
        self._machine = machine_busy_seconds()
        return self

    def add_client_seconds(self, seconds: float) -> None:
        """CPU the load generator used in this process (an in-process client), not seen as a child."""
        self.client_s += seconds

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t
        self.server_s = tree_cpu_seconds(self.server_pid) - self._server
        self.client_s += children_cpu_seconds() - self._client
        self.machine_s = machine_busy_seconds() - self._machine

    @property
    def other_cores(self) -> float:
        """Average cores used by everything else on the machine (other users, this script) in the window."""
        if self.wall_s <= 0:
            return 0.0
        return max(0.0, self.machine_s - self.server_s - self.client_s) / self.wall_s
