"""GrpcLoad: a V2 gRPC load client (a pre-built ModelInferRequest on one grpc.aio channel), used by the load
generators of ``tensorgate bench`` and bench/; it depends on no tool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import grpc

from gateway.grpc.protos import service_pb2, service_pb2_grpc

GRPC_MESSAGE_BYTES = 256 * 1024 * 1024
BACKOFF_S = 0.01  # after UNAVAILABLE, so a dead server does not turn the loop into a busy spin
#: one request; returns None on success or the failure's code name
Sender = Callable[[], Awaitable[str | None]]


class InputTensor(Protocol):
    """A tensor already in the V2 raw layout."""

    @property
    def name(self) -> str: ...

    @property
    def datatype(self) -> str: ...

    @property
    def shape(self) -> Sequence[int]: ...

    @property
    def data(self) -> bytes: ...


def grpc_payload(model: str, inputs: Sequence[InputTensor]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for t in inputs:
        request.inputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        request.raw_input_contents.append(t.data)
    return request


class GrpcLoad:
    """One grpc.aio channel (HTTP/2, streams multiplexed) shared by all workers of a run."""

    def __init__(self, target: str, timeout: float = 30.0) -> None:
        options = [
            ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
        ]
        self.channel = grpc.aio.insecure_channel(target, options=options)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.timeout = timeout

    def sender(self, model: str, inputs: Sequence[InputTensor]) -> Sender:
        request = grpc_payload(model, inputs)
        call = self.stub.ModelInfer
        timeout = self.timeout

        async def send() -> str | None:
            try:
                await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(BACKOFF_S)
                return str(exc.code().name)
            return None

        return send

    async def check(self, model: str, inputs: Sequence[InputTensor]) -> list[str]:
        try:
            reply = await self.stub.ModelInfer(grpc_payload(model, inputs), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise RuntimeError(f"gRPC infer on {model!r} failed: {exc.code().name}: {exc.details()}") from None
        return [o.name for o in reply.outputs]

    async def close(self) -> None:
        await self.channel.close()
