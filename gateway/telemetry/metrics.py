"""Metrics: every Prometheus instrument of the gateway, on one injected registry.

Latency histograms are kept by a small collector of our own so that each model's series can carry its SLA
targets as extra bucket boundaries (the share of requests within SLA is then exact), and so that recording a
request costs a few list increments. Everything is recorded on the event loop thread, so no locks are needed.
Label values come from the registry (model, version, runtime), never from raw request strings.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: Fine around typical SLA targets: 0.1 ms to 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
    0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LOAD_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

UNKNOWN = "_unknown"  # label value for requests naming no loaded model
STAGES = ("request", "queue", "compute", "overhead")
PROTOCOLS = ("rest", "grpc", "tfs_rest", "tfs_grpc")
STATES = ("LOADING", "READY", "UNAVAILABLE", "UNLOADING")


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(set(bounds)))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((_fmt(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _fmt(value: float) -> str:
    text = repr(float(value))
    return text


@dataclass
class ModelSeries:
    """The instruments of one (model, version, runtime, protocol), bound once and reused per request."""

    labels: tuple[str, str, str, str]
    stages: dict[str, _Histogram]
    codes: dict[str, int] = field(default_factory=dict)

    def observe(self, code: str, request: float, queue: float, compute: float, overhead: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        if code != "OK":
            self.stages["request"].observe(request)
            return
        stages = self.stages
        stages["request"].observe(request)
        stages["queue"].observe(queue)
        stages["compute"].observe(compute)
        stages["overhead"].observe(overhead)


class Metrics(Collector):
    """All instruments. ``Metrics(registry)`` registers itself on that registry (a fresh one in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
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
        from gateway.telemetry.route_metrics import RouteMetrics  # imports this module's histogram

        self.routes = RouteMetrics()
        self.registry.register(self)

    # -- per-model setup ---------------------------------------------------------------------------------------
    def set_sla(self, model: str, version: str, runtime: str, targets: dict[str, float]) -> None:
        self._sla[(model, version, runtime)] = dict(targets)

    def series(self, model: str, version: str, runtime: str, protocol: str) -> ModelSeries:
        key = (model, version, runtime, protocol)
        found = self._series.get(key)
        if found is None:
            sla = tuple(self._sla.get((model, version, runtime), {}).values())
            stages = {s: _Histogram(LATENCY_BUCKETS + (sla if s == "request" else ())) for s in STAGES}
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

    # -- exposition --------------------------------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        yield from self._collect_latency()
        labels4 = ["model", "version", "runtime", "protocol"]
        requests = CounterMetricFamily(
            "tensorgate_requests", "Inference requests by outcome code.", labels=[*labels4, "code"]
        )
        for key, series in self._series.items():
            for code, count in series.codes.items():
                requests.add_metric([*key, code], count)
        yield requests
        labels3 = ["model", "version", "runtime"]
        inflight = GaugeMetricFamily("tensorgate_inflight_requests", "Requests in flight.", labels=labels3)
        for key3, value in self._inflight.items():
            inflight.add_metric(list(key3), value)
        yield inflight
        state = GaugeMetricFamily(
            "tensorgate_model_state", "1 for the state each model version is in.", labels=[*labels3, "state"]
        )
        for key3, current in self._states.items():
            for name in STATES:
                state.add_metric([*key3, name], 1.0 if name == current else 0.0)
        yield state
        sla = GaugeMetricFamily(
            "tensorgate_sla_target_seconds", "Per-model latency objective.", labels=[*labels3, "objective"]
        )
        for key3, targets in self._sla.items():
            if key3 in self._states:
                for objective, seconds in targets.items():
                    sla.add_metric([*key3, objective], seconds)
        yield sla
        load = HistogramMetricFamily(
            "tensorgate_model_load_duration_seconds", "Time to load and warm up a version.", labels=labels3
        )
        for key3, hist in self._load.items():
            load.add_metric(list(key3), hist.buckets(), hist.sum)
        yield load
        failures = CounterMetricFamily(
            "tensorgate_model_load_failures", "Versions that failed to load or warm up.", labels=["model"]
        )
        for model, count in self._load_failures.items():
            failures.add_metric([model], count)
        yield failures
        batch = HistogramMetricFamily(
            "tensorgate_batch_size", "Requests per runtime call under dynamic batching.", labels=labels3
        )
        for key3, hist in self._batch.items():
            batch.add_metric(list(key3), hist.buckets(), hist.sum)
        yield batch
        yield GaugeMetricFamily(
            "tensorgate_store_stale", "1 while the model store cannot be read.", value=self._store_stale
        )
        yield CounterMetricFamily(
            "tensorgate_store_poll_errors", "Failed reads of the model store.", value=self._store_errors
        )
        yield GaugeMetricFamily(
            "tensorgate_store_last_sync_timestamp_seconds",
            "When the store was last read successfully.",
            value=self._store_last_sync,
        )

        yield from self.routes.collect()

    def _collect_latency(self) -> Iterator[Metric]:
        docs = {
            "request": "Whole request as seen by the gateway, from receipt to encoded response.",
            "queue": "Wait between validation and the start of the runtime call.",
            "compute": "Runtime call (the framework's own time, shared by a batch).",
            "overhead": "Gateway overhead: decode, validate and encode (request minus queue and compute).",
        }
        for stage in STAGES:
            family = HistogramMetricFamily(
                f"tensorgate_{stage}_duration_seconds",
                docs[stage],
                labels=["model", "version", "runtime", "protocol"],
            )
            for key, series in self._series.items():
                hist = series.stages[stage]
                family.add_metric(list(key), hist.buckets(), hist.sum)
            yield family

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
