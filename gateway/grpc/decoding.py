"""DecodingInterceptor: every method's request is deserialized by the server's own code, so that bytes which do
not decode answer INVALID_ARGUMENT naming the message type (grpc's own deserialization failure is not a client
error code), on every service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway.grpc.calls import wrap


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


class DecodingInterceptor(grpc.aio.ServerInterceptor):
    """Handlers are the same for every call of a method: each is wrapped once and kept."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]], handler_call_details: Any
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        wrapped = self._wrapped[method] = wrap(handler, _nothing, _converter(handler.request_deserializer))
        return wrapped
