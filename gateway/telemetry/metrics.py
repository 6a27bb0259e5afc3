"""Metrics: every Prometheus instrument of the gateway, recorded on the event loop and rendered off it.

Latency histograms are kept by a small collector of our own so that each model's series can carry its SLA
targets as extra bucket boundaries (the share of requests within SLA is then exact), so that recording a
request costs a few list increments, and so that the exposition (gateway.telemetry.exposition) can render each
series once and reuse its text until it changes. Everything is written on the event loop thread without locks;
the exposition reads from another thread and copies what it reads (see there for the consistency it gives).
Label values come from the registry (model, version, runtime), never from raw request strings.

What is kept lean (a store of 1,000 models must not become 166,000 series): the request histogram keeps the fine
buckets (the dashboard's p50/p99 and the SLA rules read it); the queue/compute/overhead histograms use the coarser
``STAGE_BUCKETS`` (the dashboard and rules only take their p50/p99 to show where the time goes) and are only
written for a series once it has served a request successfully (failed requests have no stages).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Fine around typical SLA targets: 0.1 ms to 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Coarser, for the queue/compute/overhead split (p50/p99 of where the time goes): 0.1 ms to 10 s.
STAGE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
LOAD_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

UNKNOWN = "_unknown"  # label value for requests naming no loaded model
STAGES = ("request", "queue", "compute", "overhead")
PROTOCOLS = ("rest", "grpc", "tfs_rest", "tfs_grpc")
STATES = ("LOADING", "READY", "UNAVAILABLE", "UNLOADING")

#: (trace ID, observed value, unix time) of a recent request in one bucket
Exemplar = tuple[str, float, float]


class _Histogram:
    """Counts per bucket (not cumulative) and the sum; ``stamp`` changes with every observation, so the exposition
    can tell whether its cached text is still current. ``exemplars`` (request histograms only) keeps the latest
    traced request per bucket."""

    __slots__ = ("bounds", "cache", "counts", "exemplars", "stamp", "sum")

    def __init__(self, bounds: Sequence[float], exemplars: bool = False) -> None:
        self.bounds = tuple(sorted(set(bounds)))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.stamp = 0
        self.exemplars: list[Exemplar | None] | None = [None] * len(self.counts) if exemplars else None
        self.cache: Any = None  # owned by the exposition

    def observe(self, value: float, trace_id: str | None = None) -> None:
        index = bisect.bisect_left(self.bounds, value)
        self.counts[index] += 1
        self.sum += value
        self.stamp += 1
        if trace_id is not None and self.exemplars is not None:
            self.exemplars[index] = (trace_id, value, time.time())

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_fmt(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _fmt(value: float) -> str:
    return repr(float(value))


@dataclass(eq=False)
class ModelSeries:
    """The instruments of one (model, version, runtime, protocol), bound once and reused per request."""

    labels: tuple[str, str, str, str]
    stages: dict[str, _Histogram]
    codes: dict[str, int] = field(default_factory=dict)
    stamp: int = 0  # changes with every request (the request counter's cached text is keyed by it)
    cache: Any = None  # owned by the exposition

    def observe(
        self, code: str, request: float, queue: float, compute: float, overhead: float, trace_id: str | None = None
    ) -> None:
        """One request's outcome; ``trace_id`` (of a sampled trace) becomes the exemplar of its latency bucket."""
        self.codes[code] = self.codes.get(code, 0) + 1
        self.stamp += 1
        stages = self.stages
        stages["request"].observe(request, trace_id)
        if code != "OK":
            return
        stages["queue"].observe(queue)
        stages["compute"].observe(compute)
        stages["overhead"].observe(overhead)


