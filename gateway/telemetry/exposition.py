"""Renderer: the /metrics exposition of one Metrics object, in the Prometheus text format or OpenMetrics (with
exemplars), rendered incrementally and safe to run off the event loop.

Cost is bounded as models grow: each histogram and each series' request counter keeps the bytes it last rendered
with the stamp it had, so a scrape re-renders only what changed since the previous one (a store of 1,000 idle
models costs a join of cached bytes) and the rest is one ``b"".join``.

Consistency without locking the hot path: the event loop writes counters while this runs in another thread. Every
container is copied before it is read (``list(dict.values())``, ``list(counts)``: single C calls under the GIL),
cumulative buckets and ``_count`` come from the same copy (always consistent), a ``_sum`` or a request counter may
lag the buckets by the one request being recorded at that instant, and the next scrape catches up.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from gateway.telemetry.metrics import STAGES, STATES, _fmt, _Histogram

if TYPE_CHECKING:
    from gateway.telemetry.metrics import Metrics, ModelSeries

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

LABELS4 = ("model", "version", "runtime", "protocol")
LABELS3 = ("model", "version", "runtime")
_STAGE_DOCS = {
    "request": "Whole request as seen by the gateway, from receipt to encoded response.",
    "queue": "Wait between validation and the start of the runtime call.",
    "compute": "Runtime call (the framework's own time, shared by a batch).",
    "overhead": "Gateway overhead: decode, validate and encode (request minus queue and compute).",
}


def wants_openmetrics(accept: str | None) -> bool:
    """Whether an Accept header asks for OpenMetrics (Prometheus sends it first when it can store exemplars)."""
    return bool(accept) and "application/openmetrics-text" in accept  # type: ignore[operator]


def content_type(openmetrics: bool) -> str:
    return CONTENT_TYPE_OPENMETRICS if openmetrics else CONTENT_TYPE_TEXT


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label_text(names: Sequence[str], values: Iterable[str]) -> str:
    """``model="m",version="1"`` (no braces: a histogram appends ``le``)."""
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


@functools.lru_cache(maxsize=256)
def _le(bounds: tuple[float, ...]) -> tuple[str, ...]:
    return (*(_fmt(b) for b in bounds), "+Inf")


def _header(name: str, kind: str, doc: str, om: bool) -> bytes:
    shown = name if om or kind != "counter" else f"{name}_total"
    return f"# HELP {shown} {doc}\n# TYPE {shown} {kind}\n".encode()


def histogram_text(name: str, labels: str, hist: _Histogram, om: bool) -> bytes:
    """One histogram's samples, reusing the bytes rendered at the same stamp."""
    stamp = hist.stamp  # read before the copy: a later change only makes the next scrape re-render
    cache = hist.cache
    if cache is not None and cache[om] is not None and cache[om][0] == stamp and cache[2] == labels:
        cached: bytes = cache[om][1]
        return cached
    counts = list(hist.counts)
    total = hist.sum
    exemplars = list(hist.exemplars) if om and hist.exemplars is not None else None
    sep = "," if labels else ""
    lines = []
    running = 0
    for i, le in enumerate(_le(hist.bounds)):
        running += counts[i]
        line = f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}'
        if exemplars is not None and exemplars[i] is not None:
            trace_id, value, when = exemplars[i]  # type: ignore[misc]
            line += f' # {{trace_id="{trace_id}"}} {value!r} {when:.3f}'
        lines.append(line)
    lines.append(f"{name}_count{{{labels}}} {running}")
    lines.append(f"{name}_sum{{{labels}}} {total!r}")
    text = ("\n".join(lines) + "\n").encode()
    if cache is None:
        cache = hist.cache = [None, None, labels]
    cache[om] = (stamp, text)
    return text


def _scalar(name: str, labels: str, value: float) -> str:
    return f"{name}{{{labels}}} {float(value)!r}\n" if labels else f"{name} {float(value)!r}\n"


