"""TFServingServicer: PredictionService and ModelService as thin adapters over the DataPlane (imports TensorFlow's
generated protos; loaded on the first TF Serving gRPC call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from gateway.dataplane import DataPlane
from gateway.errors import InvalidInput, Unsupported
from gateway.grpc import tfserving_codec as codec
from gateway.grpc.status import deadline_of
from gateway.tfserving_results import check_signature, version_state
from gateway.types import InferRequest, InferResponse, RequestedOutput, Tensor
from runtimes.base import CLASSIFY_METHOD, REGRESS_METHOD


class TFServingServicer:
    """Each method takes and returns serialized messages (the generic handler does no (de)serialization)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dp = dataplane

    async def _infer(
        self,
        target: codec.ModelTarget,
        inputs: dict[str, np.ndarray],
        signature_name: str | None,
        context: Any,
        encode: Callable[[InferResponse, int, str], Any],
        outputs: list[str] | None = None,
        method: str | None = None,
    ) -> Any:
        received = time.perf_counter()
        model = self.dp.model(target.name, target.version, target.label)
        signature = self.dp.signature(model, signature_name)
        if method is not None:
            input_name = check_signature(signature, method)
            inputs = {input_name: next(iter(inputs.values()))}
        req = InferRequest(
            model=target.name,
            version=str(model.version),
            inputs=[Tensor(n, a) for n, a in inputs.items()],
            outputs=[RequestedOutput(n) for n in outputs] if outputs else None,
            signature=signature.name,
            protocol="tfs_grpc",
            deadline=deadline_of(context),
            received=received,
        )
        return await self.dp.infer(req, lambda r: encode(r, model.version, signature.name))

    async def Predict(self, raw: bytes, context: Any) -> bytes:
        request = predict_pb2.PredictRequest.FromString(raw)
        target, inputs, wanted = codec.decode_predict(request)

        def encode(r: InferResponse, version: int, sig: str) -> Any:
            return codec.encode_predict({o.name: o.data for o in r.outputs}, target.name, version, sig)

        response = await self._infer(target, inputs, target.signature, context, encode, wanted)
        return response.SerializeToString()  # type: ignore[no-any-return]

    async def _examples(self, raw: bytes, context: Any, classify: bool) -> bytes:
        kind = classification_pb2.ClassificationRequest if classify else regression_pb2.RegressionRequest
        request = kind.FromString(raw)
        target = codec.model_target(request.model_spec)
        what = "ClassificationRequest" if classify else "RegressionRequest"
        examples = codec.examples_from_input(request.input, what)
        build = codec.classification_response if classify else codec.regression_response

        def encode(r: InferResponse, version: int, sig: str) -> Any:
            return build({o.name: o.data for o in r.outputs}, len(examples), target.name, version, sig)

        method = CLASSIFY_METHOD if classify else REGRESS_METHOD
        response = await self._infer(target, {"inputs": examples}, target.signature, context, encode, method=method)
        return response.SerializeToString()  # type: ignore[no-any-return]

    async def Classify(self, raw: bytes, context: Any) -> bytes:
        return await self._examples(raw, context, classify=True)

    async def Regress(self, raw: bytes, context: Any) -> bytes:
        return await self._examples(raw, context, classify=False)

    async def MultiInference(self, raw: bytes, context: Any) -> bytes:
        request = inference_pb2.MultiInferenceRequest.FromString(raw)
        if not request.tasks:
            raise InvalidInput("MultiInferenceRequest has no tasks")
        names = {t.model_spec.name for t in request.tasks}
        if len(names) != 1:
            raise InvalidInput(f"all tasks of a MultiInferenceRequest must name the same model, got {sorted(names)}")
        examples = codec.examples_from_input(request.input, "MultiInferenceRequest")
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise InvalidInput(f"Unsupported signature method_name: {task.method_name}")
            classify = task.method_name == CLASSIFY_METHOD
            target = codec.model_target(task.model_spec)

            def keep(r: InferResponse, version: int, sig: str) -> tuple[int, str, dict[str, np.ndarray]]:
                return version, sig, {o.name: o.data for o in r.outputs}

            version, sig, outputs = await self._infer(
                target, {"inputs": examples}, target.signature, context, keep, method=task.method_name
            )
            entry = response.results.add()
            entry.model_spec.CopyFrom(codec.model_spec(target.name, version, sig))
            if classify:
                entry.classification_result.CopyFrom(codec.classification_result(outputs, len(examples)))
            else:
                entry.regression_result.CopyFrom(codec.regression_result(outputs, len(examples)))
        return response.SerializeToString()  # type: ignore[no-any-return]

    async def GetModelMetadata(self, raw: bytes, context: Any) -> bytes:
        request = get_model_metadata_pb2.GetModelMetadataRequest.FromString(raw)
        codec.check_metadata_fields(list(request.metadata_field))
        target = codec.model_target(request.model_spec)
        model, signatures = self.dp.signatures(target.name, target.version, target.label)
        return codec.metadata_response(target.name, model.version, signatures).SerializeToString()  # type: ignore[no-any-return]

    async def GetModelStatus(self, raw: bytes, context: Any) -> bytes:
        request = get_model_status_pb2.GetModelStatusRequest.FromString(raw)
        target = codec.model_target(request.model_spec)
        rows = self.dp.version_status(target.name, target.version, target.label)
        response = codec.status_response([(v, version_state(s), reason) for v, s, reason in rows])
        return response.SerializeToString()  # type: ignore[no-any-return]

    async def HandleReloadConfigRequest(self, raw: bytes, context: Any) -> bytes:
        raise Unsupported("HandleReloadConfigRequest is not supported: tensorgate follows its model store instead")
