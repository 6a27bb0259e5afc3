"""``--workers 2`` behaves like one server to every client: a system shared-memory region registered (or
unregistered) through one connection holds on every worker, also on a worker restarted after SIGKILL; the
statistics extension (REST and gRPC) and ``--metrics-compat triton`` count exactly what the clients sent across
workers; API keys and TLS hold on every worker; ``--memory-budget`` with workers is refused at startup."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import tritonclient.utils.shared_memory as shm
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.credentials import CertificateAuthority, write_keys
from tests.e2e.test_workers import X, body, expected, per_worker, workers_of
from tests.onnx_models import dense_model
from tests.serving import ServerProcess, metric_value, wait_until

SIZE = X.nbytes  # the input: 1 x 16 FP32
OUT = 4 * 4  # the output: 1 x 4 FP32
TRIES = 200  # new connections until the kernel has handed some to each worker


TRITON_LINE = re.compile(r"(?P<name>nv_inference_\w+)\{(?P<labels>[^}]*)\} (?P<value>\S+)")


def both_answered(before: dict[str, float], after: dict[str, float]) -> bool:
    return all(after.get(slot, 0) > before.get(slot, 0) for slot in ("0", "1"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fleet")
    for name in ("dense", "counted"):
        dense_model(tmp / "store" / name / "1" / "model.onnx")
    args = ["--workers", "2", "--poll-interval", "0", "--allow-client-shm", "--metrics-compat", "triton"]
    server = ServerProcess(tmp / "store", tmp, args).start()
    yield server
    server.stop()


@pytest.fixture
def regions(fleet: ServerProcess) -> Iterator[Callable[[str, int], tuple[Any, str]]]:
    """Creates shared-memory objects (unique keys); afterwards unregisters every region and destroys them."""
    made: list[Any] = []

    def create(name: str, byte_size: int) -> tuple[Any, str]:
        key = f"/tg_fleet_{uuid.uuid4().hex[:12]}"
        made.append(shm.create_shared_memory_region(name, key, byte_size))
        return made[-1], key

    yield create
    httpx.post(f"{fleet.http_url}/v2/systemsharedmemory/unregister", timeout=30).raise_for_status()
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def shm_infer(fleet: ServerProcess, out_handle: Any) -> np.ndarray:
    """One request on a new connection, its input and output in shared memory; the output read from there."""
    client = th.InferenceServerClient(fleet.http)
    try:
        inp = th.InferInput("x", [1, 16], "FP32")
        inp.set_shared_memory("input", SIZE)
        out = th.InferRequestedOutput("y")
        out.set_shared_memory("output", OUT)
        result = client.infer("dense", [inp], outputs=[out])
        header = result.get_output("y")
        assert "data" not in header
        return shm.get_contents_as_numpy(out_handle, np.float32, header["shape"])
    finally:
        client.close()


def register_both(fleet: ServerProcess, regions: Callable[[str, int], tuple[Any, str]], over: Any = th) -> Any:
    """Registers the input (holding X) and output regions through one connection (one worker), over REST (``th``)
    or gRPC (``tg``); the output region's handle."""
    in_handle, in_key = regions("input", SIZE)
    shm.set_shared_memory_region(in_handle, [X])
    out_handle, out_key = regions("output", OUT)
    client = over.InferenceServerClient(fleet.http if over is th else fleet.grpc)
    try:
        client.register_system_shared_memory("input", in_key, SIZE)
        client.register_system_shared_memory("output", out_key, OUT)
    finally:
        client.close()
    return out_handle


def infer_until_both_answered(fleet: ServerProcess, out_handle: Any) -> int:
    before = per_worker(fleet, "rest")
    for sent in range(1, TRIES + 1):
        shm.set_shared_memory_region(out_handle, [np.zeros((1, 4), np.float32)])
        np.testing.assert_allclose(shm_infer(fleet, out_handle), expected(0), rtol=1e-5)
        if sent >= 4 and both_answered(before, per_worker(fleet, "rest")):
            return sent
    raise AssertionError(f"not both workers answered in {TRIES} connections: {per_worker(fleet, 'rest')}")


