"""ThreadPool: the Executor that runs each call alone on one of a version's ``instances`` threads.

Lighter than ``loop.run_in_executor(ThreadPoolExecutor)`` on the hot path: a C-implemented SimpleQueue carries the
work and ``call_soon_threadsafe`` resolves the asyncio future, with no concurrent.futures.Future in between.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any

from gateway.core.errors import DeadlineExceeded
from gateway.execution.executor import Call, OnExecution, Result, expired, infer, within_deadline
from runtimes import Runtime

_STOP = object()


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class ThreadPool:
    """``await pool.run(call)`` runs the call on one of ``instances`` threads; a call whose deadline has passed
    when a thread reaches it is skipped."""

    def __init__(
        self, runtime: Runtime, instances: int, on_execution: OnExecution | None = None, name: str = "tg-worker"
    ) -> None:
        self.runtime = runtime
        self.size = max(1, instances)
        self.on_execution = on_execution
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(self.size)]
        for thread in self._threads:
            thread.start()

    async def run(self, call: Call) -> Result:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        self._queue.put((loop, fut, call, time.perf_counter()))
        result = await within_deadline(fut, call.deadline, "while running the request")
        if self.on_execution is not None:
            self.on_execution(1, call.rows, result[2])
        return result

    def _work(self) -> None:
        get = self._queue.get
        runtime = self.runtime
        while True:
            item = get()
            if item is _STOP:
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
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=30)
