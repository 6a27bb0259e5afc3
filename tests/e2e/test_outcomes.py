"""Outcome parity: the same good and bad requests through all five front ends (V2 REST, V2 gRPC unary, V2 gRPC
stream, TF Serving REST, TF Serving gRPC) are each counted exactly once in ``tensorgate_requests_total``, under
the right labels and code — requests refused while decoding and requests for unknown models included."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.serving import ServerProcess

X = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
Key = tuple[tuple[str, str], ...]
#: (model, version, runtime) labels of the cases: dense's latest version, a known model's undecodable request,
#: and names the server does not know
DENSE = ("dense", "2", "onnx")
UNKNOWN = ("_unknown", "", "")


def _counts(server: ServerProcess) -> dict[Key, float]:
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tensorgate_requests_total":
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _counted(server: ServerProcess, send: Callable[[], str]) -> tuple[str, dict[Key, float]]:
    """Send one request; the code the client saw and every counter that moved (with how much)."""
    before = _counts(server)
    seen = send()
    after = _counts(server)
    moved = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    return seen, moved


def _key(labels: tuple[str, str, str], protocol: str, code: str) -> Key:
    model, version, runtime = labels
    values = {"model": model, "version": version, "runtime": runtime, "protocol": protocol, "code": code}
    return tuple(sorted(values.items()))


# -- the five front ends: each sends a case and returns the code its client saw ----------------------------------
HTTP_CODES = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 503: "UNAVAILABLE"}


def _v2_rest(server: ServerProcess, model: str, body: bytes) -> str:
    response = httpx.post(f"{server.http_url}/v2/models/{model}/infer", content=body, timeout=10)
    return HTTP_CODES[response.status_code]


def _v2_body(x: np.ndarray, datatype: str = "FP32") -> bytes:
    import orjson

    return orjson.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}]}
    )


def _v2_message(model: str, x: np.ndarray, datatype: str = "FP32", raw: bytes | None = None) -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype=datatype, shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes() if raw is None else raw)
    return request


def _v2_grpc(server: ServerProcess, message: Any) -> str:
    with grpc.insecure_channel(server.grpc) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=10)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return "OK"


def _v2_stream(server: ServerProcess, model: str, x: np.ndarray, datatype: str = "FP32", short: bool = False) -> str:
    """One request on tritonclient's bidirectional stream; an error arrives as a stream message."""
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = tg.InferenceServerClient(server.grpc)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        data = np.ascontiguousarray(x[:, :8]) if short else x
        inp = tg.InferInput("x", list(data.shape), datatype)
        inp.set_data_from_numpy(data)
        if short:  # a shape that promises more bytes than are sent: refused while decoding
            inp.set_shape(list(x.shape))
        client.async_stream_infer(model, [inp])
        _result, error = results.get(timeout=10)
    finally:
        client.stop_stream()
        client.close()
    if error is None:
        return "OK"
    assert isinstance(error, InferenceServerException)
    text = str(error)
    for code, words in (
        ("NOT_FOUND", ("is not found",)),
        ("UNAVAILABLE", ("not at ready state", "no available versions")),
    ):
        if any(w in text for w in words):
            return code
    return "INVALID_ARGUMENT"


def _tfs_rest(server: ServerProcess, model: str, body: bytes) -> str:
    response = httpx.post(f"{server.http_url}/v1/models/{model}:predict", content=body, timeout=10)
    return HTTP_CODES[response.status_code]


def _tfs_grpc(server: ServerProcess, raw: bytes) -> str:
    with grpc.insecure_channel(server.grpc) as channel:
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        try:
            reply = predict(raw, timeout=30)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    predict_pb2.PredictResponse.FromString(reply)
    return "OK"


def _tfs_message(model: str, x: np.ndarray, dtype: int = 1) -> bytes:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in x.shape]
    tensor = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))
    tensor.tensor_content = x.astype(np.float32 if dtype == 1 else np.int32).tobytes()
    request.inputs["x"].CopyFrom(tensor)
    return bytes(request.SerializeToString())


