"""RouteMetrics: the instruments of routes — requests and latency per route and serving variant (the route's SLA
targets are extra bucket boundaries, as for models), fallbacks, the policy's state (current choice, traffic
weights, whether a variant meets the SLA, breakers, the router's own windowed latency) and shadow traffic
(latency, outcomes, divergence from the primary's answer). Labels come from route declarations only.

Per-request instruments are bound once per (route, variant) and cost a few increments; the policy state is read
from the router at scrape time through ``state``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from gateway.telemetry.metrics import LATENCY_BUCKETS, _Histogram

#: divergence magnitudes, 1e-9 to 1e3
ERROR_BUCKETS: tuple[float, ...] = tuple(10.0**e for e in range(-9, 4))


@dataclass
class RouteSeries:
    """Client requests of one route answered (or failed last) by one variant."""

    request: _Histogram
    codes: dict[str, int] = field(default_factory=dict)

    def observe(self, code: str, seconds: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        self.request.observe(seconds)


@dataclass
class Divergence:
    """One output's differences between the shadow and the primary."""

    abs_error: _Histogram = field(default_factory=lambda: _Histogram(ERROR_BUCKETS))
    rel_error: _Histogram = field(default_factory=lambda: _Histogram(ERROR_BUCKETS))
    max_abs: float = 0.0
    max_rel: float = 0.0
    argmax_rows: dict[str, int] = field(default_factory=dict)  # "true"/"false" -> rows


@dataclass
class ShadowSeries:
    """Mirrored calls of one route to one shadow variant."""

    duration: _Histogram = field(default_factory=lambda: _Histogram(LATENCY_BUCKETS))
    outcomes: dict[str, int] = field(default_factory=dict)  # compared, dropped, failed
    results: dict[str, int] = field(default_factory=dict)  # within, beyond (the route's tolerance)
    outputs: dict[str, Divergence] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@dataclass(frozen=True)
class VariantState:
    """The policy's view of one variant, read at scrape time."""

    route: str
    variant: str
    chosen: bool
    weight: float  # the share of traffic the policy means it to get, 0..1
    breaker_open: bool
    latency: dict[str, float]  # objective -> windowed latency in seconds


@dataclass(frozen=True)
class RouteState:
    route: str
    policy: str
    sla_met: bool | None  # None: the route's policy has no SLA
    targets: dict[str, float]
    variants: list[VariantState]


