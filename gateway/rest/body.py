"""read_body: the one reader of HTTP request bodies (the infer fast path and the FastAPI routes): bounded by the
configured size limit (413 beyond it, checked against Content-Length before reading) and by a time limit (408 for a
body that trickles in), then decompressed with the same size cap in a worker thread, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request

from gateway.core.errors import InvalidInput, PayloadTooLarge, RequestTimeout
from gateway.rest.codec import decompress

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


#: Compressed bodies up to this size are inflated inline; larger ones in the one inflating thread.
INLINE_DECOMPRESS = 16 * 1024
#: One thread inflates the larger bodies, one at a time: a flood of compressed bodies uses at most one core and
#: never the event loop's.
_INFLATER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tg-inflate")


async def read_body(
    receive: Receive, declared: str | None, encoding: str | None, limit: int, seconds: float = 30.0
) -> bytes:
    try:
        async with asyncio.timeout(seconds):
            body = await _receive_body(receive, declared, limit)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {seconds:g} s") from None
    if not encoding or len(body) <= INLINE_DECOMPRESS:
        return decompress(body, encoding, limit)
    return await asyncio.get_running_loop().run_in_executor(_INFLATER, decompress, body, encoding, limit)


async def _receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
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
    return body


async def request_body(request: Request) -> bytes:
    """The body of a FastAPI route's request."""
    headers = request.headers
    settings = request.app.state.settings
    return await read_body(
        request.receive,
        headers.get("content-length"),
        headers.get("content-encoding"),
        settings.max_request_bytes,
        settings.body_timeout,
    )
