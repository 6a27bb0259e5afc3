"""AuthApp: the REST adapter of gateway.core.auth — an ASGI wrapper around the whole HTTP application (the infer
fast path included) that names each request's endpoint group, checks the presented key
(``Authorization: Bearer <key>`` or ``X-API-Key: <key>``) and answers 401 / 403 / 429 from the one error table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from gateway.core.auth import PRINCIPAL, Guard
from gateway.core.errors import GatewayError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def route_group(method: str, path: str) -> str:
    """The endpoint group of a REST request: health, metrics, admin, infer or read (everything else, unknown
    paths included, so that a caller without a key learns nothing about the routes)."""
    if path in HEALTH_PATHS or (path.startswith("/v2/models/") and path.endswith("/ready")):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/v2/repository/models/") and path.endswith(("/load", "/unload")):
        return "admin"
    if method == "POST" and path.startswith(("/v2/systemsharedmemory/", "/v2/cudasharedmemory/")):
        return "admin"  # registering a region lets the server read and write that memory
    infer = path.startswith("/v1/models/") or (path.startswith("/v2/models/") and path.endswith("/infer"))
    if method == "POST" and infer:
        return "infer"
    return "read"


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            return value.decode("latin-1").strip()
    return None


class AuthApp:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        group = route_group(scope["method"], path)
        try:
            principal = self.guard.authorize(presented_key(scope["headers"]), group, f"{scope['method']} {path}")
        except GatewayError as exc:
            headers = [(b"content-type", b"application/json")]
            if exc.http_status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="tensorgate"'))
            await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
            await send({"type": "http.response.body", "body": orjson.dumps({"error": exc.message})})
            return
        token = PRINCIPAL.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            PRINCIPAL.reset(token)
