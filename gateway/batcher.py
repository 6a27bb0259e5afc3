"""Batcher: dynamic batching for one model version.

Requests whose inputs agree on every dimension but the first are stacked along dim 0, run as one runtime call in the
model's thread pool, and split back per request. A batch is formed when a model instance is free and either the
queued rows reach ``max_batch_size`` (or a preferred size) or the oldest request has waited ``max_queue_delay_ms``.
If a batched call fails, each of its requests is retried alone so that errors stay per request. Requests whose
deadline has passed are dropped before they reach the runtime. All bookkeeping runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gateway.errors import DeadlineExceeded, GatewayError, InferenceFailed, InvalidInput
from gateway.workers import WorkerPool
from runtimes import Runtime, RuntimeInputError

Result = tuple[dict[str, np.ndarray], float, float]


@dataclass(eq=False)
class _Pending:
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    future: asyncio.Future[Result]
    enqueued: float
    deadline: float | None
    rows: int
    key: tuple[object, ...] = field(default=())


class Batcher:
    def __init__(
        self,
        runtime: Runtime,
        executor: WorkerPool,
        *,
        instances: int,
        max_batch_size: int,
        max_queue_delay_ms: float,
        preferred_batch_sizes: list[int] | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.executor = executor
        self.instances = max(1, instances)
        self.max_batch_size = max(1, max_batch_size)
        self.delay = max_queue_delay_ms / 1000.0
        self.preferred = sorted(p for p in (preferred_batch_sizes or []) if 0 < p <= self.max_batch_size)
        self.on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._rows = 0
        self._busy = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def submit(self, inputs: dict[str, np.ndarray], outputs: list[str], deadline: float | None) -> Result:
        loop = asyncio.get_running_loop()
        first = next(iter(inputs.values()))
        rows = int(first.shape[0]) if first.ndim else 1
        key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items()))
        item = _Pending(inputs, outputs, loop.create_future(), time.perf_counter(), deadline, rows, key)
        if rows > self.max_batch_size:
            item.rows = self.max_batch_size  # runs alone: never split a request
        self._queue.append(item)
        self._rows += item.rows
        self._kick(loop)
        return await item.future

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._busy < self.instances and self._queue:
            oldest = self._queue[0]
            waited = time.perf_counter() - oldest.enqueued
            full = self._rows >= self.max_batch_size or (self.preferred and self._rows in self.preferred)
            if not (full or waited >= self.delay or self._closed):
                if self._timer is None:
                    self._timer = loop.call_later(self.delay - waited, self._on_timer, loop)
                return
            self._dispatch(loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._kick(loop)

    def _take(self) -> list[_Pending]:
        """The oldest request and every queued request compatible with it, up to max_batch_size rows."""
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        skipped: list[_Pending] = []
        while self._queue and rows < self.max_batch_size:
            item = self._queue.popleft()
            if item.key == first.key and rows + item.rows <= self.max_batch_size:
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
                if len(skipped) > 64:
                    break
        self._queue.extendleft(reversed(skipped))
        self._rows -= rows
        return batch

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._take()
        now = time.monotonic()
        live = []
        for item in batch:
            if item.deadline is not None and now >= item.deadline:
                if not item.future.done():
                    item.future.set_exception(DeadlineExceeded("deadline exceeded while queued for a batch"))
            elif not item.future.cancelled():
                live.append(item)
        if not live:
            return
        self._busy += 1
        fut = self.executor.run(self._run, live)
        fut.add_done_callback(lambda f: self._done(loop, live, f))

    def _run(self, batch: list[_Pending]) -> tuple[list[Result | BaseException], list[tuple[int, int, float]]]:
        """Worker thread: returns per-request results and the executions made (requests, rows, seconds)."""
        start = time.perf_counter()
        outputs = sorted({n for item in batch for n in item.outputs})
        if len(batch) == 1:
            return self._singles(batch)
        names = list(batch[0].inputs)
        try:
            stacked = {n: np.concatenate([item.inputs[n] for item in batch], axis=0) for n in names}
            result = self.runtime.infer(stacked, outputs)
        except Exception:
            return self._singles(batch)
        end = time.perf_counter()
        out: list[Result | BaseException] = []
        offset = 0
        for item in batch:
            rows = item.rows
            part = {n: result[n][offset : offset + rows] for n in item.outputs}
            offset += rows
            out.append((part, start - item.enqueued, end - start))
        return out, [(len(batch), sum(i.rows for i in batch), end - start)]

    def _singles(self, batch: list[_Pending]) -> tuple[list[Result | BaseException], list[tuple[int, int, float]]]:
        results: list[Result | BaseException] = []
        executions = []
        for item in batch:
            start = time.perf_counter()
            try:
                result = self.runtime.infer(item.inputs, item.outputs)
            except RuntimeInputError as exc:
                results.append(InvalidInput(str(exc)))
                continue
            except GatewayError as exc:
                results.append(exc)
                continue
            except Exception as exc:
                results.append(InferenceFailed(f"runtime failed: {type(exc).__name__}: {exc}"))
                continue
            end = time.perf_counter()
            executions.append((1, item.rows, end - start))
            results.append((result, start - item.enqueued, end - start))
        return results, executions

    def _done(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Pending],
        fut: asyncio.Future[tuple[list[Result | BaseException], list[tuple[int, int, float]]]],
    ) -> None:
        self._busy -= 1
        exc = fut.exception()
        if exc is not None:
            results: list[Result | BaseException] = [exc] * len(batch)
        else:
            results, executions = fut.result()
            if self.on_batch is not None:
                for requests, rows, seconds in executions:
                    self.on_batch(requests, rows, seconds)
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        self._kick(loop)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
