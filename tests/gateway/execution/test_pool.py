"""ThreadPool, the Executor that runs calls alone: results with queue/compute times, the runtime's errors mapped
through the one table, calls whose deadline passed while queued skipped, executions recorded, parallelism bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.core.errors import DeadlineExceeded, InferenceFailed, InvalidInput
from gateway.execution.executor import Call
from gateway.execution.pool import ThreadPool
from tests.gateway.fake_runtime import FakeRuntime


def runtime(tmp_path: Path, scale: str = "2") -> FakeRuntime:
    folder = tmp_path / "1"
    folder.mkdir(exist_ok=True)
    (folder / "model.onnx").write_text(scale)
    loaded = FakeRuntime()
    loaded.load(folder, {})
    return loaded


def call(first: float = 1.0, deadline: float | None = None) -> Call:
    return Call({"x": np.array([[first, 2.0, 3.0]], np.float32)}, ["y"], None, deadline)


def test_result_times_and_executions_recorded(tmp_path: Path) -> None:
    seen: list[tuple[int, int, float]] = []
    pool = ThreadPool(runtime(tmp_path), 1, lambda requests, rows, seconds: seen.append((requests, rows, seconds)))
    try:
        outputs, queue, compute = asyncio.run(pool.run(call()))
    finally:
        pool.close()
    assert outputs["y"].tolist() == [[2.0, 4.0, 6.0]]
    assert queue >= 0.0 and compute >= 0.0
    assert [(r, n) for r, n, _ in seen] == [(1, 1)] and seen[0][2] == compute


def test_runtime_errors_follow_the_error_table(tmp_path: Path) -> None:
    pool = ThreadPool(runtime(tmp_path), 1)

    async def scenario() -> None:
        with pytest.raises(InvalidInput, match="must not start with -1"):  # the client's mistake: 400
            await pool.run(call(-1.0))
        with pytest.raises(InferenceFailed, match="ZeroDivisionError"):  # the runtime's fault: 500
            await pool.run(call(-2.0))
        assert (await pool.run(call()))[0]["y"].tolist() == [[2.0, 4.0, 6.0]]  # and the pool still serves

    try:
        asyncio.run(scenario())
    finally:
        pool.close()


def test_a_call_whose_deadline_passes_while_queued_never_reaches_the_runtime(tmp_path: Path) -> None:
    fake = runtime(tmp_path)
    fake.gate = threading.Event()
    pool = ThreadPool(fake, 1)

    async def scenario() -> None:
        busy = asyncio.ensure_future(pool.run(call()))
        assert await asyncio.to_thread(fake.entered.acquire, True, 10)  # the one thread is busy
        with pytest.raises(DeadlineExceeded):
            await pool.run(call(deadline=time.monotonic() + 0.05))
        fake.gate.set()
        await busy
        await pool.run(call())  # runs after the expired one was skipped
        assert fake.calls == 2

    try:
        asyncio.run(scenario())
    finally:
        fake.gate.set()
        pool.close()


def test_no_more_calls_at_once_than_instances(tmp_path: Path) -> None:
    fake = runtime(tmp_path)
    fake.gate = threading.Event()
    pool = ThreadPool(fake, 2)

    async def scenario() -> None:
        tasks = [asyncio.ensure_future(pool.run(call())) for _ in range(5)]
        for _ in range(2):
            assert await asyncio.to_thread(fake.entered.acquire, True, 10)
        assert not await asyncio.to_thread(fake.entered.acquire, True, 0.2)  # a third call never started
        assert fake.calls == 2
        fake.gate.set()
        await asyncio.gather(*tasks)
        assert fake.calls == 5

    try:
        asyncio.run(scenario())
    finally:
        fake.gate.set()
        pool.close()
