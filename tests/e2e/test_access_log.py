"""Access log and request IDs end to end: every inference request on every front end (V2 REST, V2 gRPC unary and
stream, TF Serving REST and gRPC) writes exactly one JSON access-log line with its fields — bad requests and
unknown models included — and the request ID the caller sent (header or metadata), the V2 request ``id``, or a
generated one comes back to the caller and is in that line."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tensorflow_serving.apis import predict_pb2
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.credentials import write_keys
from tests.onnx_models import dense_model
from tests.serving import ServerProcess

X = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
FIELDS = {
    "ts", "level", "logger", "msg", "request_id", "protocol", "model", "variant", "version", "runtime", "code",
    "latency_ms", "queue_ms", "compute_ms", "request_bytes", "response_bytes", "peer",
}  # fmt: skip


def access_lines(server: ServerProcess) -> list[dict[str, Any]]:
    out = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        if '"tensorgate.access"' not in line:
            continue
        doc = json.loads(line)
        if doc.get("logger") == "tensorgate.access":
            out.append(doc)
    return out


def lines_for(server: ServerProcess, rid: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The access lines carrying ``rid``, once one is written (then a moment more, to catch a duplicate)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [d for d in access_lines(server) if d["request_id"] == rid]
        if found:
            time.sleep(0.2)
            return [d for d in access_lines(server) if d["request_id"] == rid]
        time.sleep(0.05)
    return []


# -- senders: (server, model, good?, request id) -> (code the client saw, request id it got back) ----------------
def _meta(rid: str | None) -> tuple[tuple[str, str], ...]:
    return (("x-request-id", rid),) if rid else ()


def _headers(rid: str | None) -> dict[str, str]:
    return {"x-request-id": rid} if rid else {}


HTTP = {200: "OK", 400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}


def v2_rest(s: ServerProcess, model: str, good: bool, rid: str | None) -> tuple[str, str | None]:
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": X.ravel().tolist()}]})
    r = httpx.post(f"{s.http_url}/v2/models/{model}/infer", content=body if good else b"{nope", headers=_headers(rid))
    if r.status_code != 200:
        assert r.json()["request_id"] == r.headers["x-request-id"]  # the error body names it too
    return HTTP[r.status_code], r.headers.get("x-request-id")


def _trailing_id(metadata: Any) -> str | None:
    return dict(metadata or ()).get("x-request-id")


def v2_grpc(s: ServerProcess, model: str, good: bool, rid: str | None) -> tuple[str, str | None]:
    message = service_pb2.ModelInferRequest(model_name=model)
    message.inputs.add(name="x", datatype="FP32", shape=[1, 16])
    message.raw_input_contents.append(X.tobytes() if good else b"\x00" * 7)
    with grpc.insecure_channel(s.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            _reply, call = stub.ModelInfer.with_call(message, metadata=_meta(rid), timeout=10)
        except grpc.RpcError as exc:
            return exc.code().name, _trailing_id(exc.trailing_metadata())  # type: ignore[attr-defined]
    return "OK", _trailing_id(call.trailing_metadata())


def v2_stream(s: ServerProcess, model: str, good: bool, rid: str | None) -> tuple[str, str | None]:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = tg.InferenceServerClient(s.grpc)
    client.start_stream(callback=lambda result, error: results.put((result, error)), headers=_headers(rid))
    try:
        data = X if good else np.ascontiguousarray(X[:, :8])
        inp = tg.InferInput("x", list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        if not good:
            inp.set_shape([1, 16])  # promises more bytes than are sent
        client.async_stream_infer(model, [inp])
        _result, error = results.get(timeout=10)
    finally:
        client.stop_stream()
        client.close()
    if error is None:
        return "OK", rid
    return ("NOT_FOUND" if "not found" in str(error) else "INVALID_ARGUMENT"), rid


def tfs_rest(s: ServerProcess, model: str, good: bool, rid: str | None) -> tuple[str, str | None]:
    body = orjson.dumps({"instances": X.tolist()}) if good else b"{nope"
    r = httpx.post(f"{s.http_url}/v1/models/{model}:predict", content=body, headers=_headers(rid), timeout=10)
    return HTTP[r.status_code], r.headers.get("x-request-id")


def tfs_grpc(s: ServerProcess, model: str, good: bool, rid: str | None) -> tuple[str, str | None]:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in X.shape]
    tensor = tensor_pb2.TensorProto(dtype=1, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims))
    tensor.tensor_content = X.tobytes()
    request.inputs["x"].CopyFrom(tensor)
    raw = request.SerializeToString() if good else b"\xff\xff\xff"
    with grpc.insecure_channel(s.grpc) as channel:
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        try:
            _reply, call = predict.with_call(raw, metadata=_meta(rid), timeout=120)
        except grpc.RpcError as exc:
            return exc.code().name, _trailing_id(exc.trailing_metadata())  # type: ignore[attr-defined]
    return "OK", _trailing_id(call.trailing_metadata())


Sender = Callable[[ServerProcess, str, bool, "str | None"], tuple[str, "str | None"]]
FRONT_ENDS: dict[str, tuple[Sender, str]] = {
    "rest": (v2_rest, "rest"),
    "grpc": (v2_grpc, "grpc"),
    "grpc stream": (v2_stream, "grpc"),
    "tfs_rest": (tfs_rest, "tfs_rest"),
    "tfs_grpc": (tfs_grpc, "tfs_grpc"),
}
CASES = {  # case -> (model, good body?, expected code, model logged)
    "good": ("dense", True, "OK", "dense"),
    "unknown model": ("nope", True, "NOT_FOUND", "nope"),
    "bad request": ("dense", False, "INVALID_ARGUMENT", "dense"),
}


@pytest.mark.parametrize("front_end", list(FRONT_ENDS))
@pytest.mark.parametrize("case", list(CASES))
def test_one_access_line_per_request_with_its_fields(observed: ServerProcess, case: str, front_end: str) -> None:
    send, protocol = FRONT_ENDS[front_end]
    model, good, code, logged_model = CASES[case]
    if front_end == "tfs_grpc" and not good:
        logged_model = ""  # bytes that are no PredictRequest name no model
    rid = f"acc-{uuid.uuid4().hex[:12]}"
    seen, returned = send(observed, model, good, rid)
    assert seen == code
    assert returned == rid
    lines = lines_for(observed, rid)
    assert len(lines) == 1, lines
    line = lines[0]
    assert set(line) >= FIELDS, FIELDS - set(line)
    assert (line["protocol"], line["model"], line["code"]) == (protocol, logged_model, code)
    assert line["level"] == ("info" if code == "OK" else "warning")
    assert line["latency_ms"] >= line["queue_ms"] + line["compute_ms"] >= 0
    assert line["peer"] and "127.0.0.1" in line["peer"]
    assert line["request_bytes"] > 0
    assert line["trace_id"] and len(line["trace_id"]) == 32  # the server traces: the line names the trace
    if code == "OK":
        assert (line["variant"], line["version"], line["runtime"]) == ("dense", "1", "onnx")
        assert line["compute_ms"] > 0 and line["response_bytes"] > 0
        assert "error" not in line
    else:
        assert line["error"]


def test_request_id_generated_when_absent_and_taken_from_v2_id(observed: ServerProcess) -> None:
    code, generated = v2_rest(observed, "dense", True, None)
    assert code == "OK" and generated and len(generated) == 16
    assert len(lines_for(observed, generated)) == 1
    code, generated = v2_grpc(observed, "dense", True, None)
    assert code == "OK" and generated and len(generated) == 16
    body = {
        "id": "v2-body-id-7",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": X.ravel().tolist()}],
    }
    r = httpx.post(f"{observed.http_url}/v2/models/dense/infer", content=orjson.dumps(body))
    assert r.headers["x-request-id"] == "v2-body-id-7" and r.json()["id"] == "v2-body-id-7"
    r = httpx.post(
        f"{observed.http_url}/v2/models/dense/infer", content=orjson.dumps(body), headers={"x-request-id": "hdr-wins"}
    )
    assert r.headers["x-request-id"] == "hdr-wins"  # the header names the request; the body's id is echoed as is
    assert len(lines_for(observed, "hdr-wins")) == 1
    bad = "x" * 500  # not echoed or logged as is: a fresh one instead
    r = httpx.post(
        f"{observed.http_url}/v2/models/dense/infer",
        content=orjson.dumps(body | {"id": ""}),
        headers={"x-request-id": bad},
    )
    assert r.status_code == 200 and len(r.headers["x-request-id"]) == 16


def test_tritonclient_request_id_reaches_the_log(observed: ServerProcess) -> None:
    rid_http, rid_grpc = f"th-{uuid.uuid4().hex[:8]}", f"tg-{uuid.uuid4().hex[:8]}"
    with th.InferenceServerClient(observed.http) as client:
        inp = th.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X, binary_data=True)
        client.infer("dense", [inp], headers={"x-request-id": rid_http})
    client = tg.InferenceServerClient(observed.grpc)
    try:
        inp = tg.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X)
        client.infer("dense", [inp], headers={"x-request-id": rid_grpc})
    finally:
        client.close()
    (http_line,) = lines_for(observed, rid_http)
    (grpc_line,) = lines_for(observed, rid_grpc)
    assert (http_line["protocol"], grpc_line["protocol"]) == ("rest", "grpc")
    assert http_line["code"] == grpc_line["code"] == "OK"


def test_the_authenticated_keys_id_is_in_the_line(tmp_path: Path) -> None:
    """With API keys on, each line names the ID of the key that authenticated the request (never the key itself),
    over REST and gRPC, the request refused by the model included."""
    store = tmp_path / "store"
    dense_model(store / "dense" / "1" / "model.onnx")
    keys = write_keys(tmp_path / "keys.yaml", {"k-secret-app-1": {"id": "app", "scopes": ["infer", "read"]}})
    proc = ServerProcess(
        store, tmp_path, ["--poll-interval", "0", "--auth-keys", str(keys), "--access-log", "--log-format", "json"]
    ).start()
    try:
        auth = {"authorization": "Bearer k-secret-app-1"}
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": X.ravel().tolist()}]}
        good = httpx.post(f"{proc.http_url}/v2/models/dense/infer", json=body, headers={**auth, "x-request-id": "k1"})
        bad = httpx.post(
            f"{proc.http_url}/v2/models/dense/infer", json={"inputs": []}, headers={**auth, "x-request-id": "k2"}
        )
        assert (good.status_code, bad.status_code) == (200, 400)
        client = tg.InferenceServerClient(proc.grpc)
        inp = tg.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X)
        client.infer("dense", [inp], headers={**auth, "x-request-id": "k3"})
        for rid, code, protocol in (("k1", "OK", "rest"), ("k2", "INVALID_ARGUMENT", "rest"), ("k3", "OK", "grpc")):
            (line,) = lines_for(proc, rid)
            assert (line["key_id"], line["code"], line["protocol"]) == ("app", code, protocol), line
        assert "k-secret-app-1" not in proc.log_path.read_text()
    finally:
        proc.stop()
