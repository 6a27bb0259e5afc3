"""Wrapping a grpc.aio method handler's behaviour, whatever its kind (unary or streaming, either way), for the
server's interceptors: ``before`` runs ahead of the behaviour, inside the call's task and context; and
``WrappingInterceptor``, the interceptor that wraps each method's handler once and keeps it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Before = Callable[[Any], Awaitable[None]]  # receives the call's context; aborts the call to refuse it
Convert = Callable[[Any, Any], Awaitable[Any]]  # (raw request, context) -> request message


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Handlers are the same for every call of a method: each is wrapped once (``wrap_handler``) and kept."""

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
        if handler is None:
            return handler
        wrapped = self._wrapped[method] = self.wrap_handler(method, handler)
        return wrapped

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


def wrap(handler: grpc.RpcMethodHandler, before: Before, convert: Convert | None = None) -> grpc.RpcMethodHandler:
    """``handler`` with ``before(context)`` ahead of its behaviour and, with ``convert``, its requests converted
    (from raw bytes: the handler's deserializer is then left out)."""
    replace: dict[str, Any] = {}
    if convert is not None:
        replace["request_deserializer"] = None
    if handler.unary_unary is not None:
        replace["unary_unary"] = _unary(handler.unary_unary, before, convert)
    elif handler.unary_stream is not None:
        replace["unary_stream"] = _unary_stream(handler.unary_stream, before, convert)
    elif handler.stream_unary is not None:
        replace["stream_unary"] = _stream_unary(handler.stream_unary, before, convert)
    elif handler.stream_stream is not None:
        replace["stream_stream"] = _stream_stream(handler.stream_stream, before, convert)
    return handler._replace(**replace)  # type: ignore[attr-defined,no-any-return]


def _unary(behavior: Any, before: Before, convert: Convert | None) -> Any:
    async def call(request: Any, context: Any) -> Any:
        await before(context)
        if convert is not None:
            request = await convert(request, context)
        return await behavior(request, context)

    return call


def _unary_stream(behavior: Any, before: Before, convert: Convert | None) -> Any:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        await before(context)
        if convert is not None:
            request = await convert(request, context)
        async for response in behavior(request, context):
            yield response

    return call


def _requests(requests: AsyncIterator[Any], context: Any, convert: Convert | None) -> AsyncIterator[Any]:
    if convert is None:
        return requests

    async def converted() -> AsyncIterator[Any]:
        async for raw in requests:
            yield await convert(raw, context)

    return converted()


def _stream_unary(behavior: Any, before: Before, convert: Convert | None) -> Any:
    async def call(requests: AsyncIterator[Any], context: Any) -> Any:
        await before(context)
        return await behavior(_requests(requests, context, convert), context)

    return call


def _stream_stream(behavior: Any, before: Before, convert: Convert | None) -> Any:
    async def call(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        await before(context)
        async for response in behavior(_requests(requests, context, convert), context):
            yield response

    return call
