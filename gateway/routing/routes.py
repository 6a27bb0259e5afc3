"""RouteRouter: the Router the server runs — routes first (a name the host publishes as a route), every other
name through ``VersionRouter``. Each route's policy state (``Route``) is built on first use and rebuilt when its
declaration changes; resolving a route is a few dictionary reads, the policy's choice and one small object.

A route has no versions of its own: an explicit version or label on a route is NOT_FOUND (call a variant by its
own name to pick its version).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from gateway.core.errors import GatewayError, ModelNotFound
from gateway.lifecycle.model import READY, UNAVAILABLE, ModelEntry, ModelVersion, RouteEntry
from gateway.routing.route import Route
from gateway.routing.router import Plan, VersionRouter
from gateway.telemetry.route_metrics import RouteMetrics, RouteState
from model_store import ModelConfig


class RouteCatalog(Protocol):
    """What route resolution reads of the host: model entries, and the declared routes."""

    @property
    def routes(self) -> Mapping[str, RouteEntry]: ...

    def get(self, name: str) -> ModelEntry | None: ...

    def route(self, name: str) -> RouteEntry | None: ...


class RouteRouter:
    def __init__(
        self,
        catalog: RouteCatalog,
        metrics: RouteMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.versions = VersionRouter(catalog)
        self.clock = clock
        self.rng = rng or random.Random()
        self._routes: dict[str, Route] = {}
        metrics.state = self.states

    def route(self, name: str) -> Route | None:
        """The route ``name`` (None for anything else); UNAVAILABLE when its declaration is invalid."""
        entry = self.catalog.route(name)
        if entry is None:
            return None
        route = self._routes.get(name)
        if route is None or route.entry is not entry:
            route = self._routes[name] = Route(entry, self.catalog, self.metrics, self.clock, self.rng)
        return route

    @staticmethod
    def _no_version(route: Route, version: str | int | None, label: str | None) -> None:
        if label or (version is not None and version != ""):
            what = f"version label {label!r}" if label else f"version {version}"
            raise ModelNotFound(
                f"{route.name!r} is a route and has no {what}; call one of its variants "
                f"({', '.join(v.name for v in route.variants)}) to choose a version"
            )

    # -- Router ------------------------------------------------------------------------------------------------
    def plan(
        self, name: str, version: str | int | None = None, label: str | None = None, key: str | None = None
    ) -> tuple[ModelVersion, Plan | None]:
        route = self.route(name)
        if route is None:
            return self.versions.resolve(name, version, label), None
        self._no_version(route, version, label)
        return route.plan(key)

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> ModelVersion:
        route = self.route(name)
        if route is None:
            return self.versions.resolve(name, version, label)
        self._no_version(route, version, label)
        return route.peek()

    def entry(self, name: str) -> ModelEntry:
        """A route's: the entry of the variant it prefers now (an empty one while none can serve)."""
        try:
            route = self.route(name)
        except GatewayError:  # declared but invalid: known, serving nothing
            return ModelEntry(name, ModelConfig())
        if route is None:
            return self.versions.entry(name)
        try:
            entry = self.catalog.get(route.peek().name)
        except GatewayError:
            entry = None
        return entry if entry is not None else ModelEntry(name, ModelConfig())

    def describe(self, name: str) -> dict[str, Any] | None:
        entry = self.catalog.route(name)
        if entry is None:
            return None
        if entry.config is None:
            return {"origin": entry.origin, "invalid": entry.reason}
        route = self.route(name)
        assert route is not None
        return route.describe()

    def index(self) -> list[dict[str, str]]:
        rows = []
        for name, entry in sorted(self.catalog.routes.items()):
            if entry.config is None:
                rows.append({"name": name, "version": "", "state": UNAVAILABLE, "reason": f"route: {entry.reason}"})
                continue
            route = self.route(name)
            assert route is not None
            members = route.members()
            ready = any(m is not None for m in members)
            summary = route.describe()
            chosen = summary.get("choice") or summary.get("variant")
            parts = [f"route ({route.config.policy}, from {entry.origin})"]
            if "weights" in summary:
                parts.append("weights " + ", ".join(f"{n} {w:g}%" for n, w in summary["weights"].items()))
            if chosen:
                parts.append(f"serving {chosen}")
            parts.append("variants " + ", ".join(
                f"{v.name}" + (f" ({route.why_not(i, members)})" if route.why_not(i, members) else "")
                for i, v in enumerate(route.variants)
            ))  # fmt: skip
            rows.append(
                {"name": name, "version": "", "state": READY if ready else UNAVAILABLE, "reason": "; ".join(parts)}
            )
        return rows

    # -- metrics -----------------------------------------------------------------------------------------------
    def states(self) -> Iterator[RouteState]:
        for name in list(self._routes):
            if self.catalog.route(name) is None:
                del self._routes[name]
        for name, entry in sorted(self.catalog.routes.items()):
            if entry.config is not None:
                route = self.route(name)
                if route is not None:
                    yield route.state()
