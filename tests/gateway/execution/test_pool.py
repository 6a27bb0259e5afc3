"""ThreadPool, the Executor that runs calls alone: results with queue/compute times, the runtime's errors mapped
through the one table, calls whose deadline passed while queued skipped, executions recorded, parallelism bounded,
threads started by traffic and retired when idle."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
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


def _alive(pool: ThreadPool) -> int:
    with pool._cond:
        return len(pool._threads)


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"still not true after 60 s: {what}"
        await asyncio.sleep(0.005)


def test_threads_start_with_traffic_and_retire_when_idle(tmp_path: Path) -> None:
    fake = runtime(tmp_path)
    fake.gate = threading.Event()
    pool = ThreadPool(fake, 2, idle_s=0.2)
    assert _alive(pool) == 0  # a loaded model without traffic holds no thread

    async def scenario() -> None:
        first = asyncio.ensure_future(pool.run(call()))
        assert await asyncio.to_thread(fake.entered.acquire, True, 10)
        assert _alive(pool) == 1  # one call, one thread
        rest = [asyncio.ensure_future(pool.run(call())) for _ in range(4)]
        assert await asyncio.to_thread(fake.entered.acquire, True, 10)
        assert _alive(pool) == 2  # never more than instances
        fake.gate.set()
        await asyncio.gather(first, *rest)
        assert fake.calls == 5
        await _until(lambda: _alive(pool) == 0, "idle threads retired")
        assert (await pool.run(call()))[0]["y"].tolist() == [[2.0, 4.0, 6.0]]  # and a new call starts one again
        assert _alive(pool) == 1

    try:
        asyncio.run(scenario())
    finally:
        fake.gate.set()
        pool.close()
    assert not any(t.is_alive() for t in pool._threads)
    with pytest.raises(InferenceFailed, match="being unloaded"):
        asyncio.run(pool.run(call()))


def test_calls_racing_a_retiring_thread_are_all_served(tmp_path: Path) -> None:
    pool = ThreadPool(runtime(tmp_path), 2, idle_s=0.001)  # threads retire almost as soon as the queue empties

    async def scenario() -> None:
        for _ in range(200):
            results = await asyncio.gather(*(pool.run(call()) for _ in range(3)))
            assert all(r[0]["y"].tolist() == [[2.0, 4.0, 6.0]] for r in results)
            await asyncio.sleep(0.001 * (_ % 3))

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        pool.close()