def test_regions_registered_through_one_worker_serve_on_every_worker(
    fleet: ServerProcess, regions: Callable[[str, int], tuple[Any, str]]
) -> None:
    out_handle = register_both(fleet, regions)
    infer_until_both_answered(fleet, out_handle)
    # the worker that receives a register checks it first: the usual errors, and nothing is registered
    bad = httpx.post(
        f"{fleet.http_url}/v2/systemsharedmemory/region/bad/register",
        json={"key": "/tg_fleet_missing", "offset": 0, "byte_size": 8},
    )
    assert bad.status_code == 400 and "no shared memory object" in bad.text, bad.text
    again = httpx.post(
        f"{fleet.http_url}/v2/systemsharedmemory/region/input/register",
        json={"key": "/tg_fleet_other", "offset": 0, "byte_size": 8},
    )
    assert again.status_code == 409 and "already registered" in again.text, again.text
    # status on every worker (status is each worker's own): the same two regions, never "bad"
    for _ in range(10):
        status = httpx.get(f"{fleet.http_url}/v2/systemsharedmemory/status").json()
        assert sorted(r["name"] for r in status) == ["input", "output"]
    # unregistered through one connection: unknown to every worker
    with th.InferenceServerClient(fleet.http) as client:
        client.unregister_system_shared_memory("input")
    before = per_worker(fleet, "rest")
    for _ in range(TRIES):
        with pytest.raises(InferenceServerException, match="input"):
            shm_infer(fleet, out_handle)
        if both_answered(before, per_worker(fleet, "rest")):
            break
    assert both_answered(before, per_worker(fleet, "rest")), per_worker(fleet, "rest")
    for _ in range(10):
        status = httpx.get(f"{fleet.http_url}/v2/systemsharedmemory/status").json()
        assert [r["name"] for r in status] == ["output"]


def stats_of(fleet: ServerProcess, model: str) -> dict[str, Any]:
    rows = httpx.get(f"{fleet.http_url}/v2/models/{model}/stats", timeout=30).json()["model_stats"]
    assert [r["version"] for r in rows] == ["1"], rows
    return dict(rows[0])


def test_a_restarted_worker_knows_the_regions_and_statistics_keep_the_dead_workers_counts(
    fleet: ServerProcess, regions: Callable[[str, int], tuple[Any, str]]
) -> None:
    out_handle = register_both(fleet, regions, over=tg)
    infer_until_both_answered(fleet, out_handle)
    settled = stats_of(fleet, "dense")  # every worker's counts now, as the supervisor holds them
    victim = workers_of(fleet)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in workers_of(fleet) and len(workers_of(fleet)) == 2, "a new worker", server=fleet)
    wait_until(lambda: httpx.get(f"{fleet.http_url}/v2/health/ready").status_code == 200, "ready", server=fleet)
    wait_until(lambda: metric_value(fleet, "tensorgate_workers") == 2, "both workers scraped", server=fleet)
    # the dead worker's counts stay in the statistics: nothing was sent between the last call and the kill
    assert stats_of(fleet, "dense")["inference_count"] == settled["inference_count"]
    sent = infer_until_both_answered(fleet, out_handle)  # the new worker serves the regions it never saw registered
    after = stats_of(fleet, "dense")
    assert after["inference_count"] == settled["inference_count"] + sent
    assert after["inference_stats"]["success"]["count"] == settled["inference_stats"]["success"]["count"] + sent


def triton_samples(fleet: ServerProcess, model: str) -> dict[tuple[str, str], float]:
    """Triton's families of one model: (name, reason) -> value (read as Triton's exporter writes them)."""
    found: dict[tuple[str, str], float] = {}
    for line in fleet.client.get("/metrics").text.splitlines():
        match = TRITON_LINE.fullmatch(line)
        if match is not None and f'model="{model}"' in match["labels"]:
            reason = re.search(r'reason="(\w+)"', match["labels"])
            found[(match["name"], reason[1] if reason else "")] = float(match["value"])
    return found


def test_statistics_and_triton_metrics_count_every_workers_requests(fleet: ServerProcess) -> None:
    url = f"{fleet.http_url}/v2/models/counted/infer"
    rest_before, grpc_before = per_worker(fleet, "rest"), per_worker(fleet, "grpc")
    sent_rest = sent_grpc = 0
    for _ in range(TRIES):
        resp = httpx.post(url, json=body(), timeout=30)  # a new connection each
        resp.raise_for_status()
        sent_rest += 1
        with tg.InferenceServerClient(fleet.grpc) as client:  # a channel of its own
            inp = tg.InferInput("x", [1, 16], "FP32")
            inp.set_data_from_numpy(X)
            np.testing.assert_allclose(client.infer("counted", [inp]).as_numpy("y"), expected(0), rtol=1e-5)
        sent_grpc += 1
        if both_answered(rest_before, per_worker(fleet, "rest")) and both_answered(
            grpc_before, per_worker(fleet, "grpc")
        ):
            break
    assert both_answered(grpc_before, per_worker(fleet, "grpc")), per_worker(fleet, "grpc")
    bad = httpx.post(url, json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert bad.status_code == 400, bad.text
    sent = sent_rest + sent_grpc
    for _ in range(6):  # new connections: whichever worker answers, the sums over both
        stats = stats_of(fleet, "counted")
        assert stats["inference_count"] == sent and stats["execution_count"] == sent, stats
        assert stats["inference_stats"]["success"]["count"] == sent
        assert stats["inference_stats"]["queue"]["count"] == sent
        assert stats["inference_stats"]["compute_infer"]["count"] == sent
        assert sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) == sent
        with tg.InferenceServerClient(fleet.grpc) as client:
            grpc_stats = client.get_inference_statistics("counted", as_json=True)["model_stats"]
        assert [int(r["inference_count"]) for r in grpc_stats] == [sent], grpc_stats
        assert int(grpc_stats[0]["inference_stats"]["success"]["count"]) == sent
        nv = triton_samples(fleet, "counted")
        assert nv[("nv_inference_request_success", "")] == sent, nv
        assert nv[("nv_inference_count", "")] == sent
        assert nv[("nv_inference_exec_count", "")] == sent
        assert nv[("nv_inference_request_failure", "OTHER")] == 1
        assert nv[("nv_inference_request_failure", "BACKEND")] == 0
        assert nv[("nv_inference_request_duration_us", "")] == stats["inference_stats"]["success"]["ns"] // 1000
    everything = httpx.get(f"{fleet.http_url}/v2/models/stats").json()["model_stats"]
    assert {r["name"]: r["inference_count"] for r in everything}["counted"] == sent


