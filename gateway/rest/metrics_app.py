"""A tiny app serving only /metrics, for a dedicated metrics port (Triton's :8002 habit)."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.core.auth import Guard
from gateway.core.dataplane import DataPlane
from gateway.rest import metrics as metrics_routes
from gateway.rest.auth import ASGIApp, AuthApp


def create_metrics_app(dataplane: DataPlane, guard: Guard | None = None) -> ASGIApp:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dataplane = dataplane
    app.include_router(metrics_routes.router)
    return AuthApp(app, guard) if guard is not None and guard.enabled else app
