"""WeightedPolicy: canary shares. A request that carries a key (``tensorgate-route-key`` header or gRPC
metadata, or the V2 parameter ``route_key``) always lands on the same variant while the set of variants that
can serve is unchanged: the key's CRC-32 picks the point on the weights' cumulative scale. Without a key, a
random point. A variant that cannot serve leaves the scale; the others keep their relative weights.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any

_SCALE = 1.0 / 2**32


class WeightedPolicy:
    def __init__(self, names: Sequence[str], weights: Sequence[float], rng: random.Random) -> None:
        self.names = list(names)
        self.weights = list(weights)
        self.rng = rng

    def choose(self, eligible: Sequence[int], key: str | None) -> int:
        weights = self.weights
        total = 0.0
        for i in eligible:
            total += weights[i]
        if total <= 0.0:
            return eligible[0]
        point = (zlib.crc32(key.encode()) * _SCALE if key is not None else self.rng.random()) * total
        running = 0.0
        for i in eligible:
            running += weights[i]
            if point < running:
                return i
        return eligible[-1]

    def current(self) -> int | None:
        """The heaviest variant (what metadata and readiness show; each request still draws its own)."""
        return max(range(len(self.weights)), key=lambda i: self.weights[i])

    def describe(self) -> dict[str, Any]:
        total = sum(self.weights) or 1.0
        return {"weights": {n: round(100.0 * w / total, 3) for n, w in zip(self.names, self.weights, strict=True)}}
