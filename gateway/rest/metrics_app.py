"""A tiny app for a dedicated metrics port (Triton's :8002 habit): /metrics, and the health endpoints so that probes
can reach a plain-HTTP port when the main ports require TLS (or client certificates)."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.core.auth import Guard
from gateway.core.dataplane import DataPlane
from gateway.rest import metrics as metrics_routes
from gateway.rest import v2
from gateway.rest.auth import ASGIApp, AuthApp


def create_metrics_app(dataplane: DataPlane, guard: Guard | None = None) -> ASGIApp:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.dataplane = dataplane
    app.include_router(metrics_routes.router)
    app.add_api_route("/v2/health/live", v2.live, methods=["GET"])
    app.add_api_route("/v2/health/ready", v2.ready, methods=["GET"])
    return AuthApp(app, guard) if guard is not None and guard.enabled else app
