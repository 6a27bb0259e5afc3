"""FleetMetrics: one /metrics for several worker processes — each worker's counts as a plain-data ``Snapshot``,
summed into one exposition by the supervisor (counters and histograms summed, in-flight gauges summed, model
states from the supervisor's own controller, Triton's ``nv_inference_*`` families from the summed statistics),
keeping the last snapshot of every worker that died so that no
counter goes backwards and no series disappears when a worker is replaced.

Snapshots are taken on the worker's event loop (copies of counts, no rendering) and rendered by the supervisor
with the one Renderer. Route policy gauges (chosen variant, weights, breakers) are per-process state: the
exposition shows those of the first live worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.telemetry.exposition import Renderer, _header
from gateway.telemetry.metrics import Exemplar, Metrics, ModelSeries, _Histogram
from gateway.telemetry.route_metrics import Divergence, RouteMetrics, RouteSeries, RouteState, ShadowSeries
from gateway.telemetry.stats import ModelStats
from gateway.telemetry.triton_metrics import TritonFamilies

#: a histogram as data: bounds, counts per bucket (not cumulative), sum, exemplars (or None)
Hist = tuple[tuple[float, ...], list[int], float, list[Exemplar | None] | None]
Key3 = tuple[str, str, str]


@dataclass
class Shadow:
    duration: Hist
    outcomes: dict[str, int]
    results: dict[str, int]
    outputs: dict[str, tuple[Hist, Hist, float, float, dict[str, int]]]


@dataclass
class Snapshot:
    """The counts of one worker (or the sum of several): picklable plain data."""

    series: dict[tuple[str, str, str, str], tuple[dict[str, int], dict[str, Hist]]] = field(default_factory=dict)
    inflight: dict[Key3, int] = field(default_factory=dict)
    sla: dict[Key3, dict[str, float]] = field(default_factory=dict)
    load: dict[Key3, Hist] = field(default_factory=dict)
    load_failures: dict[str, int] = field(default_factory=dict)
    batch: dict[Key3, Hist] = field(default_factory=dict)
    routes: dict[tuple[str, str], tuple[dict[str, int], Hist]] = field(default_factory=dict)
    fallbacks: dict[Key3, int] = field(default_factory=dict)
    shadow: dict[tuple[str, str], Shadow] = field(default_factory=dict)
    route_state: list[RouteState] = field(default_factory=list)
    stats: dict[Key3, ModelStats] = field(default_factory=dict)  # the statistics extension's, by (model, version,
    # runtime), of every version the worker holds
    serving: set[Key3] = field(default_factory=set)  # the versions it serves now (READY or draining)

    def statistics(self, name: str, version: str) -> ModelStats | None:
        """The summed statistics of one version (over its runtimes: a version swapped to another format keeps its
        counts), or None when no worker holds it."""
        found = [s for k, s in self.stats.items() if k[0] == name and k[1] == version]
        if not found:
            return None
        out = ModelStats()
        for s in found:
            out.merge(s)
        return out

    def requests(self) -> dict[str, int]:
        """Inference requests answered, by protocol."""
        out: dict[str, int] = {}
        for key, (codes, _) in self.series.items():
            out[key[3]] = out.get(key[3], 0) + sum(codes.values())
        return out


def _data(h: _Histogram) -> Hist:
    return (h.bounds, list(h.counts), h.sum, list(h.exemplars) if h.exemplars is not None else None)


def take(metrics: Metrics, stats: Iterable[tuple[Key3, ModelStats]] = (), serving: Iterable[Key3] = ()) -> Snapshot:
    """This process's counts (call it on the event loop that records them: nothing changes while it copies), with
    the statistics of the versions it holds and the labels of those it serves."""
    m, r = metrics, metrics.routes
    held: dict[Key3, ModelStats] = {}
    for labels, st in stats:
        if labels in held:
            held[labels].merge(st)
        else:
            held[labels] = st.copy()
    return Snapshot(
        stats=held,
        serving=set(serving),
        series={k: (dict(s.codes), {n: _data(h) for n, h in s.stages.items()}) for k, s in m._series.items()},
        inflight=dict(m._inflight),
        sla={k: dict(v) for k, v in m._sla.items()},
        load={k: _data(h) for k, h in m._load.items()},
        load_failures=dict(m._load_failures),
        batch={k: _data(h) for k, h in m._batch.items()},
        routes={k: (dict(s.codes), _data(s.request)) for k, s in r._series.items()},
        fallbacks=dict(r._fallbacks),
        shadow={
            k: Shadow(
                _data(s.duration),
                dict(s.outcomes),
                dict(s.results),
                {
                    o: (_data(d.abs_error), _data(d.rel_error), d.max_abs, d.max_rel, dict(d.argmax_rows))
                    for o, d in s.outputs.items()
                },
            )
            for k, s in r._shadow.items()
        },
        route_state=list(r.state()),
    )


def _add_hist(a: Hist | None, b: Hist) -> Hist:
    if a is None or a[0] != b[0]:
        return (b[0], list(b[1]), b[2], None if b[3] is None else list(b[3]))  # new, or re-bucketed (SLA changed)
    exemplars, theirs = a[3], b[3]
    if exemplars is not None and theirs is not None:
        exemplars = [
            y if x is None or (y is not None and y[2] > x[2]) else x for x, y in zip(exemplars, theirs, strict=True)
        ]
    return (a[0], [x + y for x, y in zip(a[1], b[1], strict=True)], a[2] + b[2], exemplars)


def _add_counts(a: dict[Any, int], b: dict[Any, int]) -> None:
    for k, v in b.items():
        a[k] = a.get(k, 0) + v


def add(total: Snapshot, s: Snapshot, gauges: bool = True) -> None:
    """Adds ``s`` into ``total``; ``gauges=False`` for a dead worker (nothing of it is in flight any more)."""
    for k, (codes, stages) in s.series.items():
        found = total.series.get(k)
        if found is None:
            found = total.series[k] = ({}, {})
        _add_counts(found[0], codes)
        for n, h in stages.items():
            found[1][n] = _add_hist(found[1].get(n), h)
    if gauges:
        _add_counts(total.inflight, s.inflight)
        if not total.route_state:
            total.route_state = list(s.route_state)
        total.serving |= s.serving
    for k3, st in s.stats.items():
        have_st = total.stats.get(k3)
        if have_st is None:
            total.stats[k3] = st.copy()
        else:
            have_st.merge(st)
    total.sla.update(s.sla)
    for k3, h in s.load.items():
        total.load[k3] = _add_hist(total.load.get(k3), h)
    _add_counts(total.load_failures, s.load_failures)
    for k3, h in s.batch.items():
        total.batch[k3] = _add_hist(total.batch.get(k3), h)
    for k2, (codes, h) in s.routes.items():
        have = total.routes.get(k2)
        merged: dict[str, int] = dict(have[0]) if have else {}
        _add_counts(merged, codes)
        total.routes[k2] = (merged, _add_hist(have[1] if have else None, h))
    _add_counts(total.fallbacks, s.fallbacks)
    for k2, sh in s.shadow.items():
        t = total.shadow.get(k2)
        if t is None:
            t = total.shadow[k2] = Shadow(sh.duration, {}, {}, {})
        else:
            t.duration = _add_hist(t.duration, sh.duration)
        _add_counts(t.outcomes, sh.outcomes)
        _add_counts(t.results, sh.results)
        for o, (ab, rel, max_abs, max_rel, rows) in sh.outputs.items():
            have_o = t.outputs.get(o)
            if have_o is None:
                t.outputs[o] = (ab, rel, max_abs, max_rel, dict(rows))
            else:
                merged_rows = dict(have_o[4])
                _add_counts(merged_rows, rows)
                t.outputs[o] = (
                    _add_hist(have_o[0], ab), _add_hist(have_o[1], rel),
                    max(have_o[2], max_abs), max(have_o[3], max_rel), merged_rows,
                )  # fmt: skip


def _hist(data: Hist) -> _Histogram:
    h = _Histogram(data[0], exemplars=data[3] is not None)
    h.counts = list(data[1])
    h.sum = data[2]
    if data[3] is not None:
        h.exemplars = list(data[3])
    h.stamp = 1
    return h


class FleetMetrics:
    """The supervisor's sum: ``retire(slot, snapshot)`` when a worker dies, ``render(live, om)`` per scrape.

    ``own`` is the supervisor's Metrics: model states, SLA targets and the store's health come from its
    controller, the one that decides for every worker."""

    def __init__(self, own: Metrics, triton: bool = False) -> None:
        self.own = own
        self.triton = triton  # --metrics-compat triton: Triton's families, from the summed statistics
        self.retired = Snapshot()
        self._retired_by_slot: dict[int, dict[str, int]] = {}
        self.restarts = 0

    def retire(self, slot: int, snapshot: Snapshot) -> None:
        add(self.retired, snapshot, gauges=False)
        _add_counts(self._retired_by_slot.setdefault(slot, {}), snapshot.requests())

    def total(self, live: dict[int, Snapshot]) -> Snapshot:
        total = Snapshot()
        add(total, self.retired, gauges=False)
        for slot in sorted(live):
            add(total, live[slot])
        return total

    def render(self, live: dict[int, Snapshot], om: bool) -> bytes:
        total = self.total(live)
        m = Metrics()
        own = self.own
        m._states = dict(own._states)
        m._sla = {**total.sla, **own._sla}
        m._store_stale, m._store_errors, m._store_last_sync = own._store_stale, own._store_errors, own._store_last_sync
        m._inflight = dict(total.inflight)
        for k, (codes, stages) in total.series.items():
            m._series[k] = ModelSeries(k, {n: _hist(h) for n, h in stages.items()}, dict(codes), stamp=1)
        m._load = {k: _hist(h) for k, h in total.load.items()}
        m._load_failures = dict(total.load_failures)
        m._batch = {k: _hist(h) for k, h in total.batch.items()}
        m.routes = _routes(total)
        if self.triton:
            loaded = [(k, total.stats[k]) for k in sorted(total.serving) if k in total.stats]
            m.triton = TritonFamilies(lambda: loaded)  # a new one per scrape: its cache keys on live series
        body = Renderer(m).render(om).removesuffix(b"# EOF\n")
        return body + self._workers(live, om) + (b"# EOF\n" if om else b"")

    def _workers(self, live: dict[int, Snapshot], om: bool) -> bytes:
        by_slot = {slot: dict(counts) for slot, counts in self._retired_by_slot.items()}
        for slot, snap in live.items():
            _add_counts(by_slot.setdefault(slot, {}), snap.requests())
        out = [_header("tensorgate_worker_requests", "counter", "Inference requests answered by each worker.", om)]
        out.extend(
            f'tensorgate_worker_requests_total{{worker="{slot}",protocol="{protocol}"}} {float(n)!r}\n'.encode()
            for slot in sorted(by_slot)
            for protocol, n in sorted(by_slot[slot].items())
        )
        out.append(_header("tensorgate_workers", "gauge", "Worker processes serving now.", om))
        out.append(f"tensorgate_workers {float(len(live))!r}\n".encode())
        out.append(_header("tensorgate_worker_restarts", "counter", "Worker processes replaced after exiting.", om))
        out.append(f"tensorgate_worker_restarts_total {float(self.restarts)!r}\n".encode())
        return b"".join(out)


def _routes(total: Snapshot) -> RouteMetrics:
    r = RouteMetrics()
    r._series = {k: RouteSeries(_hist(h), dict(codes)) for k, (codes, h) in total.routes.items()}
    r._fallbacks = dict(total.fallbacks)
    for k, sh in total.shadow.items():
        series = ShadowSeries(_hist(sh.duration), dict(sh.outcomes), dict(sh.results))
        for o, (ab, rel, max_abs, max_rel, rows) in sh.outputs.items():
            series.outputs[o] = Divergence(_hist(ab), _hist(rel), max_abs, max_rel, dict(rows))
        r._shadow[k] = series
    states = list(total.route_state)
    r.state = lambda: states
    return r