def test_memory_budget_with_workers_is_refused(tmp_path: Path) -> None:
    dense_model(tmp_path / "store" / "dense" / "1" / "model.onnx")
    cmd = [sys.executable, "-m", "gateway", "serve", "--store", str(tmp_path / "store"), "--host", "127.0.0.1",
           "--http-port", "0", "--grpc-port", "0", "--workers", "2", "--memory-budget", "1G"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--memory-budget" in done.stderr and "--workers" in done.stderr, done.stderr


def test_api_keys_and_tls_hold_on_every_worker(tmp_path: Path) -> None:
    key = "k-fleet-tls-1"
    dense_model(tmp_path / "store" / "dense" / "1" / "model.onnx")
    ca = CertificateAuthority(tmp_path / "ca")
    cert = ca.issue("server", "tensorgate", server=True)
    keys = write_keys(tmp_path / "keys.yaml", {key: {"id": "app", "scopes": ["infer", "read"]}})
    args = ["--workers", "2", "--poll-interval", "0", "--metrics-port", "0", "--auth-keys", str(keys),
            "--tls-cert", str(cert.cert), "--tls-key", str(cert.key)]  # fmt: skip
    server = ServerProcess(tmp_path / "store", tmp_path, args).start(wait_ready=False)
    probes = f"http://127.0.0.1:{server.ports['metrics']}"  # plain HTTP, no keys: the probes' port
    try:
        wait_until(lambda: httpx.get(f"{probes}/v2/health/ready").status_code == 200, "ready", server=server)
        https = f"https://127.0.0.1:{server.ports['http']}"
        verify = str(ca.files.cert)
        trust = ssl.create_default_context(cafile=verify)

        def answered(protocol: str) -> dict[str, float]:
            text = httpx.get(f"{probes}/metrics").text
            return {
                s.labels["worker"]: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "tensorgate_worker_requests_total" and s.labels["protocol"] == protocol
            }

        credentials = grpc.ssl_channel_credentials(ca.files.cert.read_bytes())
        with grpc.secure_channel(server.grpc, credentials) as channel:  # no key: refused
            from tritonclient.grpc import service_pb2, service_pb2_grpc

            with pytest.raises(grpc.RpcError) as caught:
                service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                    service_pb2.ModelMetadataRequest(name="dense"), timeout=30
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for _ in range(10):  # new connections, no key: refused on whichever worker
            resp = httpx.post(f"{https}/v2/models/dense/infer", json=body(), verify=trust, timeout=30)
            assert resp.status_code == 401, resp.text
        for _ in range(TRIES):
            resp = httpx.post(
                f"{https}/v2/models/dense/infer", json=body(), verify=trust, headers={"x-api-key": key}, timeout=30
            )
            assert resp.status_code == 200, resp.text
            out = resp.json()["outputs"][0]
            np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(out["shape"]), expected(0), 1e-5)
            client = tg.InferenceServerClient(server.grpc, ssl=True, root_certificates=verify)
            try:
                inp = tg.InferInput("x", [1, 16], "FP32")
                inp.set_data_from_numpy(X)
                y = client.infer("dense", [inp], headers={"authorization": f"Bearer {key}"}).as_numpy("y")
                np.testing.assert_allclose(y, expected(0), rtol=1e-5)
            finally:
                client.close()
            rest, grpc_counts = answered("rest"), answered("grpc")
            if both_answered({}, rest) and both_answered({}, grpc_counts):
                break
        assert both_answered({}, answered("rest")) and both_answered({}, answered("grpc")), answered("rest")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{server.ports['http']}/v2/health/ready", timeout=10)  # no plain HTTP
    finally:
        code = server.stop()
    assert code == 0, server.log()
