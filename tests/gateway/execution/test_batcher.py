"""Batcher with a small numpy runtime: stacking and splitting, compatible shapes only, per-request errors,
deadlines, queue delay and preferred sizes, instance parallelism, closing.

No test sleeps a fixed time and hopes: the runtime holds its calls on a gate the test opens, and the test waits for
what it can observe (calls the runtime has started, requests in the batcher's queue) with a generous deadline, so
the outcome is the same on a fast machine and on a loaded one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.core.errors import DeadlineExceeded, InferenceFailed, InvalidInput
from gateway.execution.batcher import Batcher
from gateway.execution.executor import Call
from runtimes.base import Runtime, RuntimeInputError, Signature, TensorSpec

#: How long a test waits for something that must happen; only a broken batcher ever uses it up.
WAIT_S = 60.0


class Doubler(Runtime):
    """y = 2x; records the rows of every call and how many ran at once; ``gate`` holds calls until set;
    a row starting with -1 is refused (RuntimeInputError)."""

    format = "onnx"
    artifact = "model.onnx"

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        pass

    def signatures(self) -> Mapping[str, Signature]:
        spec = TensorSpec("x", "FP32", (-1, -1))
        return {"serving_default": Signature((spec,), (TensorSpec("y", "FP32", (-1, -1)),))}

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, signature: str | None = None
    ) -> dict[str, np.ndarray]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.calls.append(int(inputs["x"].shape[0]))
        try:
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
            x = inputs["x"]
            if (x[:, 0] == -1).any():
                raise RuntimeInputError("x: a row starts with -1")
            return {"y": x * 2}
        finally:
            with self._lock:
                self.running -= 1


def rows(n: int, width: int = 3, start: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": (start + np.arange(n * width, dtype=np.float32)).reshape(n, width)}


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (letting the event loop and the instance threads run) until it holds."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {WAIT_S:.0f} s: {what}")
        await asyncio.sleep(0.001)


async def wait_for_calls(runtime: Doubler, count: int) -> None:
    await wait_until(lambda: len(runtime.calls) >= count, f"{count} runtime calls started (saw {runtime.calls})")


def queued(batcher: Batcher) -> int:
    """Requests waiting in the batcher's queue, read under its lock (taken ones have left it)."""
    with batcher._cond:
        return len(batcher._queue)


async def wait_for_queued(batcher: Batcher, count: int) -> None:
    await wait_until(lambda: queued(batcher) == count, f"{count} requests queued (saw {queued(batcher)})")


def make(runtime: Doubler, **kwargs: Any) -> tuple[Batcher, list[tuple[int, int]]]:
    seen: list[tuple[int, int]] = []
    settings: dict[str, Any] = {"instances": 1, "max_batch_size": 8, "max_queue_delay_ms": 0.0, **kwargs}
    batcher = Batcher(runtime, on_execution=lambda requests, n, _s: seen.append((requests, n)), **settings)
    return batcher, seen


def test_queued_requests_are_stacked_into_one_call_and_split_back() -> None:
    runtime = Doubler()
    batcher, seen = make(runtime)

    async def scenario() -> None:
        runtime.gate.clear()
        first = asyncio.ensure_future(batcher.run(Call(rows(1), ["y"], None, None)))
        await wait_for_calls(runtime, 1)  # the only instance is busy: the next ones queue up
        inputs = [rows(n, start=100 * k) for k, n in enumerate((1, 2, 1, 3, 1))]
        tasks = [asyncio.ensure_future(batcher.run(Call(x, ["y"], None, None))) for x in inputs]
        await wait_for_queued(batcher, 5)  # all five wait behind the held call
        runtime.gate.set()
        results = await asyncio.gather(first, *tasks)
        for x, (out, queued, computed) in zip([rows(1), *inputs], results, strict=True):
            np.testing.assert_array_equal(out["y"], x["x"] * 2)
            assert queued >= 0 and computed >= 0

    asyncio.run(scenario())
    batcher.close()
    assert runtime.calls == [1, 8]
    assert seen == [(1, 1), (5, 8)]


def test_only_compatible_shapes_share_a_call() -> None:
    runtime = Doubler()
    batcher, _seen = make(runtime)

    async def scenario() -> None:
        runtime.gate.clear()
        first = asyncio.ensure_future(batcher.run(Call(rows(1), ["y"], None, None)))
        await wait_for_calls(runtime, 1)
        narrow = [asyncio.ensure_future(batcher.run(Call(rows(1, width=3), ["y"], None, None))) for _ in range(2)]
        wide = [asyncio.ensure_future(batcher.run(Call(rows(1, width=4), ["y"], None, None))) for _ in range(2)]
        await wait_for_queued(batcher, 4)
        runtime.gate.set()
        done = await asyncio.gather(first, *narrow, *wide)
        assert [r[0]["y"].shape for r in done] == [(1, 3)] * 3 + [(1, 4)] * 2

    asyncio.run(scenario())
    batcher.close()
    assert runtime.calls == [1, 2, 2]