class RouteMetrics:
    """Collected by ``Metrics`` (``metrics.routes``); ``state`` is set by the router that owns the routes."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], RouteSeries] = {}
        self._fallbacks: dict[tuple[str, str, str], int] = {}
        self._shadow: dict[tuple[str, str], ShadowSeries] = {}
        self.state: Callable[[], Iterable[RouteState]] = list

    def series(self, route: str, variant: str, targets: Iterable[float] = ()) -> RouteSeries:
        key = (route, variant)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = RouteSeries(_Histogram(LATENCY_BUCKETS + tuple(targets)))
        return found

    def fallback(self, route: str, variant: str, code: str) -> None:
        key = (route, variant, code)
        self._fallbacks[key] = self._fallbacks.get(key, 0) + 1

    def shadow(self, route: str, variant: str) -> ShadowSeries:
        key = (route, variant)
        found = self._shadow.get(key)
        if found is None:
            found = self._shadow[key] = ShadowSeries()
        return found

    def collect(self) -> Iterator[Metric]:
        rv = ["route", "variant"]
        requests = CounterMetricFamily(
            "tensorgate_route_requests", "Route requests by serving variant.", labels=[*rv, "code"]
        )
        latency = HistogramMetricFamily(
            "tensorgate_route_request_duration_seconds",
            "Whole route requests, by the variant that answered.",
            labels=rv,
        )
        for key, series in list(self._series.items()):
            for code, count in list(series.codes.items()):
                requests.add_metric([*key, code], count)
            latency.add_metric(list(key), series.request.buckets(), series.request.sum)
        yield requests
        yield latency
        fallbacks = CounterMetricFamily(
            "tensorgate_route_fallbacks",
            "Attempts that failed on a variant and went on to the next.",
            labels=[*rv, "code"],
        )
        for key3, count in list(self._fallbacks.items()):
            fallbacks.add_metric(list(key3), count)
        yield fallbacks
        yield from self._collect_state(rv)
        yield from self._collect_shadow(rv)

    def _collect_state(self, rv: list[str]) -> Iterator[Metric]:
        chosen = GaugeMetricFamily(
            "tensorgate_route_variant_chosen", "1 for the variant the policy prefers now.", labels=rv
        )
        weight = GaugeMetricFamily(
            "tensorgate_route_variant_weight", "Share of traffic the policy means a variant to get (0..1).", labels=rv
        )
        breaker = GaugeMetricFamily(
            "tensorgate_route_breaker_open", "1 while a variant's circuit breaker is open or half-open.", labels=rv
        )
        window = GaugeMetricFamily(
            "tensorgate_route_window_latency_seconds",
            "The router's sliding-window latency of a variant, per objective.",
            labels=[*rv, "objective"],
        )
        met = GaugeMetricFamily(
            "tensorgate_route_sla_met", "0 while no variant of an sla route meets its SLA.", labels=["route"]
        )
        target = GaugeMetricFamily(
            "tensorgate_route_sla_target_seconds", "A route's latency objective.", labels=["route", "objective"]
        )
        for state in self.state():
            if state.sla_met is not None:
                met.add_metric([state.route], 1.0 if state.sla_met else 0.0)
            for objective, seconds in state.targets.items():
                target.add_metric([state.route, objective], seconds)
            for v in state.variants:
                labels = [v.route, v.variant]
                chosen.add_metric(labels, 1.0 if v.chosen else 0.0)
                weight.add_metric(labels, v.weight)
                breaker.add_metric(labels, 1.0 if v.breaker_open else 0.0)
                for objective, seconds in v.latency.items():
                    window.add_metric([*labels, objective], seconds)
        yield from (chosen, weight, breaker, window, met, target)

    def _collect_shadow(self, rv: list[str]) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "tensorgate_shadow_requests", "Mirrored calls: compared, dropped (busy) or failed.", labels=[*rv, "outcome"]
        )
        results = CounterMetricFamily(
            "tensorgate_shadow_comparisons",
            "Shadow answers within or beyond the route's tolerance of the primary's.",
            labels=[*rv, "result"],
        )
        duration = HistogramMetricFamily(
            "tensorgate_shadow_duration_seconds", "A shadow variant's queue and compute time.", labels=rv
        )
        ro = [*rv, "output"]
        abs_error = HistogramMetricFamily(
            "tensorgate_shadow_abs_error", "Largest absolute difference from the primary, per call.", labels=ro
        )
        rel_error = HistogramMetricFamily(
            "tensorgate_shadow_rel_error", "Largest relative difference from the primary, per call.", labels=ro
        )
        max_abs = GaugeMetricFamily("tensorgate_shadow_max_abs_error", "Largest absolute difference seen.", labels=ro)
        max_rel = GaugeMetricFamily("tensorgate_shadow_max_rel_error", "Largest relative difference seen.", labels=ro)
        argmax = CounterMetricFamily(
            "tensorgate_shadow_argmax_rows",
            "Rows of a classifier output whose argmax agrees (or not) with the primary's.",
            labels=[*ro, "agree"],
        )
        for key, series in list(self._shadow.items()):
            for outcome, count in list(series.outcomes.items()):
                calls.add_metric([*key, outcome], count)
            for result, count in list(series.results.items()):
                results.add_metric([*key, result], count)
            duration.add_metric(list(key), series.duration.buckets(), series.duration.sum)
            for output, d in list(series.outputs.items()):
                labels = [*key, output]
                abs_error.add_metric(labels, d.abs_error.buckets(), d.abs_error.sum)
                rel_error.add_metric(labels, d.rel_error.buckets(), d.rel_error.sum)
                max_abs.add_metric(labels, d.max_abs)
                max_rel.add_metric(labels, d.max_rel)
                for agree, rows in list(d.argmax_rows.items()):
                    argmax.add_metric([*labels, agree], rows)
        yield from (calls, results, duration, abs_error, rel_error, max_abs, max_rel, argmax)
