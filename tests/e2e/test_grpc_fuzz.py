"""A gRPC fuzzer, bounded so the suite stays fast: random bytes and mutated valid messages on every method of
every service the server registers (V2, health, reflection, TF Serving) never answer UNKNOWN or INTERNAL — bytes
that do not decode are INVALID_ARGUMENT, decoded nonsense is a client error — and the server keeps serving."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from tritonclient.grpc import service_pb2

from tests.serving import ServerProcess

BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
CASES_PER_METHOD = 24


def _infer_request() -> Any:
    request = service_pb2.ModelInferRequest(model_name="dense", model_version="1", id="f")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 16])
    tensor.contents.fp32_contents.extend(np.zeros(32, np.float32).tolist())
    request.outputs.add(name="y")
    request.parameters["timeout"].int64_param = 1000000
    return request


def _raw_infer_request() -> Any:
    request = service_pb2.ModelInferRequest(model_name="two_io")
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones(4, np.float32).tobytes())
    return request


def _tfs_examples() -> dict[str, bytes]:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        inference_pb2,
        predict_pb2,
        regression_pb2,
    )

    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "dense"
    predict.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 1}, {"size": 16}]),
            float_val=[0.5] * 16,
        )
    )
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "dense"
    classify.input.example_list.examples.add().features.feature["x"].float_list.value.extend([1.0] * 16)
    regress = regression_pb2.RegressionRequest()
    regress.CopyFrom(regression_pb2.RegressionRequest(model_spec=classify.model_spec, input=classify.input))
    multi = inference_pb2.MultiInferenceRequest(input=classify.input)
    multi.tasks.add(model_spec=classify.model_spec, method_name="tensorflow/serving/classify")
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "dense"
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "dense"
    huge = predict_pb2.PredictRequest()
    huge.CopyFrom(predict)
    huge.inputs["x"].tensor_shape.dim[0].size = 1 << 60  # a dim no one can allocate
    return {
        "/tensorflow.serving.PredictionService/Predict": predict.SerializeToString(),
        "/tensorflow.serving.PredictionService/Classify": classify.SerializeToString(),
        "/tensorflow.serving.PredictionService/Regress": regress.SerializeToString(),
        "/tensorflow.serving.PredictionService/MultiInference": multi.SerializeToString(),
        "/tensorflow.serving.PredictionService/GetModelMetadata": metadata.SerializeToString(),
        "/tensorflow.serving.ModelService/GetModelStatus": status.SerializeToString(),
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest": b"",
        "huge-dim": huge.SerializeToString(),
    }


def _v2_examples() -> dict[str, bytes]:
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    examples: dict[str, bytes] = {}
    for method in service.methods:
        name = f"/{service.full_name}/{method.name}"
        message = service_pb2.__dict__[method.input_type.name]()
        for field in ("name", "model_name"):
            if field in message.DESCRIPTOR.fields_by_name:
                setattr(message, field, "dense")
        examples[name] = message.SerializeToString()
    examples["/inference.GRPCInferenceService/ModelInfer"] = _infer_request().SerializeToString()
    examples["raw-infer"] = _raw_infer_request().SerializeToString()
    return examples


STREAMING = {
    "/inference.GRPCInferenceService/ModelStreamInfer": "stream_stream",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "stream_stream",
    "/grpc.health.v1.Health/Watch": "unary_stream",
}


def _mutations(seed: bytes, rng: random.Random) -> Iterator[bytes]:
    yield b""
    yield seed
    for _ in range(CASES_PER_METHOD // 2):
        yield rng.randbytes(rng.randint(1, 64))
    for _ in range(CASES_PER_METHOD // 2):
        data = bytearray(seed or b"\x0a\x05dense")
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.5:
                data[i] ^= 1 << rng.randrange(8)
            elif choice < 0.8:
                data[i] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
            else:
                data[i:i] = rng.randbytes(rng.randint(1, 8))
        yield bytes(data)


def _call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    kind = STREAMING.get(method, "unary_unary")
    try:
        if kind == "unary_unary":
            channel.unary_unary(method)(payload, timeout=10)
        elif kind == "unary_stream":
            for _ in channel.unary_stream(method)(payload, timeout=0.5):
                pass
        else:
            for _ in channel.stream_stream(method)(iter([payload, payload]), timeout=10):
                pass
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _methods() -> dict[str, bytes]:
    examples = {**_v2_examples(), **_tfs_examples()}
    examples["/grpc.health.v1.Health/Check"] = health_pb2.HealthCheckRequest(service="dense").SerializeToString()
    examples["/grpc.health.v1.Health/Watch"] = health_pb2.HealthCheckRequest(service="ghost").SerializeToString()
    examples["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"] = (
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService")
    ).SerializeToString()
    return examples


def test_random_and_mutated_messages_never_answer_unknown_or_internal(server: ServerProcess) -> None:
    rng = random.Random(16)
    failures: list[str] = []
    seen: dict[str, set[str]] = {}
    with grpc.insecure_channel(server.grpc) as channel:
        for label, seed in _methods().items():
            method = {"raw-infer": "/inference.GRPCInferenceService/ModelInfer",
                      "huge-dim": "/tensorflow.serving.PredictionService/Predict"}.get(label, label)  # fmt: skip
            for payload in _mutations(seed, rng):
                code = _call(channel, method, payload)
                seen.setdefault(label, set()).add(code.name)
                if code in BAD:
                    failures.append(f"{label} {payload[:40]!r}: {code.name}")
        health: Callable[..., Any] = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert health(health_pb2.HealthCheckRequest().SerializeToString(), timeout=5) is not None  # still up
    assert not failures, "\n".join(failures[:20])
    # the fuzzer reached past decoding: valid seeds were answered OK, garbage INVALID_ARGUMENT
    assert "OK" in seen["/inference.GRPCInferenceService/ModelInfer"]
    assert "INVALID_ARGUMENT" in seen["/inference.GRPCInferenceService/ModelInfer"]
    assert "OK" in seen["/tensorflow.serving.PredictionService/Predict"]
    assert seen["huge-dim"] >= {"INVALID_ARGUMENT"}


@pytest.mark.parametrize("method", ["/inference.GRPCInferenceService/ModelMetadata",
                                    "/tensorflow.serving.PredictionService/Predict"])  # fmt: skip
def test_bytes_that_do_not_decode_are_invalid_argument_naming_the_message(server: ServerProcess, method: str) -> None:
    with grpc.insecure_channel(server.grpc) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method)(b"\xff\xff\xff", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid" in caught.value.details()