# -- the cases --------------------------------------------------------------------------------------------------
Send = Callable[[ServerProcess], str]
X_INT = X.astype(np.int32)
CASES: dict[str, dict[str, tuple[Send, tuple[str, str, str], str]]] = {
    "good": {
        "rest": (lambda s: _v2_rest(s, "dense", _v2_body(X)), DENSE, "OK"),
        "grpc": (lambda s: _v2_grpc(s, _v2_message("dense", X)), DENSE, "OK"),
        "grpc stream": (lambda s: _v2_stream(s, "dense", X), DENSE, "OK"),
        "tfs_rest": (lambda s: _tfs_rest(s, "dense", b'{"instances": %s}' % str(X.tolist()).encode()), DENSE, "OK"),
        "tfs_grpc": (lambda s: _tfs_grpc(s, _tfs_message("dense", X)), DENSE, "OK"),
    },
    "unknown model": {
        "rest": (lambda s: _v2_rest(s, "nope", _v2_body(X)), UNKNOWN, "NOT_FOUND"),
        "grpc": (lambda s: _v2_grpc(s, _v2_message("nope", X)), UNKNOWN, "NOT_FOUND"),
        "grpc stream": (lambda s: _v2_stream(s, "nope", X), UNKNOWN, "NOT_FOUND"),
        "tfs_rest": (lambda s: _tfs_rest(s, "nope", b'{"instances": [[1.0]]}'), UNKNOWN, "NOT_FOUND"),
        "tfs_grpc": (lambda s: _tfs_grpc(s, _tfs_message("nope", X)), UNKNOWN, "NOT_FOUND"),
    },
    "wrong datatype": {
        "rest": (lambda s: _v2_rest(s, "dense", _v2_body(X_INT, "INT32")), DENSE, "INVALID_ARGUMENT"),
        "grpc": (lambda s: _v2_grpc(s, _v2_message("dense", X_INT, "INT32")), DENSE, "INVALID_ARGUMENT"),
        "grpc stream": (lambda s: _v2_stream(s, "dense", X_INT, "INT32"), DENSE, "INVALID_ARGUMENT"),
        "tfs_rest": (lambda s: _tfs_rest(s, "dense", b'{"instances": [["a", "b"]]}'), DENSE, "INVALID_ARGUMENT"),
        "tfs_grpc": (lambda s: _tfs_grpc(s, _tfs_message("dense", X, dtype=3)), DENSE, "INVALID_ARGUMENT"),
    },
    "refused while decoding": {
        "rest": (lambda s: _v2_rest(s, "dense", b"{not json"), DENSE, "INVALID_ARGUMENT"),
        "grpc": (lambda s: _v2_grpc(s, _v2_message("dense", X, raw=b"\x00" * 7)), DENSE, "INVALID_ARGUMENT"),
        "grpc stream": (lambda s: _v2_stream(s, "dense", X, short=True), DENSE, "INVALID_ARGUMENT"),
        "tfs_rest": (lambda s: _tfs_rest(s, "dense", b"{not json"), DENSE, "INVALID_ARGUMENT"),
        # bytes that are no PredictRequest name no model: counted once, under the unknown series
        "tfs_grpc": (lambda s: _tfs_grpc(s, b"\xff\xff\xff"), UNKNOWN, "INVALID_ARGUMENT"),
    },
}
PROTOCOL = {"rest": "rest", "grpc": "grpc", "grpc stream": "grpc", "tfs_rest": "tfs_rest", "tfs_grpc": "tfs_grpc"}


@pytest.fixture(scope="module")
def warm(server: ServerProcess) -> Iterator[ServerProcess]:
    with grpc.insecure_channel(server.grpc) as channel:  # TF Serving's protos load on the first such call
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(predict_pb2.PredictRequest.FromString(_tfs_message("dense", X)), timeout=120)
    yield server


@pytest.mark.parametrize("front_end", list(PROTOCOL))
@pytest.mark.parametrize("case", list(CASES))
def test_each_request_is_counted_once_with_its_code(warm: ServerProcess, case: str, front_end: str) -> None:
    send, labels, code = CASES[case][front_end]
    seen, moved = _counted(warm, lambda: send(warm))
    assert seen == code, f"{front_end}: the client saw {seen}, expected {code}"
    assert moved == {_key(labels, PROTOCOL[front_end], code): 1.0}, f"{front_end} {case}: counters moved {moved}"
