"""decoded: every method's request is deserialized by the server's own code, so that bytes which do
not decode answer INVALID_ARGUMENT naming the message type (grpc's own deserialization failure is not a client
error code), on every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway.grpc.calls import wrap

DECODE_ERRORS = (DecodeError, ValueError, TypeError, RuntimeError)  # what a message's FromString raises on bad bytes


async def _nothing(context: Any) -> None:
    return None


def _converter(deserialize: Callable[[bytes], Any]) -> Callable[[Any, Any], Awaitable[Any]]:
    kind = getattr(deserialize, "__self__", None)
    what = message_name(kind)

    async def convert(raw: Any, context: Any) -> Any:
        try:
            return deserialize(raw)
        except DECODE_ERRORS as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, not_valid(what, exc))

    return convert


def message_name(kind: Any) -> str:
    return getattr(getattr(kind, "DESCRIPTOR", None), "full_name", "request message")


def not_valid(what: str, exc: Exception) -> str:
    return f"the request is not a valid {what}: {exc}"


def decoded(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` deserializing its requests itself (a Wrap); one without a deserializer is left as it is."""
    if handler.request_deserializer is None:
        return handler
    return wrap(handler, _nothing, _converter(handler.request_deserializer))