class Metrics:
    """All instruments; ``exposition()`` renders them (Prometheus text or OpenMetrics).

    ``registry`` is accepted for callers that hand one in and otherwise unused: the exposition is our own.
    """

    def __init__(self, registry: Any = None) -> None:
        self.registry = registry
        self._series: dict[tuple[str, str, str, str], ModelSeries] = {}
        self._sla: dict[tuple[str, str, str], dict[str, float]] = {}
        self._inflight: dict[tuple[str, str, str], int] = {}
        self._states: dict[tuple[str, str, str], str] = {}
        self._load: dict[tuple[str, str, str], _Histogram] = {}
        self._load_failures: dict[str, int] = {}
        self._batch: dict[tuple[str, str, str], _Histogram] = {}
        self._store_stale = 0
        self._store_errors = 0
        self._store_last_sync = 0.0
        self.started = time.time()
        self._renderer: Any = None
        self.triton: Any = None  # TritonFamilies with --metrics-compat triton (see enable_triton)
        # where the exposition comes from when this process is one of several workers (the supervisor's sum over
        # all of them, gateway.telemetry.fleet); called from a thread, never on the event loop
        self.source: Callable[[bool], bytes] | None = None
        from gateway.telemetry.route_metrics import RouteMetrics  # imports this module's histogram

        self.routes = RouteMetrics()

    # -- per-model setup ---------------------------------------------------------------------------------------
    def set_sla(self, model: str, version: str, runtime: str, targets: dict[str, float]) -> None:
        self._sla[(model, version, runtime)] = dict(targets)

    def series(self, model: str, version: str, runtime: str, protocol: str) -> ModelSeries:
        key = (model, version, runtime, protocol)
        found = self._series.get(key)
        if found is None:
            sla = tuple(self._sla.get((model, version, runtime), {}).values())
            stages = {
                s: _Histogram(LATENCY_BUCKETS + sla, exemplars=True) if s == "request" else _Histogram(STAGE_BUCKETS)
                for s in STAGES
            }
            found = self._series[key] = ModelSeries(key, stages)
        return found

    def unknown(self, protocol: str) -> ModelSeries:
        return self.series(UNKNOWN, "", "", protocol)

    def inflight_add(self, key: tuple[str, str, str], delta: int) -> None:
        self._inflight[key] = self._inflight.get(key, 0) + delta

    def set_state(self, model: str, version: str, runtime: str, state: str | None) -> None:
        key = (model, version, runtime)
        if state is None:
            self._states.pop(key, None)
            self._inflight.pop(key, None)
        else:
            self._states[key] = state

    def observe_load(self, model: str, version: str, runtime: str, seconds: float, ok: bool) -> None:
        hist = self._load.setdefault((model, version, runtime), _Histogram(LOAD_BUCKETS))
        hist.observe(seconds)
        if not ok:
            self._load_failures[model] = self._load_failures.get(model, 0) + 1

    def observe_batch(self, key: tuple[str, str, str], size: int) -> None:
        hist = self._batch.get(key)
        if hist is None:
            hist = self._batch[key] = _Histogram(BATCH_BUCKETS)
        hist.observe(size)

    def store_poll(self, ok: bool) -> None:
        if ok:
            self._store_stale = 0
            self._store_last_sync = time.time()
        else:
            self._store_stale = 1
            self._store_errors += 1

    def enable_triton(self, loaded: Any) -> None:
        """Also expose Triton's ``nv_inference_*`` families, derived at scrape time from ``loaded()``: the
        loaded versions as ((model, version, runtime), ModelStats) pairs (see gateway.telemetry.triton_metrics)."""
        from gateway.telemetry.triton_metrics import TritonFamilies

        self.triton = TritonFamilies(loaded)

    # -- exposition --------------------------------------------------------------------------------------------
    def exposition(self, openmetrics: bool = False) -> bytes:
        """The whole exposition; safe to call from any thread (it only reads, through copies)."""
        if self.source is not None:
            return self.source(openmetrics)
        if self._renderer is None:
            from gateway.telemetry.exposition import Renderer

            self._renderer = Renderer(self)
        rendered: bytes = self._renderer.render(openmetrics)
        return rendered
