"""Open Inference Protocol (KServe V2) REST endpoints plus the Triton extensions real tools call.

The infer endpoint itself is gateway.rest.fastpath.InferApp, in front of these routes.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.core.dataplane import DataPlane
from gateway.core.errors import InvalidInput, ModelNotReady
from gateway.core.types import ModelMetadata
from gateway.rest.body import request_body
from gateway.rest.responses import json_response

router = APIRouter()


def _dp(request: Request) -> DataPlane:
    dp: DataPlane = request.app.state.dataplane
    return dp


@router.get("/v2/health/live")
async def live(request: Request) -> Response:
    return json_response({"live": _dp(request).live()})


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    ok = _dp(request).ready()
    return json_response({"ready": ok}, 200 if ok else 503)


@router.get("/v2")
async def server_metadata(request: Request) -> Response:
    return json_response(_dp(request).server_metadata())


# Statistics routes come before /v2/models/{name} so "stats" is never read as a model name.
@router.get("/v2/models/stats")
async def all_stats(request: Request) -> Response:
    return json_response({"model_stats": await _dp(request).statistics()})


@router.get("/v2/models/{name}/stats")
@router.get("/v2/models/{name}/versions/{version}/stats")
async def model_stats(request: Request, name: str, version: str | None = None) -> Response:
    return json_response({"model_stats": await _dp(request).statistics(name, version)})


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    return json_response(metadata_json(_dp(request).model_metadata(name, version)))


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    if not _dp(request).model_ready(name, version):  # unknown model -> 404
        raise ModelNotReady.version(name, version) if version else ModelNotReady.no_version(name)
    return json_response({"name": name, "ready": True})


@router.get("/v2/models/{name}/config")
@router.get("/v2/models/{name}/versions/{version}/config")
async def model_config(request: Request, name: str, version: str | None = None) -> Response:
    return json_response(_dp(request).model_config(name, version))


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> Response:
    body = await request_body(request)
    ready_only = bool(_json_object(body).get("ready", False))
    return json_response(_dp(request).repository_index(ready_only))


@router.post("/v2/repository/models/{name}/load")
async def repository_load(request: Request, name: str) -> Response:
    params = _json_object(await request_body(request)).get("parameters") or {}
    await _dp(request).load(name, params if isinstance(params, dict) else None)
    return json_response({})


@router.post("/v2/repository/models/{name}/unload")
async def repository_unload(request: Request, name: str) -> Response:
    await _dp(request).unload(name)
    return json_response({})


def metadata_json(meta: ModelMetadata) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": meta.name,
        "versions": meta.versions,
        "platform": meta.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs],
        "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.outputs],
    }
    if meta.parameters:
        doc["parameters"] = meta.parameters
    return doc


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in request body: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object")
    return doc
