"""read_body: the raw request body, bounded by the configured size limit (413 beyond it), decompressed."""

from __future__ import annotations

from fastapi import Request

from gateway.errors import InvalidInput, PayloadTooLarge
from gateway.rest.codec import decompress


async def read_body(request: Request) -> bytes:
    limit: int = request.app.state.settings.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        except ValueError:
            raise InvalidInput(f"Content-Length {declared!r} is not an integer") from None
        body = await request.body()
    else:
        parts: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            parts.append(chunk)
        body = b"".join(parts)
    return decompress(body, request.headers.get("content-encoding"), limit)
