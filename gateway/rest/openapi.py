"""The served OpenAPI document (``GET /openapi.json``): every REST route — V2 health, metadata, config,
statistics, repository and infer (the fast path, which FastAPI does not see), the TF Serving REST API and
/metrics — with request and response schemas, the errors each can answer from the one error table, and the API-key
security schemes (optional: they apply when the server has keys)."""

from __future__ import annotations

from typing import Any

from gateway.core.types import DATATYPES

Doc = dict[str, Any]

ERROR_TEXT = {
    400: "Bad input: the message names the field",
    401: "No API key, or one the server does not know",
    403: "The API key lacks the scope or the model, or the call is refused (repository control, shared memory)",
    404: "No such model, version or label",
    405: "Method not allowed (see the Allow header)",
    408: "The request body did not arrive in time",
    409: "Already exists (a shared memory region of that name)",
    413: "The request body (or its decompressed form) exceeds the limit",
    429: "The model's queue is full, or the API key's rate limit is used up",
    501: "Not implemented by this server",
    503: "The model (or server) is not ready",
    504: "The request's deadline passed",
}
_ERROR = {"$ref": "#/components/schemas/Error"}
_OBJECT = {"type": "object", "additionalProperties": True}
_STRING = {"type": "string"}


def _json(schema: Doc) -> Doc:
    return {"application/json": {"schema": schema}}


def _responses(ok: Doc, *codes: int, text: str = "OK") -> Doc:
    out: Doc = {"200": {"description": text, "content": _json(ok)}}
    for code in (401, 403, 429, *codes):
        out[str(code)] = {"description": ERROR_TEXT[code], "content": _json(_ERROR)}
    return out


def _param(name: str, where: str = "path", example: str | None = None) -> Doc:
    schema: Doc = {"type": "string", "minLength": 1}
    if where == "path":
        schema["pattern"] = "^[^/]+$"
    doc: Doc = {"name": name, "in": where, "required": where == "path", "schema": schema}
    if example is not None:
        doc["example"] = example
    return doc


MODEL = _param("model", example="dense")
VERSION = _param("version", example="1")
LABEL = _param("label", example="stable")


