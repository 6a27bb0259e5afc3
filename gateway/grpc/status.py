"""Maps GatewayError codes to grpc.StatusCode through the one error table, and aborts calls with them."""

from __future__ import annotations

import time
from typing import Any, NoReturn

import grpc

from gateway.core.errors import STATUS_TABLE, GatewayError


def grpc_code(exc: GatewayError) -> grpc.StatusCode:
    name = STATUS_TABLE.get(exc.code, (500, "INTERNAL"))[1]
    return grpc.StatusCode[name]


async def abort(context: Any, exc: GatewayError, message: str | None = None) -> NoReturn:
    metadata = (("x-request-id", exc.request_id),) if exc.request_id else ()
    await context.abort(grpc_code(exc), exc.message if message is None else message, metadata)
    raise AssertionError("unreachable")  # context.abort raises


def deadline_of(context: Any) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return time.monotonic() + remaining
