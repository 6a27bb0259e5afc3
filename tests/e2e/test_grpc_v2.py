"""End to end over gRPC: tritonclient.grpc (unmodified) against a real server, plus health, reflection, limits."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.serving import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(server.grpc)


def test_health_metadata_config(client: tg.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "tensorgate" and "statistics" in meta["extensions"]
    model = client.get_model_metadata("dense", as_json=True)
    assert model["versions"] == ["1", "2"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "16"]}]
    config = client.get_model_config("dense", as_json=True)["config"]
    assert int(config["max_batch_size"]) > 0 and config["input"][0]["dims"] == ["16"]
    assert client.is_model_ready("dense") and not client.is_model_ready("broken")


@pytest.mark.parametrize("version", ["", "1", "2"])
def test_infer_matches_onnxruntime(client: tg.InferenceServerClient, onnx_store: Path, version: str) -> None:
    x = np.random.default_rng(4).standard_normal((6, 16)).astype(np.float32)
    inp = tg.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("dense", [inp], model_version=version, request_id="abc")
    used = version or "2"
    sess = ort.InferenceSession(str(onnx_store / "dense" / used / "model.onnx"))
    np.testing.assert_array_equal(result.as_numpy("y"), sess.run(None, {"x": x})[0])
    response = result.get_response()
    assert response.model_version == used and response.id == "abc"
    assert len(response.raw_output_contents) == 1


@pytest.mark.parametrize(
    "datatype",
    ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
     "BYTES", "BF16"],
)  # fmt: skip
def test_every_datatype_round_trips(client: tg.InferenceServerClient, datatype: str) -> None:
    rng = np.random.default_rng(9)
    if datatype == "BYTES":
        # ONNX Runtime's Python API carries strings as Unicode, so ONNX string tensors hold UTF-8 text
        data = np.array([[b"x", b"", "\u00e9\u00e8".encode()]], dtype=np.object_)
    elif datatype == "BOOL":
        data = rng.integers(0, 2, (1, 3)).astype(bool)
    elif datatype == "BF16":
        data = rng.standard_normal((1, 3)).astype(ml_dtypes.bfloat16)
    elif datatype.startswith("FP"):
        data = rng.standard_normal((1, 3)).astype(
            {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[datatype]
        )
    else:
        data = rng.integers(0, 100, (1, 3)).astype(datatype.lower())
    inp = tg.InferInput("input", [1, 3], datatype)
    inp.set_data_from_numpy(data)
    got = client.infer(f"identity_{datatype.lower()}", [inp]).as_numpy("output")
    np.testing.assert_array_equal(got, data)


def test_typed_contents_are_accepted(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="two_io")
        for name in ("a", "b"):
            t = request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
            t.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
        response = stub.ModelInfer(request)
        assert [o.name for o in response.outputs] == ["sum", "prod"]
        total = np.frombuffer(response.raw_output_contents[0], np.float32)
        np.testing.assert_array_equal(total, [2.0, 4.0, 6.0, 8.0])


def test_errors_map_to_grpc_codes(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        good = np.zeros((1, 16), np.float32).tobytes()
        cases = [
            ("nope", "", "x", [1, 16], good, grpc.StatusCode.NOT_FOUND),
            ("dense", "7", "x", [1, 16], good, grpc.StatusCode.NOT_FOUND),
            ("dense", "", "q", [1, 16], good, grpc.StatusCode.INVALID_ARGUMENT),
            ("dense", "", "x", [1, 16], good[:-4], grpc.StatusCode.INVALID_ARGUMENT),
            ("dense", "", "x", [2, 8], good, grpc.StatusCode.INVALID_ARGUMENT),
            ("broken", "", "x", [1, 16], good, grpc.StatusCode.UNAVAILABLE),
        ]
        for model, version, name, shape, raw, code in cases:
            request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
            request.inputs.add(name=name, datatype="FP32", shape=shape)
            request.raw_input_contents.append(raw)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request)
            assert info.value.code() == code, (model, name, info.value.details())
            assert info.value.details()


def test_health_service_per_model(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == serving
        assert health.Check(health_pb2.HealthCheckRequest(service="dense")).status == serving
        assert (
            health.Check(health_pb2.HealthCheckRequest(service="broken")).status
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_statistics_repository_and_stream(client: tg.InferenceServerClient) -> None:
    stats = client.get_inference_statistics("dense", as_json=True)["model_stats"]
    assert {s["version"] for s in stats} == {"1", "2"}
    index = client.get_model_repository_index(as_json=True)["models"]
    assert any(m["name"] == "broken" and m["state"] == "UNAVAILABLE" and m["reason"] for m in index)
    results: list[object] = []
    client.start_stream(callback=lambda result, error: results.append(error or result))
    x = np.ones((1, 16), np.float32)
    inp = tg.InferInput("x", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(3):
        client.async_stream_infer("dense", [inp])
    client.stop_stream()
    assert len(results) == 3 and all(not isinstance(r, Exception) for r in results)


def test_client_deadline_is_honoured(client: tg.InferenceServerClient, server: ServerProcess) -> None:
    x = np.ones((256, 512), np.float32)  # the slow model needs far longer than the deadline for this batch
    inp = tg.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as info:
        client.infer("slow", [inp], client_timeout=0.005)
    assert "DEADLINE_EXCEEDED" in str(info.value) or "Deadline" in str(info.value)
    # the REST `timeout` parameter (microseconds) is a server-side deadline: 504 with a clear message
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [256, 512], "data": x.reshape(-1).tolist()}],
           "parameters": {"timeout": 1000}}  # fmt: skip
    resp = httpx.post(f"{server.http_url}/v2/models/slow/infer", json=doc, timeout=30)
    assert resp.status_code == 504 and "deadline" in resp.json()["error"]
    small = tg.InferInput("x", [1, 512], "FP32")
    small.set_data_from_numpy(np.ones((1, 512), np.float32))
    assert client.infer("slow", [small]).as_numpy("y").shape == (1, 512)


def test_large_message_and_limit(onnx_store: Path, tmp_path: Path) -> None:
    """64 MiB of FP32 passes under the default limit; beyond a configured limit the call is RESOURCE_EXHAUSTED."""
    big = np.random.default_rng(0).standard_normal((1, 16 * 1024 * 1024)).astype(np.float32)  # 64 MiB
    proc = ServerProcess(
        onnx_store,
        tmp_path,
        ["--poll-interval", "0", "--no-strict-readiness", "--grpc-max-message-bytes", str(80 << 20)],
    )
    proc.start()
    try:
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        with grpc.insecure_channel(proc.grpc, options=options) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = service_pb2.ModelInferRequest(model_name="identity_fp32")
            request.inputs.add(name="input", datatype="FP32", shape=list(big.shape))
            request.raw_input_contents.append(big.tobytes())
            response = stub.ModelInfer(request, timeout=120)
            assert response.raw_output_contents[0] == request.raw_input_contents[0]
            del response
            huge = np.zeros((1, 24 * 1024 * 1024), np.float32)  # 96 MiB > 80 MiB limit
            request = service_pb2.ModelInferRequest(model_name="identity_fp32")
            request.inputs.add(name="input", datatype="FP32", shape=list(huge.shape))
            request.raw_input_contents.append(huge.tobytes())
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=120)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
    finally:
        proc.stop()


def test_sigterm_drains_in_flight_and_reports_not_ready(onnx_store: Path, tmp_path: Path) -> None:
    import signal
    import threading
    import time

    proc = ServerProcess(
        onnx_store, tmp_path, ["--poll-interval", "0", "--no-strict-readiness", "--shutdown-delay", "1"]
    ).start()
    client = tg.InferenceServerClient(proc.grpc)
    x = np.ones((1, 16), np.float32)
    inp = tg.InferInput("x", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    failures: list[BaseException] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            try:
                client.infer("dense", [inp])
            except InferenceServerException as exc:
                if "UNAVAILABLE" not in str(exc) and "shutting down" not in str(exc):
                    failures.append(exc)
                return

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.5)
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert not client.is_server_ready()
    done.set()
    thread.join(10)
    assert proc.stop() == 0
    assert not failures
