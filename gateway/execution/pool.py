"""ThreadPool: the Executor that runs each call alone on one of a version's ``instances`` threads, started when
calls arrive and retired when idle (``gateway.execution.crew``): a model without traffic holds no thread.

Light on the hot path: a deque under one lock carries the work and ``call_soon_threadsafe`` resolves the asyncio
future, with no concurrent.futures.Future in between.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

from gateway.core.errors import DeadlineExceeded, InferenceFailed
from gateway.execution.crew import IDLE_S, Crew
from gateway.execution.executor import Call, OnExecution, Result, expired, infer, within_deadline
from runtimes import Runtime


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class ThreadPool:
    """``await pool.run(call)`` runs the call on one of at most ``instances`` threads; a call whose deadline has
    passed when a thread reaches it is skipped. Threads idle for ``idle_s`` seconds retire (None: never)."""

    def __init__(
        self,
        runtime: Runtime,
        instances: int,
        on_execution: OnExecution | None = None,
        name: str = "tg-worker",
        idle_s: float | None = IDLE_S,
    ) -> None:
        self.runtime = runtime
        self.size = max(1, instances)
        self.on_execution = on_execution
        self._queue: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[Result], Call, float]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._crew = Crew(self._cond, self.size, self._work, name, idle_s)

    @property
    def _threads(self) -> list[threading.Thread]:
        """The threads running now (none while idle)."""
        return self._crew.threads

    async def run(self, call: Call) -> Result:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        with self._cond:
            if self._closed:
                raise InferenceFailed("the model is being unloaded")
            self._queue.append((loop, fut, call, time.perf_counter()))
            self._crew.wanted(len(self._queue))
        result = await within_deadline(fut, call.deadline, "while running the request")
        if self.on_execution is not None:
            self.on_execution(1, call.rows, result[2])
        return result

    def _next(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Future[Result], Call, float] | None:
        """The oldest queued call; None when the pool closed with nothing queued or this thread retired."""
        with self._cond:
            since = time.monotonic()
            while not self._queue:
                if self._closed or not self._crew.idle(since):
                    return None
            return self._queue.popleft()

    def _work(self) -> None:
        runtime = self.runtime
        while True:
            item = self._next()
            if item is None:
                return
            loop, fut, call, enqueued = item
            if fut.cancelled():
                continue
            try:
                start = time.perf_counter()
                if expired(call.deadline):
                    raise DeadlineExceeded("deadline exceeded before the model could run the request")
                outputs = infer(runtime, call.inputs, call.outputs, call.signature)
                end = time.perf_counter()
            except BaseException as exc:  # delivered to the awaiting coroutine
                loop.call_soon_threadsafe(_resolve, fut, False, exc)
            else:
                loop.call_soon_threadsafe(_resolve, fut, True, (outputs, start - enqueued, end - start))

    def close(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._crew.join(timeout=30)
