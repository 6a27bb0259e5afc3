"""One gateway, every protocol, every runtime: TF Serving clients (REST JSON, gRPC stubs from
tensorflow-serving-api) against SavedModels in TF Serving's layout and an ONNX model, and tritonclient against the
SavedModel."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import tritonclient.grpc as tg
import tritonclient.http as th
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.onnx_models import dense_model
from tests.serving import ServerProcess
from tests.tf_models import (
    BYTES_INPUT,
    MLP_INPUT,
    MLP_OUTPUT,
    build_bytes_savedmodel,
    build_classify_regress_savedmodel,
    build_keras_savedmodel,
    random_pixels,
    tf_example,
)


@pytest.fixture(scope="module")
def tf_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tf_store")
    build_keras_savedmodel(root, "keras_mlp")
    (root / "keras_mlp" / "config.yaml").write_text("version_labels: {stable: 1}\n")
    build_classify_regress_savedmodel(root, "half_plus")
    build_bytes_savedmodel(root, "text_ops")
    dense_model(root / "dense" / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def server(tf_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tf_store, tmp_path_factory.mktemp("tfs"), ["--poll-interval", "0"]).start(timeout=180)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc) as ch:
        yield ch


@pytest.fixture(scope="module")
def in_process(tf_store: Path) -> Any:
    return tf.saved_model.load(str(tf_store / "keras_mlp" / "1")).signatures["serving_default"]


def _expected(in_process: Any, x: np.ndarray) -> np.ndarray:
    return in_process(**{MLP_INPUT: tf.constant(x)})[MLP_OUTPUT].numpy()  # type: ignore[no-any-return]


def test_grpc_predict_equals_savedmodel_in_process(channel: grpc.Channel, in_process: Any) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = random_pixels(3)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "keras_mlp"
    request.inputs[MLP_INPUT].CopyFrom(tf.make_tensor_proto(x))
    response = stub.Predict(request, timeout=60)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[MLP_OUTPUT]), _expected(in_process, x), rtol=1e-6)
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    # typed *_val fields, as perf_analyzer sends them, and a version label
    typed = predict_pb2.PredictRequest()
    typed.model_spec.name = "keras_mlp"
    typed.model_spec.version_label = "stable"
    proto = typed.inputs[MLP_INPUT]
    proto.dtype = tf.float32.as_datatype_enum
    proto.tensor_shape.dim.add(size=3)
    proto.tensor_shape.dim.add(size=16)
    proto.float_val.extend(x.reshape(-1).tolist())
    again = stub.Predict(typed, timeout=60)
    np.testing.assert_allclose(tf.make_ndarray(again.outputs[MLP_OUTPUT]), _expected(in_process, x), rtol=1e-6)


def test_grpc_metadata_and_status(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "keras_mlp"
    response = stub.GetModelMetadata(request, timeout=60)
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    sig = defs.signature_def["serving_default"]
    assert sig.inputs[MLP_INPUT].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in sig.inputs[MLP_INPUT].tensor_shape.dim] == [-1, 16]
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=request.model_spec), timeout=60
    )
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]


def test_grpc_classify_regress_multiinference(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    examples = [[1.0, 2.0], [-3.0, 0.5]]

    def fill(input_message: Any) -> None:
        for values in examples:
            example = input_message.example_list.examples.add()
            example.ParseFromString(tf_example(values))

    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "half_plus"
    classify.model_spec.signature_name = "classify"
    fill(classify.input)
    result = stub.Classify(classify, timeout=60).result
    assert len(result.classifications) == 2
    logits = np.array(examples, np.float32) @ np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]], np.float32)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for row, want in zip(result.classifications, expected, strict=True):
        assert [c.label for c in row.classes] == ["neg", "zero", "pos"]
        np.testing.assert_allclose([c.score for c in row.classes], want, rtol=1e-5)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "half_plus"
    regress.model_spec.signature_name = "regress"
    fill(regress.input)
    values = [r.value for r in stub.Regress(regress, timeout=60).result.regressions]
    np.testing.assert_allclose(values, [0.5 * sum(e) + 2 for e in examples], rtol=1e-6)
    multi = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify", "tensorflow/serving/classify"), ("regress", "tensorflow/serving/regress")):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name = "half_plus"
        task.model_spec.signature_name = sig
    fill(multi.input)
    both = stub.MultiInference(multi, timeout=60)
    assert len(both.results) == 2
    np.testing.assert_allclose([r.value for r in both.results[1].regression_result.regressions], values)


def test_grpc_reaches_onnx_model(channel: grpc.Channel, tf_store: Path) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dense"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    got = tf.make_ndarray(stub.Predict(request, timeout=60).outputs["y"])
    expected = ort.InferenceSession(str(tf_store / "dense" / "1" / "model.onnx")).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, expected)


def test_grpc_errors(channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "nope"
    request.inputs[MLP_INPUT].CopyFrom(tf.make_tensor_proto(random_pixels(1)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    request.model_spec.name = "keras_mlp"
    request.inputs[MLP_INPUT].CopyFrom(tf.make_tensor_proto(np.zeros((1, 15), np.float32)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pixels" in info.value.details()
    request.model_spec.signature_name = "nope"
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["other"])
    bad.model_spec.name = "keras_mlp"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(bad, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _url(server: ServerProcess, path: str) -> str:
    return f"{server.http_url}{path}"


def test_rest_predict_row_and_columnar(server: ServerProcess, in_process: Any) -> None:
    x = random_pixels(2)
    want = _expected(in_process, x)
    row = httpx.post(_url(server, "/v1/models/keras_mlp:predict"), json={"instances": x.tolist()}, timeout=30)
    assert row.status_code == 200, row.text
    np.testing.assert_allclose(row.json()["predictions"], want, rtol=1e-5)
    col = httpx.post(
        _url(server, "/v1/models/keras_mlp/labels/stable:predict"), json={"inputs": {MLP_INPUT: x.tolist()}}, timeout=30
    )
    np.testing.assert_allclose(col.json()["outputs"], want, rtol=1e-5)
    named = httpx.post(
        _url(server, "/v1/models/keras_mlp/versions/1:predict"),
        json={"signature_name": "serving_default", "instances": [{MLP_INPUT: r} for r in x.tolist()]},
        timeout=30,
    )
    np.testing.assert_allclose(named.json()["predictions"], want, rtol=1e-5)


def test_rest_status_metadata(server: ServerProcess) -> None:
    status = httpx.get(_url(server, "/v1/models/keras_mlp")).json()
    assert status == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    meta = httpx.get(_url(server, "/v1/models/keras_mlp/versions/1/metadata")).json()
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"][MLP_INPUT]["dtype"] == "DT_FLOAT"
    assert meta["model_spec"] == {"name": "keras_mlp", "signature_name": "", "version": "1"}


def test_rest_b64_bytes(server: ServerProcess) -> None:
    words = [b"abc", b"x\xffz"]
    resp = httpx.post(
        _url(server, "/v1/models/text_ops:predict"),
        json={"instances": [{BYTES_INPUT: {"b64": base64.b64encode(w).decode()}} for w in words]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    rows = resp.json()["predictions"]
    assert [base64.b64decode(r["upper_bytes"]["b64"]) for r in rows] == [b"ABC", b"X\xffZ"]
    assert [r["length"] for r in rows] == [3, 3]


def test_rest_classify_regress(server: ServerProcess) -> None:
    examples = [{"x": [1.0, 2.0]}, {"x": [-3.0, 0.5]}]
    cls = httpx.post(
        _url(server, "/v1/models/half_plus:classify"), json={"signature_name": "classify", "examples": examples}
    )
    assert cls.status_code == 200, cls.text
    assert [label for label, _score in cls.json()["results"][0]] == ["neg", "zero", "pos"]
    reg = httpx.post(
        _url(server, "/v1/models/half_plus:regress"), json={"signature_name": "regress", "examples": examples}
    )
    np.testing.assert_allclose(reg.json()["results"], [3.5, 0.75], rtol=1e-6)
    wrong = httpx.post(_url(server, "/v1/models/keras_mlp:classify"), json={"examples": examples})
    assert wrong.status_code == 400 and "error" in wrong.json()


def test_rest_reaches_onnx_model(server: ServerProcess, tf_store: Path) -> None:
    x = np.ones((1, 16), np.float32)
    resp = httpx.post(_url(server, "/v1/models/dense:predict"), json={"instances": x.tolist()})
    expected = ort.InferenceSession(str(tf_store / "dense" / "1" / "model.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(resp.json()["predictions"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/models/nope:predict", {"instances": [[0.0] * 16]}, 404),
        ("/v1/models/keras_mlp/versions/7:predict", {"instances": [[0.0] * 16]}, 404),
        ("/v1/models/keras_mlp/labels/canary:predict", {"instances": [[0.0] * 16]}, 404),
        ("/v1/models/keras_mlp:predict", {"instances": [[0.0] * 15]}, 400),
        ("/v1/models/keras_mlp:predict", {"instances": [["a"] * 16]}, 400),
        ("/v1/models/keras_mlp:predict", {"nothing": 1}, 400),
        ("/v1/models/keras_mlp:predict", {"instances": [[0.0] * 16], "inputs": [[0.0] * 16]}, 400),
        ("/v1/models/keras_mlp:explode", {"instances": [[0.0] * 16]}, 400),
        ("/v1/models/keras_mlp:predict", {"signature_name": "nope", "instances": [[0.0] * 16]}, 400),
    ],
)
def test_rest_errors_are_tf_serving_style(server: ServerProcess, path: str, body: dict[str, Any], status: int) -> None:
    resp = httpx.post(_url(server, path), json=body, timeout=30)
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"error"} and resp.json()["error"]
    malformed = httpx.post(_url(server, "/v1/models/keras_mlp:predict"), content=b"{oops", timeout=30)
    assert malformed.status_code == 400


def test_v2_clients_reach_the_savedmodel(server: ServerProcess, in_process: Any) -> None:
    x = random_pixels(4)
    want = _expected(in_process, x)
    http = th.InferenceServerClient(server.http)
    meta = http.get_model_metadata("keras_mlp")
    assert meta["platform"] == "tensorflow_savedmodel"
    inp = th.InferInput(MLP_INPUT, [4, 16], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_allclose(http.infer("keras_mlp", [inp]).as_numpy(MLP_OUTPUT), want, rtol=1e-6)
    grpc_client = tg.InferenceServerClient(server.grpc)
    ginp = tg.InferInput(MLP_INPUT, [4, 16], "FP32")
    ginp.set_data_from_numpy(x)
    np.testing.assert_allclose(grpc_client.infer("keras_mlp", [ginp]).as_numpy(MLP_OUTPUT), want, rtol=1e-6)


def test_a_model_that_cannot_be_found_is_worded_as_tf_serving_does(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    """TF Serving's text on its front ends; V2 keeps Triton's text for the same lookup."""
    body = {"instances": [[0.0] * 16]}
    for path, text in (
        ("/v1/models/nope:predict", "Servable not found for request: Latest(nope)"),
        ("/v1/models/keras_mlp/versions/7:predict", "Servable not found for request: Specific(keras_mlp, 7)"),
    ):
        resp = httpx.post(_url(server, path), json=body, timeout=30)
        assert resp.status_code == 404 and resp.json() == {"error": text}
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "nope"
    request.inputs[MLP_INPUT].CopyFrom(tf.make_tensor_proto(random_pixels(1)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "Servable not found for request: Latest(nope)"
    v2_input = {"name": MLP_INPUT, "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}
    v2 = httpx.post(_url(server, "/v2/models/nope/infer"), json={"inputs": [v2_input]}, timeout=30)
    assert v2.json()["error"] == "Request for unknown model: 'nope' is not found"
