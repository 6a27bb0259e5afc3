"""Triton's shared-memory extension over REST: ``/v2/systemsharedmemory[/region/{name}]/{status,register,
unregister}`` over the DataPlane's registry, and ``/v2/cudasharedmemory/...`` answered as a server without CUDA
regions (registering one is 501)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.core.dataplane import DataPlane
from gateway.core.errors import InvalidInput
from gateway.rest.body import request_body
from gateway.rest.responses import json_response

router = APIRouter()
_SYSTEM = "/v2/systemsharedmemory"
_CUDA = "/v2/cudasharedmemory"


def _dp(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


def _ok() -> Response:
    return Response(b"", media_type="application/json")  # Triton answers 200 with an empty body


@router.get(_SYSTEM + "/status")
@router.get(_SYSTEM + "/region/{name}/status")
async def system_status(request: Request, name: str = "") -> Response:
    return json_response(_dp(request).shared_memory_status(name))


@router.post(_SYSTEM + "/region/{name}/register")
async def system_register(request: Request, name: str) -> Response:
    doc = _register_body(await request_body(request))
    if "key" not in doc:
        raise InvalidInput("shared memory register request has no 'key' field")
    if "byte_size" not in doc:
        raise InvalidInput("shared memory register request has no 'byte_size' field")
    await _dp(request).register_shared_memory(name, doc["key"], doc.get("offset", 0), doc["byte_size"])
    return _ok()


@router.post(_SYSTEM + "/unregister")
@router.post(_SYSTEM + "/region/{name}/unregister")
async def system_unregister(request: Request, name: str = "") -> Response:
    await _dp(request).unregister_shared_memory(name)
    return _ok()


@router.get(_CUDA + "/status")
@router.get(_CUDA + "/region/{name}/status")
async def cuda_status(request: Request, name: str = "") -> Response:
    return json_response(_dp(request).cuda_shared_memory_status(name))


@router.post(_CUDA + "/region/{name}/register")
async def cuda_register(request: Request, name: str) -> Response:
    _dp(request).register_cuda_shared_memory(name)
    return _ok()


@router.post(_CUDA + "/unregister")
@router.post(_CUDA + "/region/{name}/unregister")
async def cuda_unregister(request: Request, name: str = "") -> Response:
    _dp(request).unregister_cuda_shared_memory(name)
    return _ok()


def _register_body(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in shared memory register request: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("shared memory register request must be a JSON object {key, offset, byte_size}")
    return doc
