"""Batcher: the Executor for dynamic batching, run by the version's own instance threads (started when requests
arrive, retired when idle: ``gateway.execution.crew``).

Requests whose inputs agree on every dimension but the first are stacked along dim 0, run as one runtime call, and
split back per request. Each of the model's ``instances`` threads takes the next batch itself as soon as it is free
(never waiting for the event loop to hand it one): the oldest request plus every queued compatible request, up to
``max_batch_size`` rows, once the queued rows reach ``max_batch_size`` (or a preferred size) or the oldest request
has waited ``max_queue_delay_ms`` (0: take what is queued at once). If a batched call fails, each of its requests is
retried alone so that errors stay per request. Requests whose deadline has passed are dropped before they reach the
runtime. Requests for a signature other than the default one (TF Serving) are never stacked: they run alone.
Results and executions go back to the event loop in one callback per batch.

With no queue delay an instance takes at most its share of the queue (queued rows / instances, rounded up): a
greedy instance taking everything would leave the others idle and the pipeline bursty.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from gateway.core.errors import DeadlineExceeded, GatewayError, InferenceFailed
from gateway.execution.crew import IDLE_S, Crew
from gateway.execution.executor import Call, OnExecution, Result, expired, infer, within_deadline
from runtimes import Runtime

Outcome = Result | BaseException
#: (requests, rows, seconds) of one runtime call
Execution = tuple[int, int, float]
#: (start, end, requests) of one runtime call, for the compute span of traced requests
Span = tuple[float, float, list["_Pending"]]


@dataclass(eq=False)
class _Pending:
    call: Call
    future: asyncio.Future[Result]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    rows: int
    key: object


class Batcher:
    """``await batcher.run(call)``: the call joins the queue and comes back with its share of a batch's result."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        instances: int,
        max_batch_size: int,
        max_queue_delay_ms: float,
        preferred_batch_sizes: list[int] | None = None,
        on_execution: OnExecution | None = None,
        default_signature: str | None = None,
        name: str = "tg-batch",
        idle_s: float | None = IDLE_S,
    ) -> None:
        self.runtime = runtime
        self.instances = max(1, instances)
        self.max_batch_size = max(1, max_batch_size)
        self.delay = max_queue_delay_ms / 1000.0
        self.preferred = sorted(p for p in (preferred_batch_sizes or []) if 0 < p <= self.max_batch_size)
        self.on_execution = on_execution
        self.default_signature = default_signature
        self._queue: deque[_Pending] = deque()
        self._rows = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self._crew = Crew(self._cond, self.instances, self._serve, name, idle_s)

    @property
    def _threads(self) -> list[threading.Thread]:
        """The instance threads running now (none while idle)."""
        return self._crew.threads

    async def run(self, call: Call) -> Result:
        loop = asyncio.get_running_loop()
        inputs = call.inputs
        first = next(iter(inputs.values()))
        rows = min(int(first.shape[0]) if first.ndim else 1, self.max_batch_size)  # larger: runs alone, never split
        key: object
        if call.signature in (None, self.default_signature):
            key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items()))
        else:
            key = object()  # other signatures may have no batch dimension: never stacked
        item = _Pending(call, loop.create_future(), loop, time.perf_counter(), rows, key)
        with self._cond:
            if self._closed:
                raise InferenceFailed("the model is being unloaded")
            self._queue.append(item)
            self._rows += item.rows
            self._crew.wanted(len(self._queue))
        return await within_deadline(item.future, call.deadline, "before the batch holding the request finished")

    # ------------------------------------------------------------------ instance threads

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            live: list[_Pending] = []
            late: list[_Pending] = []
            for item in batch:
                if item.future.cancelled():
                    continue
                (late if expired(item.call.deadline) else live).append(item)
            outcomes: list[Outcome] = [DeadlineExceeded("deadline exceeded while queued for a batch") for _ in late]
            executions: list[Execution] = []
            spans: list[Span] = []
            if live:
                results, executions, spans = self._run(live)
                outcomes = [*outcomes, *results]
            if late or live:
                try:
                    (late or live)[0].loop.call_soon_threadsafe(
                        self._finish, [*late, *live], outcomes, executions, spans
                    )
                except RuntimeError:  # the event loop has closed: nobody is waiting any more
                    pass

    def _next_batch(self) -> list[_Pending] | None:
        """Block until a batch is due (full, preferred size, oldest waited long enough, or closing); None to stop
        (closed with nothing queued, or this thread retired after ``idle_s`` without requests)."""
        with self._cond:
            since = time.monotonic()
            while True:
                if self._queue:
                    if self._closed or self.delay == 0:
                        break
                    full = self._rows >= self.max_batch_size or (self.preferred and self._rows in self.preferred)
                    waited = time.perf_counter() - self._queue[0].enqueued
                    if full or waited >= self.delay:
                        break
                    self._crew.wait(self.delay - waited)
                elif self._closed or not self._crew.idle(since):
                    return None
            limit = self.max_batch_size
            if self.delay == 0:  # take a fair share, leaving the rest to the other instances
                limit = min(limit, max(1, -(-self._rows // self.instances)))
            return self._take(limit)

    def _take(self, limit: int) -> list[_Pending]:
        """The oldest request and every queued request compatible with it, up to ``limit`` rows (lock held)."""
        first = self._queue.popleft()
        batch, rows = [first], first.rows
        skipped: list[_Pending] = []
        while self._queue and rows < limit:
            item = self._queue.popleft()
            if item.key == first.key and rows + item.rows <= limit:
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
                if len(skipped) > 64:
                    break
        self._queue.extendleft(reversed(skipped))
        self._rows -= rows
        if self._queue:
            self._crew.wanted(len(self._queue))  # more is queued: another instance can start on it
        return batch

    def _run(self, batch: list[_Pending]) -> tuple[list[Outcome], list[Execution], list[Span]]:
        """Per-request outcomes and the runtime calls made."""
        if len(batch) == 1:
            return self._singles(batch)
        start = time.perf_counter()
        outputs = sorted({n for item in batch for n in item.call.outputs})
        names = list(batch[0].call.inputs)
        try:
            stacked = {n: np.concatenate([item.call.inputs[n] for item in batch], axis=0) for n in names}
            result = self.runtime.infer(stacked, outputs, batch[0].call.signature)
        except Exception:
            return self._singles(batch)
        end = time.perf_counter()
        out: list[Outcome] = []
        offset = 0
        for item in batch:
            rows = item.rows
            part = {n: result[n][offset : offset + rows] for n in item.call.outputs}
            offset += rows
            out.append((part, start - item.enqueued, end - start))
        return out, [(len(batch), sum(i.rows for i in batch), end - start)], [(start, end, batch)]

    def _singles(self, batch: list[_Pending]) -> tuple[list[Outcome], list[Execution], list[Span]]:
        results: list[Outcome] = []
        executions: list[Execution] = []
        spans: list[Span] = []
        for item in batch:
            start = time.perf_counter()
            call = item.call
            try:
                result = infer(self.runtime, call.inputs, call.outputs, call.signature)
            except GatewayError as exc:
                results.append(exc)
                continue
            end = time.perf_counter()
            executions.append((1, item.rows, end - start))
            spans.append((start, end, [item]))
            results.append((result, start - item.enqueued, end - start))
        return results, executions, spans

    # ------------------------------------------------------------------ event loop

    def _finish(
        self, batch: list[_Pending], outcomes: list[Outcome], executions: list[Execution], spans: list[Span]
    ) -> None:
        if self.on_execution is not None:
            for requests, rows, seconds in executions:
                self.on_execution(requests, rows, seconds)
        for start, end, items in spans:  # one compute span per runtime call, linked to its traced requests
            traces = [i.call.trace for i in items if i.call.trace is not None]
            if traces:
                traces[0].batch(traces, start, end, sum(i.rows for i in items))
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    def close(self, timeout: float = 30.0) -> None:
        """Run what is queued, then stop the instance threads (waits up to ``timeout`` seconds for them)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._crew.join(timeout)
