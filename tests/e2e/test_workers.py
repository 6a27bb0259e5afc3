"""``tensorgate serve --workers 2``: both workers answer REST and gRPC on the shared ports, /metrics sums them
exactly (also across a worker's restart), a SIGKILLed worker is replaced while the server keeps answering, a
version swap leaves no worker on the old version, the repository API acts on every worker, SIGTERM exits 0."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg

from gateway.server.supervisor import SNAPSHOT_EVERY
from tests.onnx_models import dense_model, dense_weights
from tests.serving import ServerProcess, index_row, metric_samples, metric_series, metric_value, wait_until

X = np.arange(16, dtype=np.float32).reshape(1, 16) / 16


def expected(seed: int) -> np.ndarray:
    w, b = dense_weights(seed=seed)
    return X @ w + b


def body() -> dict[str, object]:
    return {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": X.ravel().tolist()}]}


def workers_of(server: ServerProcess) -> list[int]:
    """The worker processes' pids (the supervisor's children)."""
    assert server.proc is not None
    pid = server.proc.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def requests_total(server: ServerProcess, protocol: str | None = None) -> float:
    labels = {"model": "dense", "code": "OK"}
    if protocol is not None:
        labels["protocol"] = protocol
    return sum(metric_samples(server, "tensorgate_requests_total", **labels))


def per_worker(server: ServerProcess, protocol: str) -> dict[str, float]:
    return {
        labels["worker"]: value
        for labels, value in metric_series(server, "tensorgate_worker_requests_total")
        if labels["protocol"] == protocol
    }


def rest_infer(url: str) -> np.ndarray:
    """One request on a new connection (so that successive calls land on either worker)."""
    resp = httpx.post(f"{url}/v2/models/dense/infer", json=body(), timeout=30)
    resp.raise_for_status()
    out = resp.json()["outputs"][0]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def grpc_infer(address: str) -> tuple[str, np.ndarray]:
    client = tg.InferenceServerClient(address)  # a channel of its own: a new connection
    try:
        inp = tg.InferInput("x", [1, 16], "FP32")
        inp.set_data_from_numpy(X)
        result = client.infer("dense", [inp])
        return result.get_response().model_version, result.as_numpy("y")
    finally:
        client.close()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    dense_model(tmp_path / "store" / "dense" / "1" / "model.onnx")
    return tmp_path / "store"


@pytest.fixture
def served(store: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(store, tmp_path, ["--workers", "2", "--poll-interval", "0.2"]).start()
    yield server
    server.stop()


def test_both_workers_answer_and_metrics_sum_exactly(served: ServerProcess) -> None:
    assert len(workers_of(served)) == 2
    url = served.http_url
    sent_rest = sent_grpc = 0
    for _ in range(200):  # new connections until each worker has answered both protocols (kernel's choice)
        np.testing.assert_allclose(rest_infer(url), expected(0), rtol=1e-5)
        version, y = grpc_infer(served.grpc)
        assert version == "1"
        np.testing.assert_allclose(y, expected(0), rtol=1e-5)
        sent_rest += 1
        sent_grpc += 1
        if sent_rest >= 8 and all(
            len([v for v in per_worker(served, p).values() if v > 0]) == 2 for p in ("rest", "grpc")
        ):
            break
    rest, grpc = per_worker(served, "rest"), per_worker(served, "grpc")
    assert sorted(rest) == ["0", "1"] and all(v > 0 for v in rest.values()), rest
    assert sorted(grpc) == ["0", "1"] and all(v > 0 for v in grpc.values()), grpc
    # the sum over workers is exactly what the client sent, on any worker's /metrics
    for _ in range(6):
        assert requests_total(served, "rest") == sent_rest
        assert requests_total(served, "grpc") == sent_grpc
    assert sum(rest.values()) == sent_rest and sum(grpc.values()) == sent_grpc
    assert metric_value(served, "tensorgate_workers") == 2
    assert metric_value(served, "tensorgate_model_state", model="dense", version=1, state="READY") == 1


def test_sigkilled_worker_is_replaced_and_counts_never_go_back(served: ServerProcess) -> None:
    url = served.http_url
    for _ in range(20):
        rest_infer(url)
    before = requests_total(served)  # the supervisor now holds each worker's counts
    assert before == 20
    victim = workers_of(served)[0]
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:  # keep-alive: only in-flight calls may fail
            while not stop.is_set():
                try:
                    client.post("/v2/models/dense/infer", json=body()).raise_for_status()
                    answered[0] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: answered[0] >= 50, "requests under load", server=served)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(workers_of(served)) == 2 and victim not in workers_of(served), "a new worker", server=served)
    at_restart = answered[0]
    wait_until(lambda: answered[0] >= at_restart + 100, "answers after the restart", server=served)
    stop.set()
    for t in threads:
        t.join()
    # each client thread had at most one request in flight on the killed worker
    print(f"SIGKILL under load: {len(failures)} of {answered[0] + len(failures)} requests failed")
    assert len(failures) <= len(threads), failures
    wait_until(lambda: metric_value(served, "tensorgate_worker_restarts_total") == 1, "the restart counted")
    wait_until(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200, "ready again", server=served)
    after = requests_total(served)
    assert after >= before  # the dead worker's counts at the last scrape stay in the sums
    # with no traffic between the supervisor's last snapshot and a kill, the sums stay exact across the restart;
    # it fetches one every SNAPSHOT_EVERY seconds without a scrape
    settled = requests_total(served)
    for _ in range(10):
        rest_infer(url)
    time.sleep(2 * SNAPSHOT_EVERY + 1)
    survivor = workers_of(served)[0]
    os.kill(survivor, signal.SIGKILL)
    wait_until(lambda: survivor not in workers_of(served) and len(workers_of(served)) == 2, "another new worker")
    wait_until(lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200, "ready again", server=served)
    for _ in range(10):
        rest_infer(url)
    assert requests_total(served) == settled + 20


def test_swap_leaves_no_worker_on_the_old_version(served: ServerProcess, store: Path, tmp_path: Path) -> None:
    staging = tmp_path / "staging" / "2"
    dense_model(staging / "model.onnx", seed=7)
    shutil.move(staging, store / "dense" / "2")  # the policy (latest 1) moves to v2
    wait_until(lambda: index_row(served, "dense", 1) is None, "v1 retired", server=served)
    assert index_row(served, "dense", 2) == {"name": "dense", "version": "2", "state": "READY", "reason": ""}
    for _ in range(30):  # new connections: both workers, both protocols
        np.testing.assert_allclose(rest_infer(served.http_url), expected(7), rtol=1e-5)
        version, y = grpc_infer(served.grpc)
        assert version == "2"
        np.testing.assert_allclose(y, expected(7), rtol=1e-5)
    resp = httpx.post(f"{served.http_url}/v2/models/dense/versions/1/infer", json=body())
    assert resp.status_code in (400, 404), resp.text


def test_repository_api_acts_on_every_worker_and_sigterm_exits_0(store: Path, tmp_path: Path) -> None:
    args = ["--workers", "2", "--model-control", "explicit", "--load-model", "dense", "--metrics-port", "0"]
    server = ServerProcess(store, tmp_path, args).start()
    try:
        for _ in range(4):
            rest_infer(server.http_url)
        # the dedicated metrics port (shared by the workers like the HTTP port) serves the same sums
        text = httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/metrics").text
        assert (
            'tensorgate_requests_total{model="dense",version="1",runtime="onnx",protocol="rest",code="OK"} 4.0' in text
        )
        assert httpx.get(f"http://127.0.0.1:{server.ports['metrics']}/v2/health/ready").status_code == 200
        with tg.InferenceServerClient(server.grpc) as client:
            client.unload_model("dense")  # over gRPC, on whichever worker
        for _ in range(20):  # no worker serves it any more
            resp = httpx.post(f"{server.http_url}/v2/models/dense/infer", json=body())
            assert resp.status_code in (404, 503), resp.text
        httpx.post(f"{server.http_url}/v2/repository/models/dense/load").raise_for_status()
        for _ in range(20):
            np.testing.assert_allclose(rest_infer(server.http_url), expected(0), rtol=1e-5)
        pids = workers_of(server)
    finally:
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.log()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
