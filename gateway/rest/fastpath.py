"""InferApp: the V2 infer endpoint as a bare ASGI handler in front of the FastAPI app.

``POST /v2/models/{m}[/versions/{v}]/infer`` is the hot path: it skips FastAPI's routing, middleware stack and
Request objects (about a fifth of the server's CPU per small request) and goes straight from ASGI bytes to the
codec and the DataPlane. Every other path falls through to the FastAPI app.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from gateway.core.dataplane import DataPlane
from gateway.core.errors import GatewayError, InvalidInput
from gateway.core.exchange import ROUTE_KEY_HEADER, VARIANT_HEADER, VARIANT_PARAMETER, Exchange, Origin, request_id
from gateway.core.types import InferRequest, InferResponse
from gateway.lifecycle.model import ModelVersion
from gateway.rest.body import read_body
from gateway.rest.codec import compress, decode_request, encode_response
from gateway.server.settings import Settings

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Reply = tuple[int, list[tuple[bytes, bytes]], bytes]

_JSON = [(b"content-type", b"application/json")]
_ROUTE_KEY = ROUTE_KEY_HEADER.encode()
_VARIANT = VARIANT_HEADER.encode()
_PREFIX = "/v2/models/"
_SUFFIX = "/infer"


def parse_infer_path(path: str) -> tuple[str, str | None] | None:
    """``/v2/models/m/infer`` -> (m, None); ``/v2/models/m/versions/3/infer`` -> (m, "3"); else None."""
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    middle = path[len(_PREFIX) : -len(_SUFFIX)]
    parts = middle.split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


class InferApp:
    def __init__(self, fallback: ASGIApp, dataplane: DataPlane, settings: Settings) -> None:
        self.fallback = fallback
        self.dp = dataplane
        self.limit = settings.max_request_bytes
        self.timeout = settings.body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.fallback(scope, receive, send)
            return
        target = parse_infer_path(scope["path"])
        if target is None:
            await self.fallback(scope, receive, send)
            return
        received = time.perf_counter()
        name, version = target
        origin = Origin(peer=scope.get("client"))
        call = _InferCall(scope, receive, name, version, self.limit, self.timeout, origin)
        try:
            status, headers, body = await self.dp.infer(
                "rest", call.decode, call.encode, name=name, version=version, received=received, origin=origin
            )
        except GatewayError as exc:
            status, headers = exc.http_status, list(_JSON)
            body = orjson.dumps({"error": exc.message, "request_id": exc.request_id})
        headers.append((b"x-request-id", (origin.request_id or "").encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _InferCall:
    """One V2 REST infer request: its decoder and encoder share what the request asked for."""

    __slots__ = ("accept", "binary_default", "limit", "name", "origin", "receive", "scope", "timeout", "version")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        name: str,
        version: str | None,
        limit: int,
        timeout: float,
        origin: Origin,
    ) -> None:
        self.scope, self.receive, self.name, self.version, self.limit = scope, receive, name, version, limit
        self.timeout = timeout
        self.origin = origin
        self.accept: str | None = None
        self.binary_default = False

    async def decode(self, x: Exchange) -> InferRequest:
        header_length = content_encoding = declared = None
        for key, value in self.scope["headers"]:
            if key == b"inference-header-content-length":
                header_length = value.decode("latin-1")
            elif key == b"content-length":
                declared = value.decode("latin-1")
            elif key == b"content-encoding":
                content_encoding = value.decode("latin-1")
            elif key == b"accept-encoding":
                self.accept = value.decode("latin-1")
            elif key == b"x-request-id":
                self.origin.request_id = request_id(value.decode("latin-1"))
            elif key == b"traceparent":
                self.origin.traceparent = value.decode("latin-1")
            elif key == b"tracestate":
                self.origin.tracestate = value.decode("latin-1")
            elif key == _ROUTE_KEY:
                x.key = self.origin.route_key = value.decode("latin-1")
        body = await read_body(self.receive, declared, content_encoding, self.limit, self.timeout)
        self.origin.request_bytes = len(body)
        raw_input = raw_input_spec(x.resolve(self.name, self.version)) if header_length == "0" else None
        request = decode_request(body, header_length, self.name, self.version, raw_input)
        self.binary_default = bool(request.parameters.get("binary_data_output", False))
        return request

    def encode(self, response: InferResponse) -> Reply:
        payload, json_length = encode_response(response, self.binary_default)
        if json_length is None:
            headers = [(b"content-type", b"application/json")]
        else:
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(json_length).encode()),
            ]
        variant = response.parameters.get(VARIANT_PARAMETER)
        if variant:
            headers.append((_VARIANT, str(variant).encode()))
        if self.accept:
            payload, encoding = compress(payload, self.accept)
            if encoding:
                headers.append((b"content-encoding", encoding.encode()))
        self.origin.response_bytes = len(payload)
        return 200, headers, payload


def raw_input_spec(model: ModelVersion) -> tuple[str, str, list[int]]:
    """A body of raw bytes (binary extension with an empty JSON header) is the model's one input."""
    inputs = model.signature_for().inputs
    if len(inputs) != 1:
        raise InvalidInput(f"a raw binary request needs a model with one input; {model.name!r} has {len(inputs)}")
    spec = inputs[0]
    return spec.name, spec.datatype, [1 if d == -1 else int(d) for d in spec.shape]
