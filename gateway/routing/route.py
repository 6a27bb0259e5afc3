"""Route: one declared route's runtime state — its variants (each with a circuit breaker, a latency window and
its metrics series), its policy and its shadow. ``RoutePlan`` (gateway.routing.plan) is one request's way through it.

A variant can serve when its model has a READY version (the pinned one, or the latest) whose signature equals
the route's: the signature of the first variant listed that is loaded. A variant whose signature differs is
refused, with the difference as the reason (the repository index and ``/v2/models/<route>`` show it).

Fallback, for every policy: a variant that fails with UNAVAILABLE (not loaded, unloading) or INTERNAL, or whose
queue is full (RESOURCE_EXHAUSTED), is retried on the next variant in preference order that can serve, while the
request's deadline allows. UNAVAILABLE and INTERNAL count against the variant's breaker; a full queue does not.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from gateway.core.errors import ModelNotReady
from gateway.lifecycle.model import READY, ModelVersion, RouteEntry
from gateway.routing.breaker import CLOSED, Breaker
from gateway.routing.plan import RoutePlan
from gateway.routing.policy import make_policy
from gateway.routing.router import Catalog
from gateway.routing.shadow import Shadow
from gateway.routing.sla import SlaPolicy
from gateway.routing.window import QUANTILES, LatencyWindow
from gateway.telemetry.route_metrics import RouteMetrics, RouteSeries, RouteState, VariantState
from runtimes import Signature


class Variant:
    __slots__ = ("breaker", "name", "pin", "series", "window")

    def __init__(self, name: str, pin: int | None, breaker: Breaker, window: LatencyWindow, series: RouteSeries):
        self.name = name
        self.pin = pin
        self.breaker = breaker
        self.window = window
        self.series = series


class Route:
    def __init__(
        self,
        entry: RouteEntry,
        catalog: Catalog,
        metrics: RouteMetrics,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        config = entry.config
        if config is None:
            raise ModelNotReady(f"route {entry.name!r} is invalid: {entry.reason}")
        rng = rng or random.Random()
        self.entry = entry
        self.name = entry.name
        self.config = config
        self.catalog = catalog
        self.metrics = metrics
        self.targets = config.sla.targets()
        bounds = SlaPolicy.extra_bounds(self.targets, config.choice.margin)
        self.variants = [
            Variant(
                v.model,
                v.version,
                Breaker(clock, config.breaker.failures, config.breaker.open_s),
                LatencyWindow(config.choice.window_s, clock, bounds),
                metrics.series(self.name, v.model, self.targets.values()),
            )
            for v in config.variants
        ]
        self.policy = make_policy(config, [v.window for v in self.variants], clock, rng)
        self.shadow: Shadow | None = None
        if config.shadow is not None:
            shadow = config.shadow
            self.shadow = Shadow(
                shadow,
                metrics.shadow(self.name, shadow.model),
                lambda: self._checked(shadow.model, shadow.version),
                rng,
            )
        self._reference: ModelVersion | None = None
        self._verdicts: dict[ModelVersion, str] = {}  # signature check per loaded version ("" = same)

    # -- which variants can serve ------------------------------------------------------------------------------
    def _serving(self, name: str, pin: int | None) -> ModelVersion | None:
        entry = self.catalog.get(name)
        if entry is None:
            return None
        if pin is not None:
            model = entry.versions.get(pin)
            return model if model is not None and model.state == READY else None
        best = None
        for model in entry.versions.values():
            if model.state == READY and (best is None or model.version > best.version):
                best = model
        return best

    def _verdict(self, model: ModelVersion, reference: ModelVersion) -> str:
        if reference is not self._reference or len(self._verdicts) > 64:
            self._reference = reference
            self._verdicts = {}
        verdict = self._verdicts.get(model)
        if verdict is None:
            verdict = self._verdicts[model] = signature_difference(reference.signature, model.signature)
        return verdict

    def _reference_model(self) -> ModelVersion | None:
        for v in self.variants:
            model = self._serving(v.name, v.pin)
            if model is not None:
                return model
        return None

    def _checked(self, name: str, pin: int | None) -> ModelVersion | None:
        """``name``'s serving version if its signature is the route's (the shadow variant's lookup)."""
        model = self._serving(name, pin)
        reference = self._reference_model()
        if model is None or reference is None or (model is not reference and self._verdict(model, reference)):
            return None
        return model

    def members(self) -> list[ModelVersion | None]:
        """Each variant's serving version; None when it has none or its signature is not the route's."""
        models = [self._serving(v.name, v.pin) for v in self.variants]
        reference = next((m for m in models if m is not None), None)
        if reference is None:
            return models
        return [m if m is None or m is reference or not self._verdict(m, reference) else None for m in models]

    def _eligible(self, members: list[ModelVersion | None]) -> list[int]:
        variants = self.variants
        eligible = [
            i
            for i, m in enumerate(members)
            if m is not None and (variants[i].breaker.state is CLOSED or variants[i].breaker.available())
        ]
        if not eligible:  # every breaker open: trying one beats failing for sure
            eligible = [i for i, m in enumerate(members) if m is not None]
        if not eligible:
            raise ModelNotReady(f"route {self.name!r} has no variant that can serve ({self.reasons(members)})")
        return eligible

    # -- per request -------------------------------------------------------------------------------------------
    def plan(self, key: str | None = None) -> tuple[ModelVersion, RoutePlan]:
        members = self.members()
        i = self.policy.choose(self._eligible(members), key)
        self.variants[i].breaker.acquire()
        model = members[i]
        assert model is not None
        return model, RoutePlan(self, members, i)

    def peek(self) -> ModelVersion:
        """The variant the policy prefers now, without taking a request's place (metadata, config, readiness)."""
        members = self.members()
        eligible = self._eligible(members)
        current = self.policy.current()
        model = members[current if current in eligible else eligible[0]]
        assert model is not None
        return model

    # -- what it shows -----------------------------------------------------------------------------------------
    def reasons(self, members: list[ModelVersion | None] | None = None) -> str:
        members = self.members() if members is None else members
        return "; ".join(f"{v.name}: {self.why_not(i, members)}" for i, v in enumerate(self.variants) if not members[i])

    def why_not(self, i: int, members: list[ModelVersion | None]) -> str:
        """Why variant ``i`` cannot serve ("" when it can)."""
        if members[i] is not None:
            return "" if self.variants[i].breaker.available() else "circuit breaker open"
        v = self.variants[i]
        model = self._serving(v.name, v.pin)
        if model is None:
            pinned = f" version {v.pin}" if v.pin is not None else ""
            return f"no READY{pinned} version" if self.catalog.get(v.name) else "not in the store"
        reference = self._reference
        return f"refused: {self._verdict(model, reference)}" if reference is not None else "refused"

    def describe(self) -> dict[str, Any]:
        members = self.members()
        variants = []
        for i, v in enumerate(self.variants):
            model = members[i]
            row: dict[str, Any] = {
                "name": v.name,
                "version": str(model.version) if model is not None else "",
                "ready": model is not None,
                "breaker": v.breaker.state,
                "latency_ms": {k: round(s * 1000, 3) for k, s in self.window_latency(v).items()},
            }
            reason = self.why_not(i, members)
            if reason:
                row["reason"] = reason
            variants.append(row)
        doc: dict[str, Any] = {"policy": self.config.policy, "origin": self.entry.origin, **self.policy.describe()}
        doc["variants"] = variants
        if self.targets:
            doc["sla"] = {k: round(s * 1000, 3) for k, s in self.targets.items()}
        if self.config.shadow is not None:
            doc["shadow"] = {"variant": self.config.shadow.model, "share": self.config.shadow.share}
        return doc

    def window_latency(self, v: Variant) -> dict[str, float]:
        counts = v.window.counts()
        out: dict[str, float] = {}
        for objective in self.targets or {"p99": 0.0}:
            value = v.window.quantile(QUANTILES[objective], counts)
            if value is not None:
                out[objective] = value
        return out

    def state(self) -> RouteState:
        members = self.members()
        current = self.policy.current()
        explore = self.config.choice.explore if self.config.policy == "sla" else 0.0
        live = [i for i, m in enumerate(members) if m is not None and self.variants[i].breaker.available()]
        weights = self._shares(live, current, explore)
        sla_met = getattr(self.policy, "sla_met", None) if self.config.policy == "sla" and self.targets else None
        return RouteState(
            self.name,
            self.config.policy,
            sla_met,
            dict(self.targets),
            [
                VariantState(
                    route=self.name,
                    variant=v.name,
                    chosen=i == current,
                    weight=weights.get(i, 0.0),
                    breaker_open=v.breaker.state != CLOSED,
                    latency=self.window_latency(v),
                )
                for i, v in enumerate(self.variants)
            ],
        )

    def _shares(self, live: list[int], current: int | None, explore: float) -> dict[int, float]:
        if not live:
            return {}
        if self.config.policy == "weighted":
            declared = [v.weight for v in self.config.variants]
            weights = {i: 1.0 if declared[i] is None else float(declared[i] or 0.0) for i in live}
            total = sum(weights.values()) or 1.0
            return {i: w / total for i, w in weights.items()}
        chosen = current if current in live else live[0]
        others = [i for i in live if i != chosen]
        shares = {chosen: 1.0 - (explore if others else 0.0)}
        for i in others:
            shares[i] = explore / len(others)
        return shares


def signature_difference(reference: Signature | None, other: Signature | None) -> str:
    """ "" when both signatures have the same inputs and outputs (names, datatypes, shapes), else the difference."""
    if reference is None or other is None:
        return "" if reference is other else "no signature"
    for kind, mine, theirs in (("input", reference.inputs, other.inputs), ("output", reference.outputs, other.outputs)):
        expected = {s.name: (s.datatype, list(s.shape)) for s in mine}
        found = {s.name: (s.datatype, list(s.shape)) for s in theirs}
        for name in sorted(expected.keys() | found.keys()):
            if name not in found:
                return f"signature differs: no {kind} {name!r}"
            if name not in expected:
                return f"signature differs: extra {kind} {name!r}"
            if expected[name] != found[name]:
                (dt, shape), (edt, eshape) = found[name], expected[name]
                return f"signature differs: {kind} {name!r} is {dt} {shape}, the route's is {edt} {eshape}"
    return ""
