"""End to end over gRPC: tritonclient.grpc (unmodified) against a real server, plus health, reflection, limits."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
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

from tests.onnx_models import dense_weights, spin_model
from tests.serving import ServerProcess, metric_value, spin_infer, spins_for, wait_until


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


def test_sigterm_drains_in_flight_and_refuses_new_requests(tmp_path: Path) -> None:
    """SIGTERM while a request runs: readiness turns off, new requests over gRPC and REST are refused (UNAVAILABLE /
    503, or the listener is already closed), the request in flight finishes and is answered OK, the process exits 0.
    Waits on conditions only: the held request is in flight (metric) before the signal, refused before it ends."""
    store = tmp_path / "store"
    spin_model(store / "spin" / "1" / "model.onnx", seed=0)
    proc = ServerProcess(store, tmp_path, ["--poll-interval", "0"]).start()
    x = np.random.default_rng(11).standard_normal((2, 16)).astype(np.float32)
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 16], "data": x.ravel().tolist()},
            {"name": "spins", "datatype": "INT64", "shape": [2, 1], "data": [0, 0]},
        ]
    }

    def grpc_status() -> str:
        try:
            spin_infer(proc.grpc, x, 0)
        except InferenceServerException as exc:
            return str(exc.status())
        return "OK"

    def rest_refused(path: str, doc: dict[str, object] | None = None) -> str | None:
        try:  # a new connection each time: what a new client does
            resp = httpx.request("POST" if doc else "GET", f"{proc.http_url}{path}", json=doc, timeout=10)
        except httpx.TransportError as exc:
            return f"refused: {exc}"
        return None if resp.status_code == 200 else f"{resp.status_code} {resp.text}"

    try:
        spins = spins_for(proc.grpc, 2.0)  # refusing new requests takes milliseconds
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(spin_infer, proc.grpc, x, spins)
            wait_until(
                lambda: metric_value(proc, "tensorgate_inflight_requests", model="spin", version="1") == 1,
                "the held request to be in flight",
                server=proc,
            )
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)

            ready = wait_until(lambda: rest_refused("/v2/health/ready"), "readiness to turn off after SIGTERM")
            assert ready.startswith(("503", "refused")), ready
            # from then on no new request is served. gRPC: UNAVAILABLE until the listener closes, then connection
            # refused (UNAVAILABLE too); a call racing the listener's close is CANCELLED by grpc itself.
            statuses: list[str] = []

            def grpc_unavailable() -> bool:
                statuses.append(grpc_status())
                return statuses[-1] == "StatusCode.UNAVAILABLE"

            wait_until(grpc_unavailable, "a new gRPC request to be refused with UNAVAILABLE")
            assert set(statuses) <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}, statuses
            infer = rest_refused("/v2/models/spin/infer", body)
            assert infer is not None and infer.startswith(("503", "refused")), infer
            assert not held.done(), "the held request ended before SIGTERM took effect: make it longer"

            version, y = held.result(timeout=120)
        assert version == "1"
        w, b = dense_weights(seed=0)
        np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-5)
        assert proc.proc.wait(timeout=60) == 0, proc.log()
    finally:
        proc.stop()


def test_shutdown_delay_keeps_serving_while_not_ready(tmp_path: Path) -> None:
    """With --shutdown-delay, SIGTERM turns readiness off at once but requests are still answered until the delay
    ends (load balancers are still sending traffic while they notice); then the process drains and exits 0."""
    store = tmp_path / "store"
    spin_model(store / "spin" / "1" / "model.onnx", seed=0)
    proc = ServerProcess(store, tmp_path, ["--poll-interval", "0", "--shutdown-delay", "30"]).start()
    x = np.random.default_rng(12).standard_normal((1, 16)).astype(np.float32)
    try:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: httpx.get(f"{proc.http_url}/v2/health/ready", timeout=10).status_code == 503,
            "readiness to turn off after SIGTERM",
            server=proc,
        )
        version, y = spin_infer(proc.grpc, x, 0)  # still served over gRPC ...
        w, b = dense_weights(seed=0)
        np.testing.assert_allclose(y, x @ w + b, rtol=1e-5, atol=1e-5)
        body = {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 16], "data": x.ravel().tolist()},
                {"name": "spins", "datatype": "INT64", "shape": [1, 1], "data": [0]},
            ]
        }
        response = httpx.post(f"{proc.http_url}/v2/models/spin/infer", json=body, timeout=10)  # ... and REST
        assert response.status_code == 200, response.text
        assert version == "1" and proc.proc.poll() is None
    finally:
        proc.stop(signal.SIGKILL)  # the delay is long on purpose; what follows it is the drain test's subject