def test_a_failing_batch_is_retried_request_by_request() -> None:
    runtime = Doubler()
    batcher, seen = make(runtime)

    async def scenario() -> None:
        runtime.gate.clear()
        first = asyncio.ensure_future(batcher.run(Call(rows(1), ["y"], None, None)))
        await wait_for_calls(runtime, 1)
        bad = {"x": np.array([[-1.0, 0.0, 0.0]], np.float32)}
        good = [rows(1, start=10), rows(2, start=20)]
        tasks = [asyncio.ensure_future(batcher.run(Call(x, ["y"], None, None))) for x in (good[0], bad, good[1])]
        await wait_for_queued(batcher, 3)  # one batch of 4 rows once the gate opens
        runtime.gate.set()
        outcomes = await asyncio.gather(first, *tasks, return_exceptions=True)
        assert isinstance(outcomes[2], InvalidInput) and "starts with -1" in str(outcomes[2])
        for x, outcome in zip(good, (outcomes[1], outcomes[3]), strict=True):
            assert not isinstance(outcome, BaseException)
            np.testing.assert_array_equal(outcome[0]["y"], x["x"] * 2)

    asyncio.run(scenario())
    batcher.close()
    # the batch of 4 rows failed, then each request ran alone; only successful calls are counted
    assert runtime.calls == [1, 4, 1, 1, 2]
    assert seen == [(1, 1), (1, 1), (1, 2)]


def test_expired_requests_never_reach_the_runtime() -> None:
    runtime = Doubler()
    batcher, _seen = make(runtime)

    async def scenario() -> None:
        with pytest.raises(DeadlineExceeded, match="deadline exceeded"):
            await batcher.run(Call(rows(1), ["y"], None, time.monotonic() - 1))

    asyncio.run(scenario())
    batcher.close()
    assert runtime.calls == []


def test_queue_delay_gathers_requests_and_a_preferred_size_ends_the_wait() -> None:
    # A delay far longer than the test: a free instance leaves requests queued until the batch is full.
    gathering = Doubler()
    waiting, _ = make(gathering, max_batch_size=4, max_queue_delay_ms=60_000.0)
    # A short delay and no company: the lone request goes once the delay has passed, and not before.
    lone = Doubler()
    timed, _ = make(lone, max_queue_delay_ms=50.0)
    preferring, _ = make(Doubler(), max_queue_delay_ms=60_000.0, preferred_batch_sizes=[3])

    async def scenario() -> None:
        # Requests arrive one at a time while the instance is free: each waits for company, all go in one call.
        tasks = []
        for k in range(4):
            assert gathering.calls == []
            tasks.append(asyncio.ensure_future(waiting.run(Call(rows(1, start=k), ["y"], None, None))))
            if k < 3:
                await wait_for_queued(waiting, k + 1)
        done = await asyncio.gather(*tasks)
        assert [float(r[0]["y"][0, 0]) for r in done] == [0.0, 2.0, 4.0, 6.0]
        _out, queued_s, _computed = await timed.run(Call(rows(1), ["y"], None, None))
        assert queued_s >= 0.05, f"dispatched after {queued_s * 1000:.1f} ms, before the 50 ms delay"
        # Three queued rows are a preferred size: dispatched long before the minute-long delay.
        await asyncio.wait_for(
            asyncio.gather(*(preferring.run(Call(rows(1), ["y"], None, None)) for _ in range(3))), timeout=WAIT_S / 2
        )

    asyncio.run(scenario())
    waiting.close()
    timed.close()
    preferring.close()
    assert gathering.calls == [4]
    assert lone.calls == [1]
    assert preferring.runtime.calls == [3]  # type: ignore[attr-defined]