class Renderer:
    """Renders one Metrics object; one per Metrics, callable from any thread (never on the event loop)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self._labels: dict[tuple[str, ...], str] = {}
        self._route_registry: CollectorRegistry | None = None

    def _l(self, names: Sequence[str], values: tuple[str, ...]) -> str:
        found = self._labels.get(values)
        if found is None:
            found = self._labels[values] = label_text(names, values)
        return found

    def render(self, om: bool = False) -> bytes:
        m = self.m
        out: list[bytes] = []
        series = list(m._series.values())
        for stage in STAGES:
            name = f"tensorgate_{stage}_duration_seconds"
            out.append(_header(name, "histogram", _STAGE_DOCS[stage], om))
            for s in series:
                hist = s.stages[stage]
                if stage != "request" and hist.stamp == 0:
                    continue  # no successful request yet: no stages to show
                out.append(histogram_text(name, self._l(LABELS4, s.labels), hist, om))
        out.append(_header("tensorgate_requests", "counter", "Inference requests by outcome code.", om))
        out.extend(self._requests(s) for s in series)
        self._gauges(out, om)
        if m.triton is not None:
            out.append(m.triton.render(m, om))
        out.append(self._routes(om))
        out.append(b"# EOF\n" if om else b"")
        return b"".join(out)

    def _routes(self, om: bool) -> bytes:
        """The routes' instruments (few: routes x variants), through prometheus_client's own writers."""
        if self._route_registry is None:
            self._route_registry = CollectorRegistry(auto_describe=False)
            self._route_registry.register(self.m.routes)
        if om:
            return openmetrics_latest(self._route_registry).removesuffix(b"# EOF\n")
        return text_latest(self._route_registry)

    def _requests(self, s: ModelSeries) -> bytes:
        stamp = s.stamp
        cache = s.cache
        if cache is not None and cache[0] == stamp:
            cached: bytes = cache[1]
            return cached
        labels = self._l(LABELS4, s.labels)
        text = "".join(
            f'tensorgate_requests_total{{{labels},code="{_escape(code)}"}} {float(n)!r}\n'
            for code, n in list(s.codes.items())
        ).encode()
        s.cache = (stamp, text)
        return text

    def _gauges(self, out: list[bytes], om: bool) -> None:
        m = self.m
        lines: list[str] = []
        out.append(_header("tensorgate_inflight_requests", "gauge", "Requests in flight.", om))
        lines = [_scalar("tensorgate_inflight_requests", self._l(LABELS3, k), v) for k, v in list(m._inflight.items())]
        out.append("".join(lines).encode())
        out.append(_header("tensorgate_model_state", "gauge", "1 for the state each model version is in.", om))
        states = list(m._states.items())
        lines = []
        for key, current in states:
            labels = self._l(LABELS3, key)
            lines.extend(
                f'tensorgate_model_state{{{labels},state="{name}"}} {1.0 if name == current else 0.0}\n'
                for name in STATES
            )
        out.append("".join(lines).encode())
        out.append(_header("tensorgate_sla_target_seconds", "gauge", "Per-model latency objective.", om))
        lines = []
        live = dict(states)
        for key, targets in list(m._sla.items()):
            if key in live:
                labels = self._l(LABELS3, key)
                lines.extend(
                    f'tensorgate_sla_target_seconds{{{labels},objective="{_escape(o)}"}} {float(v)!r}\n'
                    for o, v in list(targets.items())
                )
        out.append("".join(lines).encode())
        name = "tensorgate_model_load_duration_seconds"
        out.append(_header(name, "histogram", "Time to load and warm up a version.", om))
        out.extend(histogram_text(name, self._l(LABELS3, k), h, om) for k, h in list(m._load.items()))
        out.append(_header("tensorgate_model_load_failures", "counter", "Versions that failed to load or warm up.", om))
        out.append(
            "".join(
                _scalar("tensorgate_model_load_failures_total", f'model="{_escape(k)}"', v)
                for k, v in list(m._load_failures.items())
            ).encode()
        )
        name = "tensorgate_batch_size"
        out.append(_header(name, "histogram", "Requests per runtime call under dynamic batching.", om))
        out.extend(histogram_text(name, self._l(LABELS3, k), h, om) for k, h in list(m._batch.items()))
        out.append(_header("tensorgate_store_stale", "gauge", "1 while the model store cannot be read.", om))
        out.append(_scalar("tensorgate_store_stale", "", m._store_stale).encode())
        out.append(_header("tensorgate_store_poll_errors", "counter", "Failed reads of the model store.", om))
        out.append(_scalar("tensorgate_store_poll_errors_total", "", m._store_errors).encode())
        name = "tensorgate_store_last_sync_timestamp_seconds"
        out.append(_header(name, "gauge", "When the store was last read successfully.", om))
        out.append(_scalar(name, "", m._store_last_sync).encode())


def encode_body(metrics: Metrics, openmetrics: bool, gzip: bool) -> tuple[bytes, str | None]:
    """The response body and its Content-Encoding; zlib releases the GIL while it compresses."""
    body = metrics.exposition(openmetrics)
    if gzip and len(body) > 1024:
        return _gzip(body), "gzip"
    return body, None


def _gzip(body: bytes) -> bytes:
    import zlib

    packer = zlib.compressobj(1, zlib.DEFLATED, 31)
    return packer.compress(body) + packer.flush()
