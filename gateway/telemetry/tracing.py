"""Tracing: OpenTelemetry spans for inference requests, exported over OTLP — the only module that imports
OpenTelemetry, and only when tracing is turned on (``--tracing``): off, nothing here is imported or called.

Per request: a SERVER span ``infer <model>`` whose parent is the caller's W3C ``traceparent`` (HTTP header or
gRPC metadata), with child spans ``decode``, ``queue``, ``compute`` and ``encode``. Under dynamic batching the
``compute`` span is one per batch (the runtime call), a child of the first traced request in it and linked to every
traced request in it. Spans are created from timestamps the request path already takes, so the request path only
hands over numbers; the OpenTelemetry SDK's batch processor exports in its own thread.

Configured the standard way, by the OpenTelemetry SDK itself: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_PROPAGATORS``,
``OTEL_BSP_*`` (the exporter is OTLP over HTTP/protobuf).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


class Tracing:
    """The tracer provider and what each request needs; ``Tracing()`` raises ImportError without the SDK."""

    def __init__(self, exporter: Any = None) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "tensorgate"}))
        self.provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("tensorgate")
        self._trace = trace
        self._extract = propagate.extract
        self._server = trace.SpanKind.SERVER
        self._offset = time.time_ns() - time.perf_counter_ns()  # perf_counter seconds -> unix nanoseconds

    def ns(self, perf: float) -> int:
        return int(perf * 1e9) + self._offset

    def begin(
        self,
        name: str,
        protocol: str,
        received: float,
        traceparent: str | None,
        tracestate: str | None,
        attributes: dict[str, Any],
    ) -> RequestTrace:
        """The request's span, started at ``received`` (perf_counter seconds) under the caller's trace if any."""
        parent = None
        if traceparent:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            parent = self._extract(carrier)
        span = self.tracer.start_span(
            f"infer {name}" if name else "infer",
            context=parent,
            kind=self._server,
            start_time=self.ns(received),
            attributes={"tensorgate.protocol": protocol, **attributes},
        )
        return RequestTrace(self, span, received)

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        self.provider.shutdown()


class RequestTrace:
    """One request's span and the timestamps of its stages (perf_counter seconds, set by the DataPlane)."""

    __slots__ = ("batched", "decoded", "ran", "received", "span", "submitted", "tracing")

    def __init__(self, tracing: Tracing, span: Any, received: float) -> None:
        self.tracing = tracing
        self.span = span
        self.received = received
        self.decoded = self.submitted = self.ran = 0.0
        self.batched = False

    @property
    def trace_id(self) -> str | None:
        """The trace ID in hex when this request is sampled (what an exemplar points to), else None."""
        context = self.span.get_span_context()
        return f"{context.trace_id:032x}" if context.trace_flags.sampled else None

    def _child(self, name: str, start: float, end: float, attributes: dict[str, Any] | None = None) -> None:
        t = self.tracing
        context = t._trace.set_span_in_context(self.span)
        span = t.tracer.start_span(name, context=context, start_time=t.ns(start), attributes=attributes)
        span.end(end_time=t.ns(end))

    def batch(self, traces: Sequence[RequestTrace], start: float, end: float, rows: int) -> None:
        """The ``compute`` span of one runtime call that served ``traces`` (this one first); each is marked so
        that the DataPlane does not add a per-request compute span."""
        t = self.tracing
        links = [t._trace.Link(r.span.get_span_context()) for r in traces]
        context = t._trace.set_span_in_context(self.span)
        attributes = {"tensorgate.batch.requests": len(traces), "tensorgate.batch.rows": rows}
        span = t.tracer.start_span("compute", context=context, links=links, start_time=t.ns(start),
                                   attributes=attributes)  # fmt: skip
        span.end(end_time=t.ns(end))
        for r in traces:
            r.batched = True

    def finish(
        self,
        end: float,
        code: str,
        queue: float = 0.0,
        compute: float = 0.0,
        attributes: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> str | None:
        """Children from the recorded timestamps, then the request span itself; returns the sampled trace ID."""
        span = self.span
        if span.is_recording():
            if self.decoded:
                self._child("decode", self.received, self.decoded)
            if self.submitted and self.ran:
                self._child("queue", self.submitted, self.submitted + queue)
                if not self.batched:
                    self._child("compute", self.submitted + queue, self.submitted + queue + compute)
                self._child("encode", self.ran, end)
            span.set_attribute("tensorgate.code", code)
            if attributes:
                span.set_attributes(attributes)
            if error is not None:
                span.set_status(self.tracing._trace.Status(self.tracing._trace.StatusCode.ERROR, error))
        span.end(end_time=self.tracing.ns(end))
        return self.trace_id
