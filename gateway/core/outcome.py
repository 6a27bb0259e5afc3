"""Outcomes: records how each request ended, once — the latency histograms and code counters (labels from the
host, never from raw request strings), Triton statistics, the request's span, its access-log line, and for a
route the variant's standing (its latency window and circuit breaker)."""

from __future__ import annotations

import time
from typing import Any

from gateway.core.auth import current_key_id
from gateway.core.errors import GatewayError
from gateway.core.exchange import Exchange, Origin, new_request_id
from gateway.lifecycle.model import ModelVersion
from gateway.routing.router import Router
from gateway.telemetry.access import AccessLog
from gateway.telemetry.metrics import UNKNOWN, Metrics
from gateway.telemetry.tracing import Tracing


def _span_labels(labels: tuple[str, str, str]) -> dict[str, str]:
    return {"tensorgate.model": labels[0], "tensorgate.version": labels[1], "tensorgate.runtime": labels[2]}


def _closing(x: Exchange) -> tuple[float, float, Origin]:
    """When the request ended, how long it took, and its Origin with its request ID and key ID filled in."""
    end = time.perf_counter()
    origin = x.origin
    if origin.key_id is None:
        origin.key_id = current_key_id()
    if origin.request_id is None:
        origin.request_id = new_request_id()
    return end, end - x.received, origin


class Outcomes:
    def __init__(
        self,
        models: Any,
        router: Router,
        metrics: Metrics,
        access_log: AccessLog | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.models = models
        self.router = router
        self.metrics = metrics
        self.access_log = access_log
        self.tracing = tracing

    def begin_trace(self, x: Exchange) -> Any:
        """The request's span (tracing on only)."""
        assert self.tracing is not None
        o = x.origin
        attributes = {"tensorgate.request_id": o.request_id} if o.request_id else {}
        return self.tracing.begin(x.name, x.protocol, x.received, o.traceparent, o.tracestate, attributes)

    def ok(self, x: Exchange, model: ModelVersion, rows: int, queue: float, compute: float) -> None:
        end, total, origin = _closing(x)
        trace_id = None
        if x.trace is not None:
            trace_id = x.trace.finish(end, "OK", queue, compute, _span_labels(model.labels))
        self.metrics.series(*model.labels, x.protocol).observe(
            "OK", total, queue, compute, max(total - queue - compute, 0.0), trace_id
        )
        model.stats.record_success(int(time.time() * 1000), rows, total, queue, compute)
        if x.plan is not None:
            x.plan.served(total)
        access = self.access_log
        if access is not None and access.wanted("OK", total):
            access.record(
                x.protocol, x.name, model.name, str(model.version), model.labels[2], "OK", total, queue, compute,
                origin.request_bytes, origin.response_bytes, origin.request_id, origin.peer, origin.key_id, trace_id,
            )  # fmt: skip

    def failed(self, x: Exchange, code: str, message: str = "") -> None:
        end, total, origin = _closing(x)
        if x.plan is not None:
            x.plan.failed(code, total)
        model = x.model
        if model is None and x.name:  # refused before resolving: labelled by what the request asked for
            try:
                model = self.router.resolve(x.name, x.version)
            except GatewayError:
                model = None
        if model is not None:
            labels = model.labels
        else:
            # A known model keeps its name; a version that is not loaded (or not READY) is labelled as far as the
            # host knows it. Names the host does not know all collapse into one series.
            entry = self.models.get(x.name)
            if entry is None:
                labels = (UNKNOWN, "", "")
            else:
                version = x.version or ""
                known = entry.versions.get(int(version)) if version.isascii() and version.isdigit() else None
                labels = known.labels if known is not None else (x.name, UNKNOWN, "")
        trace_id = None
        if self.tracing is not None:
            trace = x.trace if x.trace is not None else self.begin_trace(x)
            trace_id = trace.finish(end, code, attributes=_span_labels(labels), error=message)
        self.metrics.series(*labels, x.protocol).observe(code, total, 0.0, 0.0, 0.0, trace_id)
        if model is not None:
            model.stats.record_failure(total)
        access = self.access_log
        if access is not None:
            access.record(
                x.protocol, x.name, model.name if model is not None else None, labels[1] or x.version,
                labels[2] or None, code, total, 0.0, 0.0, origin.request_bytes, origin.response_bytes,
                origin.request_id, origin.peer, origin.key_id, trace_id, message,
            )  # fmt: skip
