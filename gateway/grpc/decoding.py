"""DecodingInterceptor: every method's request is deserialized by the server's own code, so that bytes which do
not decode answer INVALID_ARGUMENT naming the message type (grpc's own deserialization failure is not a client
error code), on every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway.grpc.calls import WrappingInterceptor, wrap


async def _nothing(context: Any) -> None:
    return None


def _converter(deserialize: Callable[[bytes], Any]) -> Callable[[Any, Any], Awaitable[Any]]:
    kind = getattr(deserialize, "__self__", None)
    what = getattr(getattr(kind, "DESCRIPTOR", None), "full_name", "request message")

    async def convert(raw: Any, context: Any) -> Any:
        try:
            return deserialize(raw)
        except (DecodeError, ValueError, TypeError, RuntimeError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {what}: {exc}")

    return convert


class DecodingInterceptor(WrappingInterceptor):
    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_deserializer is None:
            return handler
        return wrap(handler, _nothing, _converter(handler.request_deserializer))
