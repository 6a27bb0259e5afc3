"""Overload: 256 concurrent clients against a model with a small queue are shed at once with 429 /
RESOURCE_EXHAUSTED; accepted requests keep a bounded latency and the server stays up.

"Bounded" is checked against the storm itself, not against a wall-clock figure that a slower or busier machine
could miss: no more than max_queue_size + instances requests are ever admitted, so (Little's law) the mean time an
accepted request waits for the model is at most that many times the storm's seconds per accepted request. Without
shedding, the 256 clients would queue behind each other and the mean wait would be some 256 service times."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.onnx_models import slow_model
from tests.serving import ServerProcess

X = np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
INSTANCES = 1
MAX_QUEUE_SIZE = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("overload_store")
    slow_model(root / "slow" / "1" / "model.onnx")
    (root / "slow" / "config.yaml").write_text(f"instances: {INSTANCES}\nmax_queue_size: {MAX_QUEUE_SIZE}\n")
    proc = ServerProcess(root, tmp_path_factory.mktemp("overload"), ["--poll-interval", "0"]).start()
    yield proc
    proc.stop()


async def _grpc_storm(address: str, clients: int, seconds: float) -> tuple[Counter[str], list[float]]:
    request = service_pb2.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1024])
    request.raw_input_contents.append(X.tobytes())
    codes: Counter[str] = Counter()
    accepted: list[float] = []
    stop = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def client() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    await stub.ModelInfer(request, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    await asyncio.sleep(0.005)
                    continue
                codes["OK"] += 1
                accepted.append(time.perf_counter() - t0)

        await asyncio.gather(*(client() for _ in range(clients)))
    return codes, accepted


async def _rest_storm(url: str, clients: int, seconds: float) -> Counter[int]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1024], "data": X.reshape(-1).tolist()}]}
    statuses: Counter[int] = Counter()
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def client() -> None:
            while time.perf_counter() < stop:
                resp = await http.post("/v2/models/slow/infer", json=body)
                statuses[resp.status_code] += 1
                if resp.status_code == 429:
                    assert "overloaded" in resp.json()["error"]
                    await asyncio.sleep(0.005)

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def _queue_wait(server: ServerProcess, protocol: str) -> tuple[float, float]:
    """(seconds, requests) the gateway's queue-stage histogram of the slow model holds: accepted requests only."""
    found = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{server.http_url}/metrics", timeout=30).text):
        if family.name != "tensorgate_queue_duration_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("model") == "slow" and sample.labels.get("protocol") == protocol:
                kind = sample.name.rsplit("_", 1)[1]
                if kind in found:
                    found[kind] += sample.value
    return found["sum"], found["count"]


def test_grpc_overload_sheds_with_resource_exhausted(server: ServerProcess) -> None:
    waited_before, counted_before = _queue_wait(server, "grpc")
    started = time.perf_counter()
    codes, accepted = asyncio.run(_grpc_storm(server.grpc, 256, 4.0))
    seconds = time.perf_counter() - started
    waited_after, counted_after = _queue_wait(server, "grpc")
    assert codes["RESOURCE_EXHAUSTED"] > 0, codes
    assert codes["OK"] > 0, codes
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert len(accepted) == codes["OK"] == counted_after - counted_before, "the gateway timed every accepted request"
    # At most queue + instances requests are admitted at any moment, so the waits of the accepted requests, which
    # all lie inside the storm, add up to at most that many times its length: the mean wait is bounded by
    # max_queue_size + instances times the storm's seconds per accepted request (the model's service time under
    # this very load), however fast or busy the machine is.
    service = seconds / codes["OK"]
    mean_wait = (waited_after - waited_before) / codes["OK"]
    bound = (MAX_QUEUE_SIZE + INSTANCES) * service
    assert mean_wait <= bound, (
        f"accepted requests waited {mean_wait * 1000:.1f} ms on average for the model, more than "
        f"{MAX_QUEUE_SIZE + INSTANCES} x {service * 1000:.2f} ms per accepted request: the queue was not bounded"
    )
    assert httpx.get(f"{server.http_url}/v2/health/ready").status_code == 200


def test_rest_overload_sheds_with_429(server: ServerProcess) -> None:
    statuses = asyncio.run(_rest_storm(server.http_url, 256, 3.0))
    assert statuses[429] > 0 and statuses[200] > 0, statuses
    assert set(statuses) <= {200, 429}, statuses
    assert httpx.get(f"{server.http_url}/v2/health/live").status_code == 200
