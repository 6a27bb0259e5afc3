"""A gRPC call's metadata, both ways: ``origin_of`` reads the request's (``x-request-id``, ``traceparent``,
``tracestate``, a route's ``tensorgate-route-key``, the peer) into an Origin; ``trailers`` answers with the request ID
and, for a route, the variant that served (``tensorgate-variant``) as trailing metadata. Streams carry the variant in
each response's parameters only."""

from __future__ import annotations

from typing import Any

from gateway.core.exchange import ROUTE_KEY_HEADER, VARIANT_HEADER, VARIANT_PARAMETER, Origin, request_id
from gateway.core.types import InferResponse


def origin_of(context: Any, metadata: Any = None) -> Origin:
    """The call's Origin; ``metadata``: its invocation metadata when the caller has read it already."""
    origin = Origin(peer=context.peer)  # called only if the access log writes the line
    for key, value in (metadata if metadata is not None else context.invocation_metadata()) or ():
        if key == "x-request-id":
            origin.request_id = request_id(value if isinstance(value, str) else None)
        elif key == "traceparent":
            origin.traceparent = value
        elif key == "tracestate":
            origin.tracestate = value
        elif key == ROUTE_KEY_HEADER:
            origin.route_key = value if isinstance(value, str) else value.decode("utf-8", "replace")
    return origin


def variant_of(response: InferResponse) -> str | None:
    variant = response.parameters.get(VARIANT_PARAMETER)
    return str(variant) if variant else None


def trailers(context: Any, request_id: str | None, variant: str | None = None) -> None:
    metadata = []
    if request_id:
        metadata.append(("x-request-id", request_id))
    if variant:
        metadata.append((VARIANT_HEADER, variant))
    if metadata:
        context.set_trailing_metadata(tuple(metadata))
