"""Wrapping a grpc.aio method handler's behaviour, whatever its kind (unary or streaming, either way): ``wrap``
puts ``before`` ahead of the behaviour, inside the call's task and context; ``Registrar`` stands in for the server
while services register, so that each method's handler is wrapped once, when registered, and no interceptor runs
per call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

Before = Callable[[Any], Awaitable[None]]  # receives the call's context; aborts the call to refuse it
Convert = Callable[[Any, Any], Awaitable[Any]]  # (raw request, context) -> request message
Wrap = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]  # (method, handler) -> wrapped handler


class Registrar:
    """What generated ``add_*Servicer_to_server`` functions (and grpc.aio's ``handlers=``) call, forwarded to
    ``server`` with every handler passed through ``wrap``; ``own`` handlers (by full method name) replace the
    servicer's and are registered as they are (they do their own checks)."""

    def __init__(self, server: Any, wrap: Wrap, own: dict[str, grpc.RpcMethodHandler] | None = None) -> None:
        self.server = server
        self.wrap = wrap
        self.own = own or {}

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {}
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            wrapped[name] = self.own.get(method) or self.wrap(method, handler)
        self.server.add_registered_method_handlers(service, wrapped)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(tuple(WrappedGeneric(h, self.wrap, self.own) for h in handlers))


class WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose answers are wrapped once per method and kept."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap, own: dict[str, grpc.RpcMethodHandler]) -> None:
        self.inner = inner
        self.wrap = wrap
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = dict(own)

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = self.inner.service(handler_call_details)
        wrapped = self._wrapped[method] = None if handler is None else self.wrap(method, handler)
        return wrapped


def compose(*wraps: Wrap) -> Wrap:
    """One Wrap applying ``wraps`` from the last (innermost) to the first (outermost)."""

    def composed(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for each in reversed(wraps):
            handler = each(method, handler)
        return handler

    return composed


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
