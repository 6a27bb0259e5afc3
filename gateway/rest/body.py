"""read_body: the one reader of HTTP request bodies (the infer fast path and the FastAPI routes): bounded by the
configured size limit (413 beyond it, checked against Content-Length before reading), then decompressed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request

from gateway.core.errors import InvalidInput, PayloadTooLarge
from gateway.rest.codec import decompress

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def read_body(receive: Receive, declared: str | None, encoding: str | None, limit: int) -> bytes:
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidInput(f"Content-Length {declared!r} is not an integer") from None
        if size > limit:
            raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        parts = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            parts.append(chunk)
        body = b"".join(parts)
    elif len(body) > limit:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    return decompress(body, encoding, limit)


async def request_body(request: Request) -> bytes:
    """The body of a FastAPI route's request."""
    headers = request.headers
    limit: int = request.app.state.settings.max_request_bytes
    return await read_body(request.receive, headers.get("content-length"), headers.get("content-encoding"), limit)