def _op(summary: str, tag: str, responses: Doc, params: list[Doc], body: Doc | None = None) -> Doc:
    op: Doc = {"summary": summary, "tags": [tag], "parameters": params, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


def _v2_paths() -> Doc:
    meta = _op("Model metadata", "V2", _responses({"$ref": "#/components/schemas/ModelMetadata"}, 404, 503), [MODEL])
    meta_v = {**meta, "parameters": [MODEL, VERSION]}
    ready = _op("Whether the model can serve", "V2 health", _responses(_OBJECT, 404, 503), [MODEL])
    config = _op("Model configuration (Triton's ModelConfig)", "V2", _responses(_OBJECT, 404, 503), [MODEL])
    stats = _op("Model statistics", "V2", _responses(_OBJECT, 404), [MODEL])
    infer_body = {"$ref": "#/components/schemas/InferRequest"}
    infer_ok = {"$ref": "#/components/schemas/InferResponse"}
    infer = _op(
        "Inference (JSON; the binary tensor extension is also accepted)",
        "V2",
        _responses(infer_ok, 400, 404, 408, 413, 503, 504),
        [MODEL],
        infer_body,
    )
    infer["description"] = (
        "A body may instead be the binary tensor extension (Inference-Header-Content-Length) and may be "
        "compressed (Content-Encoding: gzip or deflate)."
    )
    control_body = {**_OBJECT, "properties": {"parameters": _OBJECT}}
    control = _op(
        "Repository control (admin key, or --model-control explicit)",
        "V2 repository",
        _responses(_OBJECT, 400, 404),
        [MODEL],
        control_body,
    )
    return {
        "/v2/health/live": {"get": _op("Liveness", "V2 health", {"200": {"description": "live"}}, [])},
        "/v2/health/ready": {
            "get": _op(
                "Readiness: every version the store and policies want is READY",
                "V2 health",
                {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                [],
            )
        },
        "/v2": {"get": _op("Server metadata", "V2", _responses(_OBJECT), [])},
        "/v2/models/stats": {"get": _op("Statistics of every model", "V2", _responses(_OBJECT), [])},
        "/v2/models/{model}": {"get": meta},
        "/v2/models/{model}/versions/{version}": {"get": meta_v},
        "/v2/models/{model}/ready": {"get": ready},
        "/v2/models/{model}/versions/{version}/ready": {"get": {**ready, "parameters": [MODEL, VERSION]}},
        "/v2/models/{model}/config": {"get": config},
        "/v2/models/{model}/versions/{version}/config": {"get": {**config, "parameters": [MODEL, VERSION]}},
        "/v2/models/{model}/stats": {"get": stats},
        "/v2/models/{model}/versions/{version}/stats": {"get": {**stats, "parameters": [MODEL, VERSION]}},
        "/v2/models/{model}/infer": {"post": infer},
        "/v2/models/{model}/versions/{version}/infer": {"post": {**infer, "parameters": [MODEL, VERSION]}},
        "/v2/repository/index": {
            "post": _op(
                "Every model version and its state",
                "V2 repository",
                _responses({"type": "array", "items": _OBJECT}, 400),
                [],
                {**_OBJECT, "properties": {"ready": {"type": "boolean"}}},
            )
        },
        "/v2/repository/models/{model}/load": {"post": control},
        "/v2/repository/models/{model}/unload": {"post": control},
    }


def _shared_memory_paths() -> Doc:
    """Triton's shared-memory extension: system regions (with --allow-client-shm), CUDA regions refused."""
    region = _param("region", example="input_data")
    status_ok = {"type": "array", "items": {"$ref": "#/components/schemas/SharedMemoryRegion"}}
    register_body = {
        "type": "object",
        "required": ["key", "byte_size"],
        "properties": {
            "key": {"type": "string", "example": "/input_simple"},
            "offset": {"type": "integer", "minimum": 0},
            "byte_size": {"type": "integer", "minimum": 1},
        },
    }
    paths: Doc = {}
    for kind, title in (("system", "System"), ("cuda", "CUDA")):
        base = f"/v2/{kind}sharedmemory"
        tag = "V2 shared memory"
        status = _op(f"{title} shared memory regions", tag, _responses(status_ok, 404), [])
        unregister = _op(f"Unregister every {title} shared memory region (admin key)", tag, _responses(_OBJECT), [])
        paths[f"{base}/status"] = {"get": status}
        paths[f"{base}/region/{{region}}/status"] = {"get": {**status, "parameters": [region]}}
        paths[f"{base}/unregister"] = {"post": unregister}
        paths[f"{base}/region/{{region}}/unregister"] = {"post": {**unregister, "parameters": [region]}}
        body = register_body if kind == "system" else _OBJECT
        errors = (400, 409, 501) if kind == "cuda" else (400, 409)
        register = _op(
            f"Register a {title} shared memory region (admin key)", tag, _responses(_OBJECT, *errors), [region], body
        )
        paths[f"{base}/region/{{region}}/register"] = {"post": register}
    return paths


def _tfs_paths() -> Doc:
    out: Doc = {}
    targets = {"": [MODEL], "/versions/{version}": [MODEL, VERSION], "/labels/{label}": [MODEL, LABEL]}
    for suffix, params in targets.items():
        base = "/v1/models/{model}" + suffix
        out[base] = {"get": _op("Version status", "TF Serving", _responses(_OBJECT, 400, 404), params)}
        out[base + "/metadata"] = {"get": _op("Signatures", "TF Serving", _responses(_OBJECT, 400, 404, 503), params)}
        for verb, schema in (
            ("predict", "PredictRequest"),
            ("classify", "ExamplesRequest"),
            ("regress", "ExamplesRequest"),
        ):
            out[f"{base}:{verb}"] = {
                "post": _op(
                    f"TF Serving {verb}",
                    "TF Serving",
                    _responses(_OBJECT, 400, 404, 408, 413, 503, 504),
                    params,
                    {"$ref": f"#/components/schemas/{schema}"},
                )
            }
    return out


def _schemas() -> Doc:
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {"type": "array", "items": {}},
            "parameters": _OBJECT,
        },
    }
    spec = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "SharedMemoryRegion": {
            "type": "object",
            "properties": {
                "name": _STRING,
                "key": _STRING,
                "offset": {"type": "integer"},
                "byte_size": {"type": "integer"},
            },
        },
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": _OBJECT,
                "inputs": {"type": "array", "minItems": 1, "items": tensor},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": _OBJECT},
                    },
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": _OBJECT,
                "outputs": {"type": "array", "items": tensor},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": spec},
                "outputs": {"type": "array", "items": spec},
                "parameters": _OBJECT,
            },
        },
        "PredictRequest": {
            "type": "object",
            "properties": {
                "signature_name": {"type": "string"},
                "instances": {"type": "array", "items": {}},
                "inputs": {},
            },
        },
        "ExamplesRequest": {
            "type": "object",
            "properties": {
                "signature_name": {"type": "string"},
                "context": _OBJECT,
                "examples": {"type": "array", "items": _OBJECT},
            },
        },
    }


def document(version: str) -> Doc:
    paths = {**_v2_paths(), **_shared_memory_paths(), **_tfs_paths()}
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics",
            "tags": ["Metrics"],
            "responses": {
                "200": {"description": "exposition", "content": {"text/plain": {"schema": _STRING}}},
                "401": {"description": ERROR_TEXT[401], "content": _json(_ERROR)},
                "403": {"description": ERROR_TEXT[403], "content": _json(_ERROR)},
            },
        }
    }
    paths["/openapi.json"] = {"get": {"summary": "This document", "tags": ["Meta"], "responses": _responses(_OBJECT)}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tensorgate",
            "version": version,
            "description": "Open Inference Protocol (KServe V2) and TensorFlow Serving REST APIs.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from the keys file"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
        "security": [{}, {"bearer": []}, {"apiKey": []}],
    }
