"""LatencyWindow: one variant's recent latencies as the gateway measured them, over a sliding window of time.

The window is ``slices`` histograms of ``window_s / slices`` seconds each; recording is a bisect and an
increment, and slices older than the window are zeroed as time moves on. The bucket boundaries include the
route's SLA targets (and the targets less the hysteresis margin), so "does p99 meet 20 ms" is an exact count,
not an interpolation.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

from gateway.telemetry.metrics import LATENCY_BUCKETS

#: objective name -> quantile
QUANTILES: dict[str, float] = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


class LatencyWindow:
    __slots__ = ("_clock", "_current", "_slices", "_width", "bounds")

    def __init__(
        self, window_s: float, clock: Callable[[], float], extra_bounds: Iterable[float] = (), slices: int = 10
    ) -> None:
        self.bounds = tuple(sorted(set(LATENCY_BUCKETS) | set(extra_bounds)))
        self._clock = clock
        self._width = window_s / slices
        self._slices = [[0] * (len(self.bounds) + 1) for _ in range(slices)]
        self._current = int(clock() / self._width)

    def _advance(self) -> list[int]:
        """The slice for now, zeroing the ones that fell out of the window since the last call."""
        now = int(self._clock() / self._width)
        slices = self._slices
        if now != self._current:
            for step in range(min(now - self._current, len(slices))):
                counts = slices[(now - step) % len(slices)]
                counts[:] = [0] * len(counts)
            self._current = now
        return slices[now % len(slices)]

    def record(self, seconds: float) -> None:
        self._advance()[bisect.bisect_left(self.bounds, seconds)] += 1

    def counts(self) -> list[int]:
        """Samples per bucket over the whole window (bucket i: latency <= bounds[i]; the last: above all)."""
        self._advance()
        return [sum(column) for column in zip(*self._slices, strict=True)]

    def count(self) -> int:
        self._advance()
        return sum(sum(s) for s in self._slices)

    def share_within(self, seconds: float, counts: list[int] | None = None) -> float:
        """The share of the window's samples at or under ``seconds`` (a bucket boundary, for an exact answer)."""
        counts = self.counts() if counts is None else counts
        total = sum(counts)
        if not total:
            return 1.0
        return sum(counts[: bisect.bisect_right(self.bounds, seconds)]) / total

    def quantile(self, q: float, counts: list[int] | None = None) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile (None when the window is empty)."""
        counts = self.counts() if counts is None else counts
        total = sum(counts)
        if not total:
            return None
        rank = q * total
        running = 0
        for i, count in enumerate(counts):
            running += count
            if running >= rank and count:
                return self.bounds[i] if i < len(self.bounds) else float("inf")
        return float("inf")