def test_each_instance_runs_its_own_batch_and_no_more_run_at_once() -> None:
    runtime = Doubler()
    batcher, _seen = make(runtime, instances=2, max_batch_size=2)

    async def scenario() -> None:
        runtime.gate.clear()
        inputs = [rows(1, start=k) for k in range(20)]
        tasks = [asyncio.ensure_future(batcher.run(Call(x, ["y"], None, None))) for x in inputs]
        # Both instances hold a call at once; what they did not take stays queued for them.
        await wait_until(lambda: runtime.running == 2, f"two calls running at once (saw {runtime.running})")
        await wait_until(
            lambda: queued(batcher) + sum(runtime.calls) == 20, "every request taken by an instance or queued"
        )
        assert len(runtime.calls) == 2 and runtime.running == 2
        runtime.gate.set()
        results = await asyncio.gather(*tasks)
        for x, (out, _q, _c) in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(out["y"], x["x"] * 2)

    asyncio.run(scenario())
    batcher.close()
    assert runtime.most_at_once == 2
    assert sum(runtime.calls) == 20 and max(runtime.calls) <= 2


def test_close_runs_what_is_queued_then_stops() -> None:
    runtime = Doubler()
    batcher, _seen = make(runtime, max_queue_delay_ms=60_000.0)

    async def scenario() -> None:
        pending = [asyncio.ensure_future(batcher.run(Call(rows(1, start=k), ["y"], None, None))) for k in range(3)]
        await wait_for_queued(batcher, 3)
        assert runtime.calls == []  # waiting for a full batch or the minute-long delay
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)
        done = await asyncio.gather(*pending)
        assert [float(r[0]["y"][0, 0]) for r in done] == [0.0, 2.0, 4.0]
        with pytest.raises(InferenceFailed, match="being unloaded"):
            await batcher.run(Call(rows(1), ["y"], None, None))

    asyncio.run(scenario())
    assert runtime.calls == [3]
    assert not any(thread.is_alive() for thread in batcher._threads)


def test_with_no_delay_a_free_instance_takes_only_its_share_of_the_queue() -> None:
    runtime = Doubler()
    batcher, _seen = make(runtime, instances=2, max_batch_size=8)

    async def scenario() -> None:
        runtime.gate.clear()
        busy = [asyncio.ensure_future(batcher.run(Call(rows(1), ["y"], None, None))) for _ in range(2)]
        await wait_for_calls(runtime, 2)  # both instances are busy with one row each
        waiting = [asyncio.ensure_future(batcher.run(Call(rows(1, start=k), ["y"], None, None))) for k in range(6)]
        await wait_for_queued(batcher, 6)  # all six are queued before either instance is free to look
        runtime.gate.set()
        await asyncio.gather(*busy, *waiting)

    asyncio.run(scenario())
    batcher.close()
    # six queued rows, two instances: no instance takes more than half (3) of what is queued when it looks
    assert runtime.calls[:2] == [1, 1] and sum(runtime.calls[2:]) == 6
    assert max(runtime.calls[2:]) == 3 and len(runtime.calls) >= 4


def test_a_deadline_that_passes_in_the_queue_answers_at_once_and_the_request_never_runs() -> None:
    runtime = Doubler()
    batcher, _seen = make(runtime)

    async def scenario() -> None:
        runtime.gate.clear()
        first = asyncio.ensure_future(batcher.run(Call(rows(1), ["y"], None, None)))
        await wait_for_calls(runtime, 1)  # the only instance is held
        with pytest.raises(DeadlineExceeded, match="deadline exceeded before the batch"):
            await batcher.run(Call(rows(1, start=5), ["y"], None, time.monotonic() + 0.05))  # answered while still held
        runtime.gate.set()
        await first

    asyncio.run(scenario())
    batcher.close()
    assert runtime.calls == [1]


def test_instance_threads_start_with_requests_and_retire_when_idle() -> None:
    runtime = Doubler()
    batcher, _seen = make(runtime, instances=2, max_batch_size=2, idle_s=0.2)

    def alive() -> int:
        with batcher._cond:
            return len(batcher._threads)

    async def scenario() -> None:
        assert alive() == 0  # a loaded model without traffic holds no thread
        runtime.gate.clear()
        tasks = [asyncio.ensure_future(batcher.run(Call(rows(1, start=k), ["y"], None, None))) for k in range(6)]
        await wait_until(lambda: runtime.running == 2, "both instances busy")
        assert alive() == 2
        runtime.gate.set()
        results = await asyncio.gather(*tasks)
        assert [float(r[0]["y"][0, 0]) for r in results] == [2.0 * k for k in range(6)]
        await wait_until(lambda: alive() == 0, "idle instance threads retired")
        again = await batcher.run(Call(rows(1), ["y"], None, None))
        np.testing.assert_array_equal(again[0]["y"], rows(1)["x"] * 2)

    asyncio.run(scenario())
    batcher.close()
    assert sum(runtime.calls) == 7 and runtime.most_at_once == 2
