"""One table of cases, sent over REST and over gRPC: equal outputs, equivalent status codes."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import grpc
import httpx
import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.core.errors import STATUS_TABLE
from tests.serving import ServerProcess

HTTP_TO_CODE = {http: code for code, (http, _grpc) in STATUS_TABLE.items()}
HTTP_TO_CODE[413] = "RESOURCE_EXHAUSTED"


@dataclass
class Input:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    raw: bytes | None = None  # overrides the encoded bytes (to send a wrong length)


@dataclass
class Case:
    id: str
    model: str
    inputs: list[Input]
    version: str = ""
    outputs: list[str] = field(default_factory=list)
    code: str = "OK"


def _f32(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


X = _f32(2, 16)
CASES = [
    Case("dense latest", "dense", [Input("x", "FP32", [2, 16], X)]),
    Case("dense v1", "dense", [Input("x", "FP32", [2, 16], X)], version="1"),
    Case("two inputs, subset", "two_io", [Input("a", "FP32", [1, 4], _f32(1, 4)), Input("b", "FP32", [1, 4], _f32(1, 4, seed=1))], outputs=["prod"]),
    Case("int64", "identity_int64", [Input("input", "INT64", [1, 3], np.array([[1, -2, 3]], np.int64))]),
    Case("bytes", "identity_bytes", [Input("input", "BYTES", [1, 2], np.array([[b"ab", b"c"]], object))]),
    Case("bool", "identity_bool", [Input("input", "BOOL", [1, 2], np.array([[True, False]]))]),
    Case("no batch dim", "fixed", [Input("x", "FP32", [3], np.array([1, 2, 3], np.float32))]),
    Case("unknown model", "nope", [Input("x", "FP32", [2, 16], X)], code="NOT_FOUND"),
    Case("unknown version", "dense", [Input("x", "FP32", [2, 16], X)], version="5", code="NOT_FOUND"),
    Case("not ready", "broken", [Input("x", "FP32", [2, 16], X)], code="UNAVAILABLE"),
    Case("wrong input name", "dense", [Input("z", "FP32", [2, 16], X)], code="INVALID_ARGUMENT"),
    Case("wrong datatype", "dense", [Input("x", "FP64", [2, 16], X.astype(np.float64))], code="INVALID_ARGUMENT"),
    Case("wrong rank", "dense", [Input("x", "FP32", [32], X.reshape(-1))], code="INVALID_ARGUMENT"),
    Case("wrong dim", "dense", [Input("x", "FP32", [4, 8], X.reshape(4, 8))], code="INVALID_ARGUMENT"),
    Case("short data", "dense", [Input("x", "FP32", [2, 16], X, raw=X.tobytes()[:-4])], code="INVALID_ARGUMENT"),
    Case("missing input", "two_io", [Input("a", "FP32", [1, 4], _f32(1, 4))], code="INVALID_ARGUMENT"),
    Case("unknown output", "dense", [Input("x", "FP32", [2, 16], X)], outputs=["nope"], code="INVALID_ARGUMENT"),
    Case("bad BYTES", "identity_bytes", [Input("input", "BYTES", [1, 2], np.array([[b"a", b"b"]], object), raw=struct.pack("<I", 99) + b"a")], code="INVALID_ARGUMENT"),
    Case("batch mismatch", "two_io", [Input("a", "FP32", [1, 4], _f32(1, 4)), Input("b", "FP32", [2, 4], _f32(2, 4))], code="INVALID_ARGUMENT"),
]  # fmt: skip


def _raw(inp: Input) -> bytes:
    if inp.raw is not None:
        return inp.raw
    if inp.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in inp.data.reshape(-1))
    return np.ascontiguousarray(inp.data).tobytes()


def _decode(datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    if datatype == "BYTES":
        items, pos = [], 0
        while pos < len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            items.append(raw[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return np.array(items, dtype=object).reshape(shape)
    dtype = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}[datatype]
    return np.frombuffer(raw, dtype).reshape(shape)


def via_rest(server: ServerProcess, case: Case) -> tuple[str, dict[str, np.ndarray]]:
    inputs, chunks = [], []
    for inp in case.inputs:
        raw = _raw(inp)
        chunks.append(raw)
        inputs.append(
            {
                "name": inp.name,
                "datatype": inp.datatype,
                "shape": inp.shape,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    doc: dict[str, object] = {"inputs": inputs, "parameters": {"binary_data_output": True}}
    if case.outputs:
        doc["outputs"] = [{"name": n} for n in case.outputs]
    head = orjson.dumps(doc)
    path = f"/v2/models/{case.model}" + (f"/versions/{case.version}" if case.version else "") + "/infer"
    resp = httpx.post(
        server.http_url + path, content=head + b"".join(chunks),
        headers={"Inference-Header-Content-Length": str(len(head))}, timeout=10,
    )  # fmt: skip
    if resp.status_code != 200:
        assert resp.json()["error"]
        return HTTP_TO_CODE[resp.status_code], {}
    n = int(resp.headers["inference-header-content-length"])
    meta = orjson.loads(resp.content[:n])
    out, pos = {}, n
    for o in meta["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = _decode(o["datatype"], o["shape"], resp.content[pos : pos + size])
        pos += size
    return "OK", out


def via_grpc(stub: service_pb2_grpc.GRPCInferenceServiceStub, case: Case) -> tuple[str, dict[str, np.ndarray]]:
    request = service_pb2.ModelInferRequest(model_name=case.model, model_version=case.version)
    for inp in case.inputs:
        request.inputs.add(name=inp.name, datatype=inp.datatype, shape=inp.shape)
        request.raw_input_contents.append(_raw(inp))
    for name in case.outputs:
        request.outputs.add(name=name)
    try:
        response = stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.details()
        return exc.code().name, {}
    return "OK", {
        o.name: _decode(o.datatype, list(o.shape), raw)
        for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rest_and_grpc_agree(
    server: ServerProcess, stub: service_pb2_grpc.GRPCInferenceServiceStub, case: Case
) -> None:
    rest_code, rest_out = via_rest(server, case)
    grpc_code, grpc_out = via_grpc(stub, case)
    assert rest_code == grpc_code == case.code
    assert rest_out.keys() == grpc_out.keys()
    for name in rest_out:
        np.testing.assert_array_equal(rest_out[name], grpc_out[name])
    if case.code == "OK":
        assert rest_out
