"""RoutePlan: one request's way through a route — the variant it runs on now, the ones it tried, fallback to the
next variant that can serve within the deadline, the breakers told of each outcome, and the shadow mirror."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from gateway.execution.executor import Call
from gateway.lifecycle.model import READY, ModelVersion
from gateway.routing.breaker import CLOSED

if TYPE_CHECKING:
    from gateway.routing.route import Route

RETRIED = frozenset({"UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"})
TRIPS_BREAKER = frozenset({"UNAVAILABLE", "INTERNAL"})


class RoutePlan:
    """One request's path through a route: the variant it runs on now, the ones it tried."""

    __slots__ = ("_settled", "current", "members", "r", "route", "tried")

    def __init__(self, route: Route, members: list[ModelVersion | None], current: int) -> None:
        self.r = route
        self.route = route.name
        self.members = members
        self.current = current
        self.tried: list[int] = []
        self._settled = False  # the current attempt's outcome was given to its breaker

    def _settle(self, code: str) -> None:
        if self._settled:
            return
        self._settled = True
        breaker = self.r.variants[self.current].breaker
        if code in TRIPS_BREAKER:
            breaker.failure()
        else:
            breaker.release()

    def next(self, code: str, deadline: float | None) -> ModelVersion | None:
        self._settle(code)
        r = self.r
        if not r.config.fallback or code not in RETRIED or (deadline is not None and time.monotonic() >= deadline):
            return None
        r.metrics.fallback(r.name, r.variants[self.current].name, code)
        self.tried.append(self.current)
        closed: list[int] = []
        for i, model in enumerate(self.members):
            if model is None or i in self.tried or model.state != READY:
                continue
            if r.variants[i].breaker.available():
                return self._move(i, model)
            closed.append(i)
        for i in closed:  # only variants behind an open breaker are left: one of them beats failing for sure
            model = self.members[i]
            assert model is not None
            return self._move(i, model)
        return None

    def _move(self, i: int, model: ModelVersion) -> ModelVersion:
        self.r.variants[i].breaker.acquire()
        self.current = i
        self._settled = False
        return model

    def served(self, seconds: float) -> None:
        v = self.r.variants[self.current]
        self._settled = True
        if v.breaker.streak or v.breaker.state is not CLOSED:
            v.breaker.success()
        v.window.record(seconds)
        v.series.observe("OK", seconds)

    def failed(self, code: str, seconds: float) -> None:
        self._settle(code)
        self.r.variants[self.current].series.observe(code, seconds)

    def mirror(self, call: Call, answer: Mapping[str, np.ndarray]) -> None:
        shadow = self.r.shadow
        if shadow is not None:
            model = self.members[self.current]
            assert model is not None
            shadow.mirror(model, call, answer)
