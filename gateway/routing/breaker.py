"""Breaker: one variant's circuit breaker. ``failures`` consecutive failures open it; after ``open_s`` it is
half-open and lets exactly one request through as a trial: a success closes it, a failure opens it again.
A trial that never reports back (its client went away) is given up after another ``open_s``.
"""

from __future__ import annotations

from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    __slots__ = ("_clock", "_opened", "_trial", "failures", "open_s", "state", "streak", "threshold")

    def __init__(self, clock: Callable[[], float], failures: int = 3, open_s: float = 5.0) -> None:
        self._clock = clock
        self.threshold = failures
        self.open_s = open_s
        self.state = CLOSED
        self.streak = 0  # consecutive failures
        self.failures = 0  # every failure counted since start
        self._opened = 0.0
        self._trial: float | None = None  # when the half-open trial was let through

    def available(self) -> bool:
        """Whether a request may go to this variant now (does not take the half-open trial)."""
        if self.state == CLOSED:
            return True
        now = self._clock()
        if self.state == OPEN:
            return now >= self._opened + self.open_s
        return self._trial is None or now >= self._trial + self.open_s  # HALF_OPEN: one trial at a time

    def acquire(self) -> None:
        """A request goes to this variant (it was ``available``): past the open period, it is the trial."""
        if self.state == CLOSED:
            return
        self.state = HALF_OPEN
        self._trial = self._clock()

    def success(self) -> None:
        self.state = CLOSED
        self.streak = 0
        self._trial = None

    def failure(self) -> None:
        self.failures += 1
        self.streak += 1
        if self.state == HALF_OPEN or self.streak >= self.threshold:
            self.state = OPEN
            self._opened = self._clock()
            self._trial = None

    def release(self) -> None:
        """The request ended without saying anything about the variant's health (e.g. a client error)."""
        if self.state == HALF_OPEN:
            self._trial = None
