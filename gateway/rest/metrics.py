"""GET /metrics: the exposition of the one Metrics object, rendered in a worker thread (never on the event loop
that serves inference), in OpenMetrics when the scraper asks for it (exemplars), gzipped when it accepts gzip."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.telemetry.exposition import content_type, encode_body, wants_openmetrics

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    openmetrics = wants_openmetrics(request.headers.get("accept"))
    gzip = "gzip" in request.headers.get("accept-encoding", "")
    body, encoding = await asyncio.to_thread(encode_body, request.app.state.dataplane.metrics, openmetrics, gzip)
    headers = {"content-encoding": encoding} if encoding else None
    return Response(body, media_type=content_type(openmetrics), headers=headers)
