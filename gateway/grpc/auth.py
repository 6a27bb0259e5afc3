"""guarding: the gRPC adapter of gateway.core.auth — names each method's endpoint group, checks the key in
the ``authorization: Bearer <key>`` (or ``x-api-key``) metadata and aborts with UNAUTHENTICATED /
PERMISSION_DENIED / RESOURCE_EXHAUSTED from the one error table; the principal is set for the call's task."""

from __future__ import annotations

from typing import Any

import grpc

from gateway.core.auth import PRINCIPAL, Guard
from gateway.core.errors import GatewayError
from gateway.grpc.calls import Wrap, wrap
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


def authorize(guard: Guard, metadata: Any, group: str, method: str) -> None:
    """Checks the call's key for ``group`` and sets the principal for the call's task; raises GatewayError."""
    PRINCIPAL.set(guard.authorize(presented_key(metadata), group, method))  # the call's own task: ends with it


def guarding(guard: Guard) -> Wrap:
    """A Wrap checking each call's key for its method's endpoint group before the behaviour runs."""

    def guarded(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        group = method_group(method)

        async def before(context: Any) -> None:
            try:
                authorize(guard, context.invocation_metadata(), group, method)
            except GatewayError as exc:
                await abort(context, exc)

        return wrap(handler, before)

    return guarded
