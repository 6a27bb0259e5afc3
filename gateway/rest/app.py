"""create_app: the HTTP application — the infer fast path, then FastAPI with the V2, TF Serving and /metrics
routes and the error handlers."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.core.auth import Guard
from gateway.core.dataplane import DataPlane
from gateway.core.errors import GatewayError
from gateway.core.tfserving import error_message
from gateway.rest import metrics as metrics_routes
from gateway.rest import openapi, shared_memory, tfserving, v2
from gateway.rest.auth import ASGIApp, AuthApp
from gateway.rest.fastpath import InferApp
from gateway.rest.responses import error_response
from gateway.server.settings import Settings


def create_app(dataplane: DataPlane, settings: Settings, guard: Guard | None = None) -> ASGIApp:
    """The HTTP application: authentication (when keys are configured), then the infer fast path in front of the
    FastAPI routes."""
    app = InferApp(create_routes(dataplane, settings), dataplane, settings)
    return AuthApp(app, guard) if guard is not None and guard.enabled else app


def create_routes(dataplane: DataPlane, settings: Settings) -> FastAPI:
    app = FastAPI(title="tensorgate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dataplane = dataplane
    app.state.settings = settings
    app.include_router(v2.router)
    app.include_router(shared_memory.router)
    app.include_router(tfserving.router)
    app.include_router(metrics_routes.router)
    spec = orjson.dumps(openapi.document(dataplane.info.version))

    @app.get("/openapi.json", include_in_schema=False)
    async def _openapi() -> Response:
        return Response(spec, media_type="application/json")

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        tfserving = request.url.path.startswith("/v1/")  # TF Serving's wording where it has one
        message = error_message(exc) if tfserving else exc.message
        response = error_response(message, exc.http_status)  # V2 and TF Serving share the one table
        if exc.request_id is not None:
            response.headers["x-request-id"] = exc.request_id
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        response = error_response(message, exc.status_code)
        response.headers.update(exc.headers or {})  # 405's Allow
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(f"invalid request: {exc.errors()}", 400)

    return app
