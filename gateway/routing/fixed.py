"""FixedPolicy: every request to one variant (the others only serve as its fallback)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FixedPolicy:
    def __init__(self, names: Sequence[str], target: int = 0) -> None:
        self.names = list(names)
        self.target = target

    def choose(self, eligible: Sequence[int], key: str | None) -> int:
        return self.target if self.target in eligible else eligible[0]

    def current(self) -> int | None:
        return self.target

    def describe(self) -> dict[str, Any]:
        return {"variant": self.names[self.target]}
