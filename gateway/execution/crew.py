"""Crew: the threads of one executor, started when work arrives and none is free (up to the model's ``instances``)
and retired after ``idle_s`` seconds without work, so an idle model holds no thread at all.

The executor owns the lock (a ``threading.Condition``) and the queue; every Crew method runs with that lock held.
A thread started for queued work or woken for it takes whatever is queued when it gets the lock, and a thread
retires only when it holds the lock and finds nothing queued, so no queued call is ever left without a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: seconds an executor thread waits for work before it retires (``tensorgate serve --idle-thread-s``)
IDLE_S = 30.0


class Crew:
    """Started on demand, up to ``size`` threads running ``target``; ``idle_s`` None or 0 keeps them once started."""

    def __init__(
        self, cond: threading.Condition, size: int, target: Callable[[], None], name: str, idle_s: float | None
    ) -> None:
        self.cond = cond
        self.size = max(1, size)
        self.target = target
        self.name = name
        self.idle_s = idle_s or None
        self.waiting = 0  # threads blocked in wait(): each will look at the queue when it wakes
        self.threads: list[threading.Thread] = []
        self._started = 0

    def wanted(self, queued: int) -> None:
        """``queued`` calls (or batches' worth of requests) wait: wake a waiting thread, and start one when more
        wait than threads are waiting for them and the crew is not full."""
        self.cond.notify()
        if queued > self.waiting and len(self.threads) < self.size:
            self._started += 1
            thread = threading.Thread(target=self.target, name=f"{self.name}-{self._started}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def wait(self, timeout: float | None) -> None:
        """Wait for a notification or ``timeout`` (lock held), counted as waiting."""
        self.waiting += 1
        try:
            self.cond.wait(timeout)
        finally:
            self.waiting -= 1

    def idle(self, since: float) -> bool:
        """Nothing is queued (lock held): wait for work; False when this thread has been idle since ``since``
        (a time.monotonic() instant) for ``idle_s`` and has retired (the caller returns)."""
        if self.idle_s is None:
            self.wait(None)
            return True
        remaining = since + self.idle_s - time.monotonic()
        if remaining <= 0:
            self.leave()
            return False
        self.wait(remaining)
        return True

    def leave(self) -> None:
        """The calling thread stops (retired, or the executor closed)."""
        current = threading.current_thread()
        if current in self.threads:
            self.threads.remove(current)

    def join(self, timeout: float) -> None:
        """Wait for every thread to stop (called without the lock, after the executor closed)."""
        with self.cond:
            threads = list(self.threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=timeout)
