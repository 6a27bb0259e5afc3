"""WorkerPool: a model's bounded pool of inference threads, with a cheap hand-off to and from the event loop.

Lighter than ``loop.run_in_executor(ThreadPoolExecutor)`` on the hot path: a C-implemented SimpleQueue carries the
work and ``call_soon_threadsafe`` resolves the asyncio future, with no concurrent.futures.Future in between.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_STOP = object()


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class WorkerPool:
    """``await pool.run(fn, *args)`` runs ``fn`` on one of ``size`` threads and returns its result."""

    def __init__(self, size: int, name: str = "tg-worker") -> None:
        self.size = max(1, size)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(self.size)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            loop, fut, fn, args = item
            if fut.cancelled():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # delivered to the awaiting coroutine
                loop.call_soon_threadsafe(_resolve, fut, False, exc)
            else:
                loop.call_soon_threadsafe(_resolve, fut, True, result)

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return fut

    def shutdown(self, wait: bool = True) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout=30)
