"""TFServingServicer: PredictionService and ModelService as thin adapters over the DataPlane (imports TensorFlow's
generated protos; loaded on the first TF Serving gRPC call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from gateway.core.dataplane import DataPlane, Decode
from gateway.core.errors import InvalidInput, Unsupported
from gateway.core.exchange import Exchange
from gateway.core.tfserving import check_signature, version_state
from gateway.core.types import InferRequest, InferResponse, RequestedOutput, Tensor
from gateway.grpc import tfserving_codec as codec
from gateway.grpc.origin import origin_of, trailers, variant_of
from gateway.grpc.status import deadline_of
from runtimes.base import CLASSIFY_METHOD, REGRESS_METHOD

T = TypeVar("T")


class TFServingServicer:
    """Each method takes and returns serialized messages (the generic handler does no (de)serialization)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    async def _infer(
        self, context: Any, decode: Decode, encode: Callable[[InferResponse], T], raw: bytes | None = None
    ) -> T:
        received = time.perf_counter()
        origin = origin_of(context)
        origin.request_bytes = len(raw) if raw is not None else 0
        variant: str | None = None

        def sized(response: InferResponse) -> T:
            nonlocal variant
            variant = variant_of(response)
            result = encode(response)
            if isinstance(result, bytes):
                origin.response_bytes = len(result)
            return result

        result = await self.dp.infer("tfs_grpc", decode, sized, received=received, origin=origin)
        trailers(context, origin.request_id, variant)
        return result

    @staticmethod
    def _request(
        x: Exchange,
        context: Any,
        target: codec.ModelTarget,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        method: str | None = None,
    ) -> InferRequest:
        model = x.resolve(target.name, target.version, target.label)
        signature = model.signature_for(target.signature)
        if method is not None:
            inputs = {check_signature(signature, method): next(iter(inputs.values()))}
        return InferRequest(
            model=model.name,
            version=str(model.version),
            inputs=[Tensor(n, a) for n, a in inputs.items()],
            outputs=[RequestedOutput(n) for n in outputs] if outputs else None,
            signature=signature.name,
            deadline=deadline_of(context),
        )

    async def Predict(self, raw: bytes, context: Any) -> bytes:
        async def decode(x: Exchange) -> InferRequest:
            target, inputs, wanted = codec.decode_predict(parse(predict_pb2.PredictRequest, raw))
            return self._request(x, context, target, inputs, wanted)

        def encode(r: InferResponse) -> bytes:
            outputs = {o.name: o.data for o in r.outputs}
            return codec.encode_predict(outputs, r.model, int(r.version), r.signature).SerializeToString()  # type: ignore[no-any-return]

        return await self._infer(context, decode, encode, raw)

    async def _examples(self, raw: bytes, context: Any, classify: bool) -> bytes:
        kind = classification_pb2.ClassificationRequest if classify else regression_pb2.RegressionRequest
        what = "ClassificationRequest" if classify else "RegressionRequest"
        build = codec.classification_response if classify else codec.regression_response
        count = 0

        async def decode(x: Exchange) -> InferRequest:
            nonlocal count
            request = parse(kind, raw)
            target = codec.model_target(request.model_spec)
            examples = codec.examples_from_input(request.input, what)
            count = len(examples)
            method = CLASSIFY_METHOD if classify else REGRESS_METHOD
            return self._request(x, context, target, {"inputs": examples}, method=method)

        def encode(r: InferResponse) -> bytes:
            outputs = {o.name: o.data for o in r.outputs}
            return build(outputs, count, r.model, int(r.version), r.signature).SerializeToString()  # type: ignore[no-any-return]

        return await self._infer(context, decode, encode, raw)

    async def Classify(self, raw: bytes, context: Any) -> bytes:
        return await self._examples(raw, context, classify=True)

    async def Regress(self, raw: bytes, context: Any) -> bytes:
        return await self._examples(raw, context, classify=False)

    async def MultiInference(self, raw: bytes, context: Any) -> bytes:
        """Each task is one request through the data plane. A request malformed as a whole (bytes that do not
        decode, no tasks, tasks naming different models) goes through it once too, so that it is counted."""
        whole = _MultiInference(raw)
        response = inference_pb2.MultiInferenceResponse()
        for index in range(max(whole.tasks(), 1)):  # tasks() raises for a malformed request: decode refuses it

            async def decode(x: Exchange, i: int = index) -> InferRequest:
                request, examples = whole.parsed()
                task = request.tasks[i]
                if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                    raise InvalidInput(f"Unsupported signature method_name: {task.method_name}")
                target = codec.model_target(task.model_spec)
                return self._request(x, context, target, {"inputs": examples}, method=task.method_name)

            result = await self._infer(context, decode, lambda r: r, raw)
            request, examples = whole.parsed()
            outputs = {o.name: o.data for o in result.outputs}
            entry = response.results.add()
            entry.model_spec.CopyFrom(codec.model_spec(result.model, int(result.version), result.signature))
            if request.tasks[index].method_name == CLASSIFY_METHOD:
                entry.classification_result.CopyFrom(codec.classification_result(outputs, len(examples)))
            else:
                entry.regression_result.CopyFrom(codec.regression_result(outputs, len(examples)))
        return response.SerializeToString()  # type: ignore[no-any-return]

    async def GetModelMetadata(self, raw: bytes, context: Any) -> bytes:
        request = parse(get_model_metadata_pb2.GetModelMetadataRequest, raw)
        codec.check_metadata_fields(list(request.metadata_field))
        target = codec.model_target(request.model_spec)
        model, signatures = self.dp.signatures(target.name, target.version, target.label)
        return codec.metadata_response(target.name, model.version, signatures).SerializeToString()  # type: ignore[no-any-return]

    async def GetModelStatus(self, raw: bytes, context: Any) -> bytes:
        request = parse(get_model_status_pb2.GetModelStatusRequest, raw)
        target = codec.model_target(request.model_spec)
        rows = self.dp.version_status(target.name, target.version, target.label)
        response = codec.status_response([(v, version_state(s), reason) for v, s, reason in rows])
        return response.SerializeToString()  # type: ignore[no-any-return]

    async def HandleReloadConfigRequest(self, raw: bytes, context: Any) -> bytes:
        raise Unsupported("HandleReloadConfigRequest is not supported: tensorgate follows its model store instead")


class _MultiInference:
    """A MultiInferenceRequest parsed and checked once, on first use (inside the data plane's call)."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._parsed: tuple[Any, np.ndarray] | None = None

    def tasks(self) -> int:
        """How many tasks, or 0 when the request is malformed (its first decode will say why)."""
        try:
            return len(self.parsed()[0].tasks)
        except InvalidInput:
            return 0

    def parsed(self) -> tuple[Any, np.ndarray]:
        if self._parsed is None:
            request = parse(inference_pb2.MultiInferenceRequest, self.raw)
            if not request.tasks:
                raise InvalidInput("MultiInferenceRequest has no tasks")
            names = {t.model_spec.name for t in request.tasks}
            if len(names) != 1:
                raise InvalidInput(
                    f"all tasks of a MultiInferenceRequest must name the same model, got {sorted(names)}"
                )
            self._parsed = (request, codec.examples_from_input(request.input, "MultiInferenceRequest"))
        return self._parsed


def parse(kind: Any, raw: bytes) -> Any:
    """A request message from its bytes; bytes that do not decode are the client's mistake."""
    try:
        return kind.FromString(raw)
    except DecodeError as exc:
        raise InvalidInput(f"the request is not a valid {kind.DESCRIPTOR.full_name}: {exc}") from None
