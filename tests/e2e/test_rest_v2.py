"""End to end over REST: a real server on the ONNX test store, driven by tritonclient.http and httpx."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import httpx
import ml_dtypes
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.serving import ServerProcess


def _ort(store: Path, model: str, version: int, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(store / model / str(version) / "model.onnx"))
    return sess.run(None, feed)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> th.InferenceServerClient:
    return th.InferenceServerClient(server.http)


def test_health_and_server_metadata(client: th.InferenceServerClient, server: ServerProcess) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert httpx.get(f"{server.http_url}/v2/health/live").json() == {"live": True}
    meta = client.get_server_metadata()
    assert meta["name"] == "tensorgate"
    assert {"binary_tensor_data", "model_repository", "statistics", "model_configuration"} <= set(meta["extensions"])


def test_model_metadata_and_ready(client: th.InferenceServerClient) -> None:
    meta = client.get_model_metadata("dense")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["parameters"]["sla"] == {"p50_ms": 5.0, "p99_ms": 20.0}
    assert client.get_model_metadata("dense", "1")["name"] == "dense"
    assert client.is_model_ready("dense") and client.is_model_ready("dense", "2")
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("broken")


def test_model_config_is_triton_shaped(client: th.InferenceServerClient) -> None:
    config = client.get_model_config("dense")
    assert config["max_batch_size"] > 0
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [16]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["parameters"]["sla.p99_ms"] == {"string_value": "20.0"}
    fixed = client.get_model_config("fixed")
    assert fixed["max_batch_size"] == 0 and fixed["input"][0]["dims"] == [3]


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("version", ["1", "2"])
def test_infer_matches_onnxruntime(
    client: th.InferenceServerClient, onnx_store: Path, binary: bool, version: str
) -> None:
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    inp = th.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = th.InferRequestedOutput("y", binary_data=binary)
    result = client.infer("dense", [inp], model_version=version, outputs=[out], request_id="req-7")
    (expected,) = _ort(onnx_store, "dense", int(version), {"x": x})
    np.testing.assert_array_equal(result.as_numpy("y"), expected)
    response = result.get_response()
    assert response["model_name"] == "dense" and response["model_version"] == version
    assert response["id"] == "req-7"


def test_latest_version_is_default(client: th.InferenceServerClient, onnx_store: Path) -> None:
    x = np.ones((1, 16), np.float32)
    inp = th.InferInput("x", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("dense", [inp])
    assert result.get_response()["model_version"] == "2"
    np.testing.assert_array_equal(result.as_numpy("y"), _ort(onnx_store, "dense", 2, {"x": x})[0])


def test_two_inputs_and_output_subset(client: th.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 3, np.float32)
    ia, ib = th.InferInput("a", [2, 4], "FP32"), th.InferInput("b", [2, 4], "FP32")
    ia.set_data_from_numpy(a)
    ib.set_data_from_numpy(b, binary_data=False)
    result = client.infer("two_io", [ia, ib], outputs=[th.InferRequestedOutput("prod")])
    np.testing.assert_array_equal(result.as_numpy("prod"), a * b)
    assert result.as_numpy("sum") is None
    both = client.infer("two_io", [ia, ib])
    np.testing.assert_array_equal(both.as_numpy("sum"), a + b)


_JSON_TYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP32",
    "FP64",
]


def _sample(datatype: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    if datatype == "BOOL":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    if datatype == "BYTES":
        return np.array([[b"a", b"", "\u00e9t\u00e9".encode()], [b"\x00\x01", b"xyz", b"q"]], dtype=np.object_)
    if datatype == "BF16":
        return rng.standard_normal((2, 3)).astype(ml_dtypes.bfloat16)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.standard_normal((2, 3)).astype(dtype)
    info = np.iinfo(np.dtype(datatype.lower()))
    return rng.integers(max(info.min, -100), min(info.max, 100), (2, 3)).astype(datatype.lower())


@pytest.mark.parametrize(
    "datatype",
    ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
     "BYTES", "BF16"],
)  # fmt: skip
def test_every_datatype_round_trips_binary(client: th.InferenceServerClient, datatype: str) -> None:
    data = _sample(datatype)
    inp = th.InferInput("input", list(data.shape), datatype)
    inp.set_data_from_numpy(data, binary_data=True)
    result = client.infer(f"identity_{datatype.lower()}", [inp])
    got = result.as_numpy("output")
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize("datatype", [*_JSON_TYPES, "BYTES"])
def test_every_json_datatype_round_trips(client: th.InferenceServerClient, datatype: str) -> None:
    data = _sample(datatype)
    inp = th.InferInput("input", list(data.shape), datatype)
    inp.set_data_from_numpy(data, binary_data=False)
    result = client.infer(
        f"identity_{datatype.lower()}", [inp], outputs=[th.InferRequestedOutput("output", binary_data=False)]
    )
    got = result.as_numpy("output")
    if datatype == "BYTES":
        as_bytes = [v if isinstance(v, bytes) else str(v).encode() for v in got.reshape(-1)]
        assert as_bytes == list(data.reshape(-1))
    else:
        np.testing.assert_array_equal(got, data)


def _post(server: ServerProcess, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{server.http_url}{path}", timeout=10, **kwargs)  # type: ignore[arg-type]


def test_nested_json_data_equals_flat(server: ServerProcess) -> None:
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    flat = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16], "data": x.reshape(-1).tolist()}]}
    nested = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16], "data": x.tolist()}]}
    a = _post(server, "/v2/models/dense/infer", content=orjson.dumps(flat))
    b = _post(server, "/v2/models/dense/infer", json=nested)
    assert a.status_code == b.status_code == 200
    assert a.json()["outputs"] == b.json()["outputs"]
    out = a.json()["outputs"][0]
    assert "parameters" not in out and out["shape"] == [2, 4]


def test_gzip_and_deflate_both_directions(server: ServerProcess) -> None:
    doc = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]})
    plain = _post(server, "/v2/models/dense/infer", content=doc).json()
    for encoding, packed in (("gzip", gzip.compress(doc)), ("deflate", zlib.compress(doc))):
        resp = _post(
            server, "/v2/models/dense/infer", content=packed,
            headers={"Content-Encoding": encoding, "Accept-Encoding": encoding},
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-encoding"] == encoding
        assert resp.json()["outputs"] == plain["outputs"]
    bad = _post(server, "/v2/models/dense/infer", content=doc, headers={"Content-Encoding": "br"})
    assert bad.status_code == 400 and "Content-Encoding" in bad.json()["error"]


def test_binary_request_by_hand_with_header_length(server: ServerProcess, onnx_store: Path) -> None:
    x = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [3, 16],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    resp = _post(
        server, "/v2/models/dense/infer", content=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    n = int(resp.headers["inference-header-content-length"])
    meta = orjson.loads(resp.content[:n])
    size = meta["outputs"][0]["parameters"]["binary_data_size"]
    y = np.frombuffer(resp.content[n : n + size], np.float32).reshape(3, 4)
    np.testing.assert_array_equal(y, _ort(onnx_store, "dense", 2, {"x": x})[0])


def test_bytes_binary_by_hand(server: ServerProcess) -> None:
    items = [b"hello", b"", b"w\xc3\xb6rld"]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    head = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1, 3], "parameters": {"binary_data_size": len(raw)}}],
         "parameters": {"binary_data_output": True}}
    )  # fmt: skip
    resp = _post(
        server, "/v2/models/identity_bytes/infer", content=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )  # fmt: skip
    assert resp.status_code == 200
    n = int(resp.headers["inference-header-content-length"])
    assert resp.content[n:] == raw


def test_classification_extension(client: th.InferenceServerClient) -> None:
    x = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    inp = th.InferInput("x", [2, 16], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("dense", [inp], outputs=[th.InferRequestedOutput("y", class_count=2)])
    top = result.as_numpy("y")
    assert top.shape == (2, 2)
    plain = client.infer("dense", [inp]).as_numpy("y")
    for row in range(2):
        indices = [int(v.decode().split(":")[1]) for v in top[row]]
        assert indices == list(np.argsort(-plain[row])[:2])


def test_statistics_have_every_field_perf_analyzer_reads(client: th.InferenceServerClient) -> None:
    x = np.zeros((1, 16), np.float32)
    inp = th.InferInput("x", [1, 16], "FP32")
    inp.set_data_from_numpy(x)
    before = client.get_inference_statistics("dense", "1")["model_stats"][0]
    client.infer("dense", [inp], model_version="1")
    after = client.get_inference_statistics("dense", "1")["model_stats"][0]
    assert after["name"] == "dense" and after["version"] == "1"
    stats = after["inference_stats"]
    for key in (
        "success",
        "fail",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
        "cache_hit",
        "cache_miss",
    ):
        assert set(stats[key]) == {"count", "ns"}
    assert stats["queue"]["count"] == before["inference_stats"]["queue"]["count"] + 1
    assert stats["compute_input"]["count"] == stats["compute_infer"]["count"] == stats["compute_output"]["count"]
    assert after["inference_count"] >= 1 and after["execution_count"] >= 1
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} >= {"dense", "two_io"}


def test_repository_index_shows_failed_model_with_reason(client: th.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    rows = {(r["name"], r.get("version", "")): r for r in index}
    assert rows[("dense", "1")]["state"] == "READY" and rows[("dense", "2")]["state"] == "READY"
    broken = rows[("broken", "1")]
    assert broken["state"] == "UNAVAILABLE" and "ONNX Runtime could not load" in broken["reason"]


def test_repository_ready_filter(server: ServerProcess) -> None:
    rows = _post(server, "/v2/repository/index", json={"ready": True}).json()
    assert rows and all(r["state"] == "READY" for r in rows)
    assert _post(server, "/v2/repository/index", content=b"").status_code == 200


# -- bad input: a clear 4xx naming the problem ----------------------------------------------------------------------
_GOOD = {"name": "x", "datatype": "FP32", "shape": [1, 16], "data": [0.0] * 16}

BAD_REQUESTS = [
    ("unknown model", "/v2/models/nope/infer", {"inputs": [_GOOD]}, 404, "nope"),
    ("unknown version", "/v2/models/dense/versions/9/infer", {"inputs": [_GOOD]}, 404, "version 9"),
    ("wrong input name", "/v2/models/dense/infer", {"inputs": [{**_GOOD, "name": "z"}]}, 400, "'z'"),
    ("wrong datatype", "/v2/models/dense/infer", {"inputs": [{**_GOOD, "datatype": "INT32", "data": [0] * 16}]}, 400, "INT32"),
    ("wrong shape", "/v2/models/dense/infer", {"inputs": [{**_GOOD, "shape": [2, 8]}]}, 400, "shape"),
    ("data length", "/v2/models/dense/infer", {"inputs": [{**_GOOD, "data": [0.0] * 15}]}, 400, "15 values"),
    ("FP16 in JSON", "/v2/models/identity_fp16/infer",
     {"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 1], "data": [1.0]}]}, 400, "FP16"),
    ("BF16 in JSON", "/v2/models/identity_bf16/infer",
     {"inputs": [{"name": "input", "datatype": "BF16", "shape": [1, 1], "data": [1.0]}]}, 400, "BF16"),
    ("unknown datatype", "/v2/models/dense/infer", {"inputs": [{**_GOOD, "datatype": "FLOAT"}]}, 400, "FLOAT"),
    ("missing inputs", "/v2/models/dense/infer", {"id": "1"}, 400, "inputs"),
    ("unknown output", "/v2/models/dense/infer", {"inputs": [_GOOD], "outputs": [{"name": "w"}]}, 400, "'w'"),
    ("missing input", "/v2/models/two_io/infer",
     {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}]}, 400, "'b'"),
    ("string data for FP32", "/v2/models/dense/infer", {"inputs": [{**_GOOD, "data": ["a"] * 16}]}, 400, "FP32"),
    ("not ready model", "/v2/models/broken/infer", {"inputs": [_GOOD]}, 503, "broken"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "path", "doc", "status", "needle"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_clear_4xx(
    server: ServerProcess, case: str, path: str, doc: dict[str, object], status: int, needle: str
) -> None:
    resp = _post(server, path, content=orjson.dumps(doc))
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert needle in resp.json()["error"]


def test_malformed_json_and_bad_header_length(server: ServerProcess) -> None:
    resp = _post(server, "/v2/models/dense/infer", content=b"{not json")
    assert resp.status_code == 400 and "malformed JSON" in resp.json()["error"]
    resp = _post(server, "/v2/models/dense/infer", content=b"[1, 2]")
    assert resp.status_code == 400 and "JSON object" in resp.json()["error"]
    resp = _post(server, "/v2/models/dense/infer", content=b"{}", headers={"Inference-Header-Content-Length": "500"})
    assert resp.status_code == 400 and "Inference-Header-Content-Length" in resp.json()["error"]
    head = orjson.dumps({"inputs": [{**_GOOD, "data": None, "parameters": {"binary_data_size": 64}}]})
    resp = _post(
        server, "/v2/models/dense/infer", content=head + b"\0" * 10,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )  # fmt: skip
    assert resp.status_code == 400 and "binary_data_size" in resp.json()["error"]


def test_tritonclient_raises_on_errors(client: th.InferenceServerClient) -> None:
    inp = th.InferInput("x", [1, 15], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 15), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("dense", [inp])
    with pytest.raises(InferenceServerException, match="not found"):
        client.get_model_metadata("nope")


def test_unknown_route_is_json_404(server: ServerProcess) -> None:
    resp = httpx.get(f"{server.http_url}/v2/nothing/here")
    assert resp.status_code == 404 and "error" in resp.json()


def test_body_over_limit_is_413(onnx_store: Path, tmp_path: Path) -> None:
    small = ServerProcess(
        onnx_store, tmp_path, ["--poll-interval", "0", "--no-strict-readiness", "--max-request-bytes", "2048"]
    ).start()
    try:
        doc = orjson.dumps({"inputs": [{**_GOOD, "shape": [100, 16], "data": [0.5] * 1600}]})
        resp = httpx.post(f"{small.http_url}/v2/models/dense/infer", content=doc)
        assert resp.status_code == 413 and "exceeds the limit" in resp.json()["error"]
        packed = gzip.compress(doc)
        assert len(packed) < 2048
        resp = httpx.post(
            f"{small.http_url}/v2/models/dense/infer", content=packed, headers={"Content-Encoding": "gzip"}
        )
        assert resp.status_code == 413
        assert httpx.get(f"{small.http_url}/v2/health/ready").status_code == 200
    finally:
        small.stop()


def test_repository_load_and_unload(onnx_store: Path, tmp_path: Path) -> None:
    proc = ServerProcess(onnx_store, tmp_path, ["--model-control", "explicit", "--load-model", "dense"]).start()
    try:
        client = th.InferenceServerClient(proc.http)
        assert client.is_model_ready("dense")
        assert not client.is_model_ready("two_io")
        client.load_model("two_io")
        assert client.is_model_ready("two_io")
        client.unload_model("two_io")
        assert not client.is_model_ready("two_io")
        with pytest.raises(InferenceServerException):
            client.load_model("does_not_exist")
        with pytest.raises(InferenceServerException):
            client.load_model("../etc")
        assert client.is_server_ready()
    finally:
        proc.stop()
