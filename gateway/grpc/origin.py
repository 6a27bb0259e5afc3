"""origin_of: a gRPC call's Origin (``x-request-id``, ``traceparent``, ``tracestate`` metadata and the peer), and
``return_id``: the request ID back to the caller as trailing metadata."""

from __future__ import annotations

from typing import Any

from gateway.core.exchange import Origin, request_id


def origin_of(context: Any) -> Origin:
    origin = Origin(peer=context.peer())
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            origin.request_id = request_id(value if isinstance(value, str) else None)
        elif key == "traceparent":
            origin.traceparent = value
        elif key == "tracestate":
            origin.tracestate = value
    return origin


def return_id(context: Any, request_id: str | None) -> None:
    if request_id:
        context.set_trailing_metadata((("x-request-id", request_id),))
