"""usable_cpus: the container's CPU quota (cgroup v2 cpu.max, cgroup v1 cfs quota) caps the CPUs in the affinity
mask; an unlimited or unreadable quota leaves the affinity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.server.cpus import cgroup_quota, usable_cpus
from gateway.server.settings import Settings

AFFINITY = len(os.sched_getaffinity(0))


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(AFFINITY, 2)


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == AFFINITY


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    assert usable_cpus(tmp_path) == 1  # never below one


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) is None


def test_workers_setting() -> None:
    assert Settings(workers="3").worker_count() == 3
    assert Settings().worker_count() == 1
    assert 1 <= Settings(workers="auto").worker_count() <= AFFINITY
    with pytest.raises(ValueError, match="workers"):
        Settings(workers="0")
    with pytest.raises(ValueError, match="workers"):
        Settings(workers="many")
