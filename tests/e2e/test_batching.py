"""Dynamic batching under concurrent load: every result equals the unbatched result, request by request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.onnx_models import dense_model, two_io_model
from tests.serving import ServerProcess


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    root = tmp_path_factory.mktemp("batch_store")
    dense_model(root / "dense" / "1" / "model.onnx", seed=3)
    (root / "dense" / "config.yaml").write_text(
        "batching: {max_batch_size: 16, max_queue_delay_ms: 20}\ninstances: 1\n"
    )
    two_io_model(root / "pair" / "1" / "model.onnx")
    (root / "pair" / "config.yaml").write_text("batching: {max_batch_size: 8, max_queue_delay_ms: 20}\n")
    proc = ServerProcess(root, tmp_path_factory.mktemp("batch_server"), ["--poll-interval", "0"]).start()
    proc.root = root  # type: ignore[attr-defined]
    yield proc  # type: ignore[misc]
    proc.stop()


async def _fire(address: str, requests: list[service_pb2.ModelInferRequest]) -> list[object]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def one(req: service_pb2.ModelInferRequest) -> object:
            try:
                return await stub.ModelInfer(req, timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc

        return await asyncio.gather(*(one(r) for r in requests))


def test_batched_results_equal_unbatched(batching_server: ServerProcess) -> None:
    root: Path = batching_server.root  # type: ignore[attr-defined]
    session = ort.InferenceSession(str(root / "dense" / "1" / "model.onnx"))
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(96)]
    requests = []
    for i, x in enumerate(inputs):
        req = service_pb2.ModelInferRequest(model_name="dense", id=str(i))
        req.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
        requests.append(req)
    # a bad request in the middle of the load fails alone
    bad = service_pb2.ModelInferRequest(model_name="dense", id="bad")
    bad.inputs.add(name="x", datatype="FP32", shape=[1, 16])
    bad.raw_input_contents.append(b"\0" * 8)
    requests.insert(40, bad)
    responses = asyncio.run(_fire(batching_server.grpc, requests))
    bad_response = responses.pop(40)
    assert isinstance(bad_response, grpc.aio.AioRpcError)
    assert bad_response.code() == grpc.StatusCode.INVALID_ARGUMENT
    for i, (x, response) in enumerate(zip(inputs, responses, strict=True)):
        assert not isinstance(response, Exception), response
        assert response.id == str(i)  # type: ignore[attr-defined]
        got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(x.shape[0], 4)  # type: ignore[attr-defined]
        np.testing.assert_allclose(got, session.run(None, {"x": x})[0], rtol=1e-6, atol=1e-6)
    text = httpx.get(f"{batching_server.http_url}/metrics").text
    sizes = {
        s.labels["le"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "tensorgate_batch_size"
        for s in f.samples
        if s.name.endswith("_bucket") and s.labels["model"] == "dense"
    }
    total = sizes["+Inf"]
    assert 0 < total < 96, "requests were not combined into batches"
    assert sizes["1.0"] < total  # some executions carried more than one request


def test_batching_with_two_inputs_and_output_subsets(batching_server: ServerProcess) -> None:
    rng = np.random.default_rng(5)
    pairs = [
        (rng.standard_normal((1, 4)).astype(np.float32), rng.standard_normal((1, 4)).astype(np.float32))
        for _ in range(24)
    ]
    requests = []
    for i, (a, b) in enumerate(pairs):
        req = service_pb2.ModelInferRequest(model_name="pair")
        for name, arr in (("a", a), ("b", b)):
            req.inputs.add(name=name, datatype="FP32", shape=[1, 4])
            req.raw_input_contents.append(arr.tobytes())
        req.outputs.add(name="sum" if i % 2 else "prod")
        requests.append(req)
    responses = asyncio.run(_fire(batching_server.grpc, requests))
    for i, ((a, b), response) in enumerate(zip(pairs, responses, strict=True)):
        assert [o.name for o in response.outputs] == ["sum" if i % 2 else "prod"]  # type: ignore[attr-defined]
        got = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(1, 4)  # type: ignore[attr-defined]
        np.testing.assert_allclose(got, a + b if i % 2 else a * b, rtol=1e-6)
