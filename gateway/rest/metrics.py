"""GET /metrics: the Prometheus exposition of the one Metrics object."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body = request.app.state.dataplane.metrics.exposition()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
