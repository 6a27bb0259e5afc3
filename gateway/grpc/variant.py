"""A route's gRPC metadata: the client's routing key (``tensorgate-route-key`` request metadata) and the variant
that answered (``tensorgate-variant`` trailing metadata; streams carry it in each response's parameters only)."""

from __future__ import annotations

from typing import Any

from gateway.core.exchange import ROUTE_KEY_HEADER, VARIANT_HEADER, VARIANT_PARAMETER
from gateway.core.types import InferResponse


def route_key(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == ROUTE_KEY_HEADER:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def name_variant(context: Any, response: InferResponse) -> None:
    variant = response.parameters.get(VARIANT_PARAMETER)
    if variant:
        context.set_trailing_metadata(((VARIANT_HEADER, str(variant)),))
