"""inference.GRPCInferenceService: the V2 gRPC servicer, a thin adapter over the DataPlane."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from gateway.core.auth import Guard
from gateway.core.dataplane import DataPlane
from gateway.core.errors import GatewayError, ModelNotFound, ModelNotReady
from gateway.core.exchange import Exchange, Origin, request_id
from gateway.core.types import InferRequest, InferResponse
from gateway.grpc.auth import authorize
from gateway.grpc.codec import decode_request, encode_response, set_param
from gateway.grpc.decoding import DECODE_ERRORS, not_valid
from gateway.grpc.origin import origin_of, trailers, variant_of
from gateway.grpc.protos import model_config_pb2, service_pb2, service_pb2_grpc
from gateway.grpc.status import abort, deadline_of

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
_parse_infer = service_pb2.ModelInferRequest.FromString


def _errors(fn: F) -> F:
    """GatewayError -> the gRPC status from the one error table."""

    @wraps(fn)
    async def wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await fn(self, request, context)
        except GatewayError as exc:
            await abort(context, exc)

    return wrapper  # type: ignore[return-value]


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, dataplane: DataPlane, guard: Guard | None = None) -> None:
        self.dp = dataplane
        self.guard = guard if guard is not None and guard.enabled else None

    @_errors
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=self.dp.live())

    @_errors
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.dp.ready())

    @_errors
    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            ready = self.dp.model_ready(request.name, request.version or None)
        except ModelNotFound:  # Triton answers ready=false for a model it does not know (REST: 404, also not ready)
            ready = False
        return service_pb2.ModelReadyResponse(ready=ready)

    @_errors
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(**self.dp.server_metadata())

    @_errors
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        meta = self.dp.model_metadata(request.name, request.version or None)
        msg = service_pb2.ModelMetadataResponse(name=meta.name, versions=meta.versions, platform=meta.platform)
        for src, dst in ((meta.inputs, msg.inputs), (meta.outputs, msg.outputs)):
            for t in src:
                dst.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        return msg

    @_errors
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        config = self.dp.model_config(request.name, request.version or None)
        proto = json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
        return service_pb2.ModelConfigResponse(config=proto)

    @_errors
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        stats = await self.dp.statistics(request.name or None, request.version or None)
        return json_format.ParseDict(
            {"model_stats": stats}, service_pb2.ModelStatisticsResponse(), ignore_unknown_fields=True
        )

    @_errors
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        msg = service_pb2.RepositoryIndexResponse()
        for row in self.dp.repository_index(request.ready):
            msg.models.add(**row)
        return msg

    @_errors
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        params = {k: v.WhichOneof("parameter_choice") and getattr(v, v.WhichOneof("parameter_choice"))
                  for k, v in request.parameters.items()}  # fmt: skip
        await self.dp.load(request.model_name, params)
        return service_pb2.RepositoryModelLoadResponse()

    @_errors
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self.dp.unload(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    async def ModelInfer(self, raw: bytes, context: Any) -> bytes:
        """The hot path, on raw bytes both ways (registered by ``handlers``): the key checked and the request
        parsed here, with the call's metadata read once, instead of by wrappers around a generated handler."""
        received = time.perf_counter()
        metadata = context.invocation_metadata()
        if self.guard is not None:
            try:
                authorize(self.guard, metadata, "infer", MODEL_INFER)
            except GatewayError as exc:
                await abort(context, exc)
        try:
            request = _parse_infer(raw)
        except DECODE_ERRORS as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, not_valid("inference.ModelInferRequest", exc))
        origin = origin_of(context, metadata)
        origin.request_bytes = len(raw)
        variant: str | None = None

        async def decode(x: Exchange) -> InferRequest:
            return decode_request(request, deadline_of(context))

        def encode(response: InferResponse) -> bytes:
            nonlocal variant
            variant = variant_of(response)
            data: bytes = encode_response(response).SerializeToString()
            origin.response_bytes = len(data)
            return data

        try:
            data = await self.dp.infer(
                "grpc", decode, encode,
                name=request.model_name, version=request.model_version or None, received=received, origin=origin,
            )  # fmt: skip
        except GatewayError as exc:
            await abort(context, exc)
        trailers(context, origin.request_id, variant)
        return data

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """The handlers that replace the generated ones, by full method name."""
        return {MODEL_INFER: grpc.unary_unary_rpc_method_handler(self.ModelInfer)}

    async def ModelStreamInfer(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        stream = origin_of(context)  # the stream's metadata; each request's own ``id`` names it when set
        async for request in request_iterator:
            received = time.perf_counter()
            origin = Origin(request_id(request.id) or stream.request_id, stream.traceparent, stream.tracestate,
                            stream.peer)  # fmt: skip
            origin.route_key = stream.route_key

            async def decode(x: Exchange, request: Any = request, origin: Origin = origin) -> InferRequest:
                origin.request_bytes = request.ByteSize()
                return decode_request(request, deadline_of(context))

            def encode(response: Any, origin: Origin = origin) -> Any:
                message = encode_response(response)
                origin.response_bytes = message.ByteSize()
                return message

            try:
                response = await self.dp.infer(
                    "grpc", decode, encode,
                    name=request.model_name, version=request.model_version or None, received=received, origin=origin,
                )  # fmt: skip
                set_param(response.parameters["triton_final_response"], True)
                yield service_pb2.ModelStreamInferResponse(infer_response=response)
            except GatewayError as exc:
                yield service_pb2.ModelStreamInferResponse(
                    error_message=exc.message,
                    infer_response=service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id),
                )

    @_errors
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        msg = service_pb2.SystemSharedMemoryStatusResponse()
        for row in self.dp.shared_memory_status(request.name):
            status = msg.regions[row["name"]]
            status.name, status.key, status.offset, status.byte_size = (
                row["name"], row["key"], row["offset"], row["byte_size"],
            )  # fmt: skip
        return msg

    @_errors
    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await self.dp.register_shared_memory(request.name, request.key, request.offset, request.byte_size)
        return service_pb2.SystemSharedMemoryRegisterResponse()

    @_errors
    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await self.dp.unregister_shared_memory(request.name)
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    @_errors
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        self.dp.cuda_shared_memory_status(request.name)
        return service_pb2.CudaSharedMemoryStatusResponse()

    @_errors
    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        self.dp.register_cuda_shared_memory(request.name)
        return service_pb2.CudaSharedMemoryRegisterResponse()

    @_errors
    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        self.dp.unregister_cuda_shared_memory(request.name)
        return service_pb2.CudaSharedMemoryUnregisterResponse()


__all__ = ["InferenceServicer", "ModelNotReady"]
