"""A gRPC call on the h2 server: ``Context`` (the part of grpc.aio's ServicerContext the handlers use) and ``run``,
the call's task: requests deserialized, the registered handler's behaviour awaited, its answer (or its abort,
error or deadline) written back on the stream."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from gateway.grpc.h2.compression import OFF_LOOP_BYTES, Compressed, TooLarge, inflate
from gateway.grpc.h2.connection import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    INTERNAL,
    OK,
    UNKNOWN,
    Connection,
    Stream,
)  # fmt: skip

log = logging.getLogger("tensorgate.grpc.h2")


class AbortError(grpc.aio.AbortError):  # type: ignore[misc]
    """Raised by ``Context.abort`` to end the handler."""


class Context:
    """What grpc.aio's ServicerContext offers the handlers, over one stream."""

    __slots__ = ("_code", "_connection", "_deadline", "_details", "_stream", "_trailing")

    def __init__(self, connection: Connection, stream: Stream, deadline: float | None) -> None:
        self._connection = connection
        self._stream = stream
        self._deadline = deadline
        self._trailing: Any = ()
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._stream.head.metadata

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self._connection.peer_name

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, Any]:
        return {}

    def cancelled(self) -> bool:
        return self._stream.cancelled

    def done(self) -> bool:
        return self._stream.done

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort with OK")
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise AbortError()

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Any:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str | None:
        return self._details

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._connection.send_headers(self._stream, initial_metadata)

    def set_compression(self, compression: Any) -> None:
        pass

    def disable_next_message_compression(self) -> None:
        pass

    def status(self) -> tuple[int, str | None]:
        code = OK if self._code is None else self._code.value[0]
        return code, self._details


def start(connection: Connection, stream: Stream) -> None:
    """The call's task started (``Connection.start_call``)."""
    loop = asyncio.get_running_loop()
    timeout = stream.head.timeout
    deadline = None
    if timeout is not None:
        deadline = time.monotonic() + timeout
        stream.deadline_timer = loop.call_later(timeout, connection.expire, stream)
    handler = stream.handler
    context = Context(connection, stream, deadline)
    if handler.unary_unary is not None:
        stream.task = loop.create_task(_unary_unary(connection, stream, handler, context))
    elif handler.unary_stream is not None:
        stream.task = loop.create_task(_unary_stream(connection, stream, handler, context))
    elif handler.stream_unary is not None:
        stream.task = loop.create_task(_stream_unary(connection, stream, handler, context))
    else:
        stream.task = loop.create_task(_stream_stream(connection, stream, handler, context))


async def _inflated(connection: Connection, stream: Stream, raw: bytes, context: Context) -> bytes:
    """A request message as sent: inflated when compressed (a large one in a thread), or the call aborted."""
    if not isinstance(raw, Compressed):
        return raw
    encoding, limit = stream.head.encoding or "", connection.limits.max_message_bytes
    try:
        if len(raw) > OFF_LOOP_BYTES:
            return await asyncio.to_thread(inflate, raw, encoding, limit)
        return inflate(raw, encoding, limit)
    except TooLarge as exc:
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    except ValueError as exc:
        await context.abort(grpc.StatusCode.INTERNAL, str(exc))


async def _request(connection: Connection, stream: Stream, handler: Any, context: Context) -> Any:
    raw = await _inflated(connection, stream, stream.messages[0], context)
    deserialize = handler.request_deserializer
    return raw if deserialize is None else deserialize(raw)


async def _requests(connection: Connection, stream: Stream, handler: Any, context: Context) -> AsyncIterator[Any]:
    queue = stream.queue
    assert queue is not None
    deserialize = handler.request_deserializer
    while True:
        raw = await queue.get()
        if raw is None:
            return
        connection.consumed(stream, len(raw) + 5)
        raw = await _inflated(connection, stream, raw, context)
        yield raw if deserialize is None else deserialize(raw)


async def _result(result: Any) -> Any:
    """A behaviour's answer: awaited when a coroutine (grpc.aio servicers may also be plain functions)."""
    return await result if inspect.isawaitable(result) else result


async def _responses(responses: Any) -> AsyncIterator[Any]:
    if hasattr(responses, "__aiter__"):
        async for response in responses:
            yield response
    else:
        for response in responses:
            yield response


def _serialize(handler: Any, response: Any) -> bytes:
    serialize = handler.response_serializer
    return response if serialize is None else serialize(response)  # type: ignore[no-any-return]


def _end(connection: Connection, stream: Stream, context: Context, message: bytes | None) -> None:
    code, details = context.status()
    if code != OK:
        message = None
    connection.respond(stream, message, code, details, context._trailing)


def _failed(connection: Connection, stream: Stream, context: Context, exc: BaseException) -> None:
    if isinstance(exc, AbortError):
        _end(connection, stream, context, None)
    elif isinstance(exc, asyncio.CancelledError):
        if not stream.done:  # cancelled from elsewhere (shutdown)
            connection.respond(stream, None, CANCELLED, "Cancelled", ())
    else:
        if not isinstance(exc, Exception):
            return
        if context._code is not None and context._code != grpc.StatusCode.OK:  # set, then raised: as grpc.aio
            _end(connection, stream, context, None)
            return
        log.exception("gRPC handler for %s failed", stream.head.path, exc_info=exc)
        connection.respond(stream, None, UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}", ())


async def _unary_unary(connection: Connection, stream: Stream, handler: Any, context: Context) -> None:
    try:
        response = await _result(handler.unary_unary(await _request(connection, stream, handler, context), context))
        _end(connection, stream, context, None if response is None else _serialize(handler, response))
    except BaseException as exc:
        _failed(connection, stream, context, exc)
        if not isinstance(exc, Exception | asyncio.CancelledError):
            raise


async def _unary_stream(connection: Connection, stream: Stream, handler: Any, context: Context) -> None:
    try:
        async for response in _responses(
            handler.unary_stream(await _request(connection, stream, handler, context), context)
        ):
            await connection.send_message(stream, _serialize(handler, response))
        _end(connection, stream, context, None)
    except BaseException as exc:
        _failed(connection, stream, context, exc)
        if not isinstance(exc, Exception | asyncio.CancelledError):
            raise


async def _stream_unary(connection: Connection, stream: Stream, handler: Any, context: Context) -> None:
    try:
        response = await _result(handler.stream_unary(_requests(connection, stream, handler, context), context))
        _end(connection, stream, context, None if response is None else _serialize(handler, response))
    except BaseException as exc:
        _failed(connection, stream, context, exc)
        if not isinstance(exc, Exception | asyncio.CancelledError):
            raise


async def _stream_stream(connection: Connection, stream: Stream, handler: Any, context: Context) -> None:
    try:
        async for response in _responses(
            handler.stream_stream(_requests(connection, stream, handler, context), context)
        ):
            await connection.send_message(stream, _serialize(handler, response))
        _end(connection, stream, context, None)
    except BaseException as exc:
        _failed(connection, stream, context, exc)
        if not isinstance(exc, Exception | asyncio.CancelledError):
            raise


__all__ = ["DEADLINE_EXCEEDED", "INTERNAL", "Context", "start"]
