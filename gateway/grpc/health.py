"""grpc.health.v1.Health: the server ("" or a service name) and each model by name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.core.dataplane import DataPlane

SERVICES = {"", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"}


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    def _status(self, service: str) -> int | None:
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        if service in SERVICES:
            return serving if self.dp.ready() else not_serving
        if self.dp.knows(service):
            return serving if self.dp.model_ready(service) else not_serving
        return None

    async def Check(self, request: Any, context: Any) -> Any:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service or model {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: Any, context: Any) -> AsyncIterator[Any]:
        last = -1
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            await asyncio.sleep(1.0)
