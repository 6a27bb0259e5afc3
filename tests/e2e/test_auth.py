"""API keys end to end: every REST and gRPC endpoint group (V2 and TF Serving) refuses a missing, unknown or
under-scoped key with 401 / 403 and UNAUTHENTICATED / PERMISSION_DENIED, with real clients (httpx, tritonclient
http and grpc with headers, TF Serving gRPC stubs); health stays open; keys restricted to models; rate limits;
the repository API needs an admin key in every model-control mode and is audited; keys reloaded on change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.credentials import write_keys
from tests.onnx_models import dense_model
from tests.serving import ServerProcess

ADMIN, INFER, READ, DENSE_ONLY, LIMITED = "k-admin-0001", "k-infer-0002", "k-read-0003", "k-dense-0004", "k-rate-05"
KEYS = {
    ADMIN: {"id": "ops", "scopes": ["admin"]},
    INFER: {"id": "app", "scopes": ["infer"]},
    READ: {"id": "dash", "scopes": ["read"]},
    DENSE_ONLY: {"id": "tenant", "scopes": ["infer", "read"], "models": ["dense"]},
    LIMITED: {"id": "slow", "scopes": ["infer", "read"], "rate_limit": {"per_second": 0.2, "burst": 2}},
}
X = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
V2_INFER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16], "data": X.ravel().tolist()}]}
TFS_PREDICT = {"instances": X.tolist()}


@pytest.fixture(scope="module")
def auth_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auth_store")
    dense_model(root / "dense" / "1" / "model.onnx")
    dense_model(root / "other" / "1" / "model.onnx", seed=3)
    return root


def _serve(store: Path, tmp: Path, *args: str) -> ServerProcess:
    keys = write_keys(tmp / "keys.yaml", KEYS)
    return ServerProcess(store, tmp, ["--poll-interval", "0", "--auth-keys", str(keys), *args]).start()


@pytest.fixture(scope="module")
def secured(auth_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = _serve(auth_store, tmp_path_factory.mktemp("auth"))
    yield proc
    proc.stop()


def _bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


# (group, method, path, body): one or more routes of every REST endpoint group
REST_ROUTES = [
    ("read", "GET", "/v2", None),
    ("read", "GET", "/v2/models/dense", None),
    ("read", "GET", "/v2/models/dense/config", None),
    ("read", "GET", "/v2/models/dense/stats", None),
    ("read", "POST", "/v2/repository/index", {}),
    ("read", "GET", "/v1/models/dense", None),
    ("read", "GET", "/v1/models/dense/metadata", None),
    ("read", "GET", "/no/such/route", None),
    ("infer", "POST", "/v2/models/dense/infer", V2_INFER),
    ("infer", "POST", "/v2/models/dense/versions/1/infer", V2_INFER),
    ("infer", "POST", "/v1/models/dense:predict", TFS_PREDICT),
    ("admin", "POST", "/v2/repository/models/dense/load", {}),
    ("admin", "POST", "/v2/repository/models/dense/unload", {}),
]
UNDER_SCOPED = {"read": INFER, "infer": READ, "admin": INFER}


@pytest.mark.parametrize(("group", "method", "path", "body"), REST_ROUTES, ids=lambda v: str(v)[:40])
def test_rest_refuses_missing_wrong_and_under_scoped_keys(
    secured: ServerProcess, group: str, method: str, path: str, body: Any
) -> None:
    url = secured.http_url + path
    missing = httpx.request(method, url, json=body)
    assert missing.status_code == 401 and "API key" in missing.json()["error"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.request(method, url, json=body, headers=_bearer("not-a-key"))
    assert wrong.status_code == 401 and wrong.json() == {"error": "the API key is not valid"}
    under = httpx.request(method, url, json=body, headers={"X-API-Key": UNDER_SCOPED[group]})
    assert under.status_code == 403 and f"lacks the '{group}' scope" in under.json()["error"]


def test_rest_right_keys_pass_and_health_and_metrics_stay_open(secured: ServerProcess) -> None:
    url = secured.http_url
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/dense/ready", "/metrics"):
        assert httpx.get(url + path).status_code == 200, path
    assert httpx.get(url + "/v2/models/dense", headers=_bearer(READ)).json()["name"] == "dense"
    assert httpx.get(url + "/v2/models/dense", headers=_bearer(ADMIN)).status_code == 200  # admin implies read
    out = httpx.post(url + "/v2/models/dense/infer", json=V2_INFER, headers=_bearer(INFER))
    assert out.status_code == 200 and out.json()["outputs"][0]["shape"] == [2, 4]
    tfs = httpx.post(url + "/v1/models/dense:predict", json=TFS_PREDICT, headers=_bearer(INFER))
    assert tfs.status_code == 200 and len(tfs.json()["predictions"]) == 2


def test_tritonclient_http_with_headers(secured: ServerProcess) -> None:
    client = th.InferenceServerClient(secured.http)
    inp = th.InferInput("x", [2, 16], "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    assert client.infer("dense", [inp], headers=_bearer(INFER)).as_numpy("y").shape == (2, 4)
    for headers, status in ((None, "401"), (_bearer("nope"), "401"), (_bearer(READ), "403")):
        with pytest.raises(InferenceServerException) as caught:
            client.infer("dense", [inp], headers=headers)
        assert caught.value.status() == status
    with pytest.raises(InferenceServerException) as caught:
        client.unload_model("dense", headers=_bearer(INFER))
    assert caught.value.status() == "403"
    assert client.is_server_ready()  # no headers: health is open


def _grpc_calls(stub: Any) -> dict[str, list[tuple[str, Any]]]:
    return {
        "read": [
            ("ServerMetadata", lambda md: stub.ServerMetadata(service_pb2.ServerMetadataRequest(), metadata=md)),
            (
                "ModelMetadata",
                lambda md: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="dense"), metadata=md),
            ),
            ("ModelConfig", lambda md: stub.ModelConfig(service_pb2.ModelConfigRequest(name="dense"), metadata=md)),
            ("ModelStatistics", lambda md: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(), metadata=md)),
            ("RepositoryIndex", lambda md: stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=md)),
        ],
        "infer": [("ModelInfer", lambda md: stub.ModelInfer(_grpc_infer_request(), metadata=md))],
        "admin": [
            (
                "Load",
                lambda md: stub.RepositoryModelLoad(
                    service_pb2.RepositoryModelLoadRequest(model_name="dense"), metadata=md
                ),
            ),
            (
                "Unload",
                lambda md: stub.RepositoryModelUnload(
                    service_pb2.RepositoryModelUnloadRequest(model_name="dense"), metadata=md
                ),
            ),
        ],
    }


def _grpc_infer_request(model: str = "dense") -> Any:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 16])
    tensor.contents.fp32_contents.extend(X.ravel().tolist())
    return request


@pytest.mark.parametrize("group", ["read", "infer", "admin"])
def test_grpc_v2_refuses_missing_wrong_and_under_scoped_keys(secured: ServerProcess, group: str) -> None:
    with grpc.insecure_channel(secured.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for name, call in _grpc_calls(stub)[group]:
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
                ((("x-api-key", UNDER_SCOPED[group]),), grpc.StatusCode.PERMISSION_DENIED),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    call(metadata)
                assert caught.value.code() == code, (name, metadata)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_tritonclient_grpc_with_headers(secured: ServerProcess) -> None:
    client = tg.InferenceServerClient(secured.grpc)
    inp = tg.InferInput("x", [2, 16], "FP32")
    inp.set_data_from_numpy(X)
    bearer = {"authorization": f"Bearer {INFER}"}  # gRPC metadata keys are lower case
    assert client.infer("dense", [inp], headers=bearer).as_numpy("y").shape == (2, 4)
    assert client.is_server_live() and client.is_model_ready("dense")  # health is open
    with pytest.raises(InferenceServerException) as caught:
        client.infer("dense", [inp])
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("dense", headers=bearer)
    assert caught.value.status() == "StatusCode.PERMISSION_DENIED"


def test_tf_serving_grpc_stubs(secured: ServerProcess) -> None:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc as psg

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dense"
    request.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": 2}, {"size": 16}]),
            float_val=X.ravel().tolist(),
        )
    )
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "dense"
    with grpc.insecure_channel(secured.grpc) as channel:
        predict = psg.PredictionServiceStub(channel).Predict
        model_status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus
        assert (
            predict(request, metadata=(("authorization", f"Bearer {INFER}"),)).outputs["y"].tensor_shape.dim[0].size
            == 2
        )
        for call, msg, under in ((predict, request, READ), (model_status, status, INFER)):
            for metadata, code in (
                ((), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
                ((("authorization", f"Bearer {under}"),), grpc.StatusCode.PERMISSION_DENIED),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    call(msg, metadata=metadata)
                assert caught.value.code() == code


def test_a_key_limited_to_models_reaches_only_those(secured: ServerProcess) -> None:
    url, headers = secured.http_url, _bearer(DENSE_ONLY)
    assert httpx.post(url + "/v2/models/dense/infer", json=V2_INFER, headers=headers).status_code == 200
    for method, path, body in (
        ("POST", "/v2/models/other/infer", V2_INFER),
        ("GET", "/v2/models/other", None),
        ("POST", "/v1/models/other:predict", TFS_PREDICT),
        ("GET", "/v1/models/other/metadata", None),
        ("GET", "/v2/models/nonexistent", None),  # no hint whether a model it may not call exists
    ):
        refused = httpx.request(method, url + path, json=body, headers=headers)
        assert refused.status_code == 403 and "may not call model" in refused.json()["error"], path
    with grpc.insecure_channel(secured.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(_grpc_infer_request("other"), metadata=(("x-api-key", DENSE_ONLY),))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_rate_limit_answers_429_and_resource_exhausted(secured: ServerProcess) -> None:
    url, headers = secured.http_url, _bearer(LIMITED)
    codes = [httpx.get(url + "/v2/models/dense", headers=headers).status_code for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429  # burst of 2, refilled at 0.2/s
    with grpc.insecure_channel(secured.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ServerMetadata(service_pb2.ServerMetadataRequest(), metadata=(("x-api-key", LIMITED),))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert httpx.get(url + "/v2/models/dense", headers=_bearer(READ)).status_code == 200  # other keys unaffected


@pytest.mark.parametrize("mode", ["poll", "none", "explicit"])
def test_repository_api_needs_an_admin_key_in_every_mode(auth_store: Path, tmp_path: Path, mode: str) -> None:
    args = ["--model-control", mode] + (
        ["--load-model", "dense", "--load-model", "other"] if mode == "explicit" else []
    )
    proc = _serve(auth_store, tmp_path, *args)
    try:
        url = proc.http_url
        for key in (INFER, READ, DENSE_ONLY):
            refused = httpx.post(url + "/v2/repository/models/dense/unload", headers=_bearer(key))
            assert refused.status_code == 403
        with grpc.insecure_channel(proc.grpc) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.RepositoryModelUnload(
                    service_pb2.RepositoryModelUnloadRequest(model_name="dense"), metadata=(("x-api-key", INFER),)
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert httpx.get(url + "/v2/models/dense/ready").status_code == 200  # nothing was unloaded
        assert httpx.post(url + "/v2/repository/models/dense/unload", headers=_bearer(ADMIN)).status_code == 200
        assert httpx.get(url + "/v2/models/dense/ready").status_code in (404, 503)
        assert httpx.post(url + "/v2/repository/models/dense/load", headers=_bearer(ADMIN)).status_code == 200
        assert httpx.get(url + "/v2/models/dense/ready").status_code == 200
        log = proc.log()
        assert "audit action=unload model=dense key=ops outcome=ok" in log
        assert "audit action=load model=dense key=ops outcome=ok" in log
        assert "key=app outcome=refused" in log  # refusals are audited too
    finally:
        proc.stop()


def test_without_keys_the_repository_api_is_refused_unless_explicit(server: ServerProcess) -> None:
    """The shared server (no keys, poll mode): Triton's semantics, load/unload only in explicit mode."""
    refused = httpx.post(server.http_url + "/v2/repository/models/dense/unload")
    assert refused.status_code == 403 and "--model-control explicit" in refused.json()["error"]
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="dense"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert httpx.get(server.http_url + "/v2/models/dense/ready").status_code == 200


def test_keys_file_changes_are_picked_up_without_a_restart(auth_store: Path, tmp_path: Path) -> None:
    proc = _serve(auth_store, tmp_path, "--auth-open", "health")  # metrics protected too
    try:
        url = proc.http_url
        assert httpx.get(url + "/metrics").status_code == 401
        assert httpx.get(url + "/metrics", headers=_bearer(READ)).status_code == 200
        write_keys(tmp_path / "keys.yaml", {"k-new-key-06": {"id": "new", "scopes": ["read"]}})
        deadline = time.monotonic() + 10
        while httpx.get(url + "/v2", headers=_bearer("k-new-key-06")).status_code != 200:
            assert time.monotonic() < deadline, "the new key was not picked up"
            time.sleep(0.2)
        assert httpx.get(url + "/v2", headers=_bearer(READ)).status_code == 401  # the removed key is gone
        (tmp_path / "keys.yaml").write_text("keys: [{id: broken}]\n")  # an invalid file keeps the last good keys
        time.sleep(1.2)
        assert httpx.get(url + "/v2", headers=_bearer("k-new-key-06")).status_code == 200
    finally:
        proc.stop()
