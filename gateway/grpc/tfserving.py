"""TF Serving's gRPC services on the gRPC port, registered without importing TensorFlow.

``TFServingHandler`` is a generic handler that answers ``/tensorflow.serving.*`` methods. The generated modules of
``tensorflow-serving-api`` import TensorFlow, so they are loaded (in a thread, once) on the first such call: a
deployment that never receives a TF Serving gRPC call never imports TensorFlow, and one without TensorFlow installed
answers UNIMPLEMENTED with the reason.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.core.dataplane import DataPlane
from gateway.core.errors import GatewayError, Unsupported
from gateway.core.tfserving import error_message
from gateway.grpc.status import abort

log = logging.getLogger("tensorgate.grpc.tfserving")

METHODS = {
    "/tensorflow.serving.PredictionService/Predict": "Predict",
    "/tensorflow.serving.PredictionService/Classify": "Classify",
    "/tensorflow.serving.PredictionService/Regress": "Regress",
    "/tensorflow.serving.PredictionService/MultiInference": "MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata": "GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus": "GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest": "HandleReloadConfigRequest",
}
Behavior = Callable[[bytes, Any], Awaitable[bytes]]


class TFServingHandler(grpc.GenericRpcHandler):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane
        self._servicer: Any = None
        self._error: str | None = None
        self._lock: asyncio.Lock | None = None

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        name = METHODS.get(handler_call_details.method)
        if name is None:
            return None
        return grpc.unary_unary_rpc_method_handler(self._behavior(name))

    def _behavior(self, name: str) -> Behavior:
        async def behavior(raw: bytes, context: Any) -> bytes:
            servicer = await self._load()
            try:
                if servicer is None:
                    raise Unsupported(f"the TF Serving gRPC API is not available: {self._error}")
                method: Callable[[bytes, Any], Awaitable[bytes]] = getattr(servicer, name)
                return await method(raw, context)
            except GatewayError as exc:
                await abort(context, exc, error_message(exc))  # TF Serving's wording where it has one

        return behavior

    async def _load(self) -> Any:
        if self._servicer is not None or self._error is not None:
            return self._servicer
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._servicer is None and self._error is None:
                loop = asyncio.get_running_loop()
                try:
                    module = await loop.run_in_executor(
                        None, importlib.import_module, "gateway.grpc.tfserving_servicer"
                    )
                    self._servicer = module.TFServingServicer(self.dp)
                except ImportError as exc:
                    self._error = f"{exc} (install tensorgate[tensorflow])"
                    log.warning("TF Serving gRPC API unavailable: %s", self._error)
        return self._servicer
