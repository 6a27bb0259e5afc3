"""Exchange: one inference request on its way through the DataPlane — the protocol it came in on, the name and
version it asked for (known to the front end before the body is decoded), the version it resolved to, and its
Origin (what the front end knows of it besides the body: request ID, trace context, peer, sizes).

A front end's decoder receives it and may ``resolve`` the target itself when decoding needs the model (TF Serving
picks a signature to decode against; V2's raw binary body needs the input's spec); otherwise the DataPlane
resolves the decoded request's model. Either way the model is resolved once, by the Router. A route resolves to
one of its variants and leaves its ``plan`` (fallback, shadow) for the DataPlane; ``key`` is the client's routing
key (``tensorgate-route-key`` header or gRPC metadata, or the V2 parameter ``route_key``), set before resolving.
"""

from __future__ import annotations

import random
from typing import Any

from gateway.lifecycle.model import ModelVersion
from gateway.routing.router import Plan, Router

ROUTE_KEY_HEADER = "tensorgate-route-key"  # HTTP header and gRPC metadata key
ROUTE_KEY_PARAMETER = "route_key"  # V2 request parameter
VARIANT_HEADER = "tensorgate-variant"  # HTTP header and gRPC trailing metadata key on a route's answers
VARIANT_PARAMETER = "variant"  # V2 response parameter

_MAX_ID = 128


def request_id(candidate: str | None) -> str | None:
    """An incoming request ID if it is safe to echo and log (printable ASCII, at most 128 characters), else None."""
    if candidate and len(candidate) <= _MAX_ID and candidate.isascii() and candidate.isprintable():
        return candidate
    return None


def new_request_id() -> str:
    """A fresh request ID: 16 hex digits."""
    return f"{random.getrandbits(64):016x}"


class Origin:
    """What a front end hands the DataPlane besides the body, and reads back afterwards.

    In: ``request_id`` (the caller's ``x-request-id`` header or gRPC metadata, if any), ``traceparent`` and
    ``tracestate`` (W3C trace context), ``peer`` (address; formatted only when logged), ``key_id`` (set by an
    authentication layer: the ID of the key that authenticated the request), ``request_bytes`` and
    ``response_bytes`` (set by the decoder and the encoder). Out: ``request_id`` — the DataPlane keeps the
    caller's, else takes the V2 request ``id``, else generates one, so the front end can return it.
    """

    __slots__ = (
        "key_id", "peer", "request_bytes", "request_id", "response_bytes", "route_key", "traceparent", "tracestate",
    )  # fmt: skip

    def __init__(
        self,
        request_id: str | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        peer: Any = None,
        key_id: str | None = None,
    ) -> None:
        self.request_id = request_id
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.peer = peer
        self.key_id = key_id
        self.route_key: str | None = None  # a route's sticky key (header / gRPC metadata), if the client sent one
        self.request_bytes = 0
        self.response_bytes: int | None = None


class Exchange:
    __slots__ = ("key", "model", "name", "origin", "plan", "protocol", "received", "router", "trace", "version")

    def __init__(
        self,
        router: Router,
        protocol: str,
        name: str,
        version: str | None,
        received: float,
        origin: Origin | None = None,
    ) -> None:
        self.router = router
        self.protocol = protocol
        self.name = name
        self.version = version
        self.received = received
        self.origin = origin if origin is not None else Origin()
        self.model: ModelVersion | None = None
        self.trace: Any = None  # the request's trace while tracing is on (gateway.telemetry.tracing.RequestTrace)
        self.plan: Plan | None = None
        self.key: str | None = self.origin.route_key

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> ModelVersion:
        """The version serving ``name`` (and ``version`` or ``label``); remembered for the rest of the request."""
        self.name = name
        self.version = None if version is None or version == "" else str(version)
        self.model, self.plan = self.router.plan(name, version, label, self.key)
        return self.model
