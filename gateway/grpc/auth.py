"""AuthInterceptor: the gRPC adapter of gateway.core.auth — names each method's endpoint group, checks the key in
the ``authorization: Bearer <key>`` (or ``x-api-key``) metadata and aborts with UNAUTHENTICATED /
PERMISSION_DENIED / RESOURCE_EXHAUSTED from the one error table; the principal is set for the call's task."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.core.auth import PRINCIPAL, Guard
from gateway.core.errors import GatewayError
from gateway.grpc.calls import wrap
from gateway.grpc.status import abort

_V2 = "/inference.GRPCInferenceService/"
GROUPS: dict[str, str] = {
    _V2 + "ServerLive": "health",
    _V2 + "ServerReady": "health",
    _V2 + "ModelReady": "health",
    _V2 + "ModelInfer": "infer",
    _V2 + "ModelStreamInfer": "infer",
    _V2 + "RepositoryModelLoad": "admin",
    _V2 + "RepositoryModelUnload": "admin",
    _V2 + "SystemSharedMemoryRegister": "admin",
    _V2 + "SystemSharedMemoryUnregister": "admin",
    _V2 + "CudaSharedMemoryRegister": "admin",
    _V2 + "CudaSharedMemoryUnregister": "admin",
    "/grpc.health.v1.Health/Check": "health",
    "/grpc.health.v1.Health/Watch": "health",
    "/tensorflow.serving.PredictionService/Predict": "infer",
    "/tensorflow.serving.PredictionService/Classify": "infer",
    "/tensorflow.serving.PredictionService/Regress": "infer",
    "/tensorflow.serving.PredictionService/MultiInference": "infer",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest": "admin",
}


def method_group(method: str) -> str:
    """The endpoint group of a gRPC method; every other method (metadata, statistics, reflection) is read."""
    return GROUPS.get(method, "read")


def presented_key(metadata: Any) -> str | None:
    for name, value in metadata or ():
        if name == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value:
            return (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # per method: handlers do not change between calls

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler]], handler_call_details: Any
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        group = method_group(method)
        guard = self.guard

        async def before(context: Any) -> None:
            try:
                principal = guard.authorize(presented_key(context.invocation_metadata()), group, method)
            except GatewayError as exc:
                await abort(context, exc)
            PRINCIPAL.set(principal)  # the call's own task: its context ends with it

        wrapped = self._wrapped[method] = wrap(handler, before)
        return wrapped
