"""Exchange: one inference request on its way through the DataPlane — the protocol it came in on, the name and
version it asked for (known to the front end before the body is decoded), and the version it resolved to.

A front end's decoder receives it and may ``resolve`` the target itself when decoding needs the model (TF Serving
picks a signature to decode against; V2's raw binary body needs the input's spec); otherwise the DataPlane
resolves the decoded request's model. Either way the model is resolved once, by the Router. A route resolves to
one of its variants and leaves its ``plan`` (fallback, shadow) for the DataPlane; ``key`` is the client's routing
key (``tensorgate-route-key`` header or gRPC metadata, or the V2 parameter ``route_key``), set before resolving.
"""

from __future__ import annotations

from gateway.lifecycle.model import ModelVersion
from gateway.routing.router import Plan, Router

ROUTE_KEY_HEADER = "tensorgate-route-key"  # HTTP header and gRPC metadata key
ROUTE_KEY_PARAMETER = "route_key"  # V2 request parameter
VARIANT_HEADER = "tensorgate-variant"  # HTTP header and gRPC trailing metadata key on a route's answers
VARIANT_PARAMETER = "variant"  # V2 response parameter


class Exchange:
    __slots__ = ("key", "model", "name", "plan", "protocol", "received", "router", "version")

    def __init__(self, router: Router, protocol: str, name: str, version: str | None, received: float) -> None:
        self.router = router
        self.protocol = protocol
        self.name = name
        self.version = version
        self.received = received
        self.model: ModelVersion | None = None
        self.plan: Plan | None = None
        self.key: str | None = None

    def resolve(self, name: str, version: str | int | None = None, label: str | None = None) -> ModelVersion:
        """The version serving ``name`` (and ``version`` or ``label``); remembered for the rest of the request."""
        self.name = name
        self.version = None if version is None or version == "" else str(version)
        self.model, self.plan = self.router.plan(name, version, label, self.key)
        return self.model
