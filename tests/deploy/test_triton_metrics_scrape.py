"""End to end: ``tensorgate serve --metrics-compat triton`` scraped by a real Prometheus answers the queries of
Triton's usual dashboards and HPAs, under Triton's names and labels, with counts equal to what the clients sent."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.deploy.prometheus_server import PrometheusServer
from tests.onnx_models import dense_model
from tests.serving import ServerProcess, wait_until

#: model -> (successful requests, rows per request, failed requests) the clients send
PLAN = {"dense": (12, 1, 3), "batched": (24, 2, 0)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("triton_metrics_store")
    dense_model(root / "dense" / "1" / "model.onnx")
    dense_model(root / "batched" / "1" / "model.onnx")
    (root / "batched" / "config.yaml").write_text("batching: {max_batch_size: 16, max_queue_delay_ms: 20}\n")
    args = ["--poll-interval", "0", "--metrics-compat", "triton"]
    proc = ServerProcess(root, tmp_path_factory.mktemp("triton_metrics"), args).start()
    yield proc
    proc.stop()


def infer(server: ServerProcess, model: str, rows: int, good: bool, use_grpc: bool) -> bool:
    """One request over HTTP or gRPC; whether it succeeded."""
    lib: Any = tg if use_grpc else th
    client = lib.InferenceServerClient(server.grpc if use_grpc else server.http)
    width = 16 if good else 5
    x = lib.InferInput("x", [rows, width], "FP32")
    x.set_data_from_numpy(np.random.default_rng(rows).standard_normal((rows, width)).astype(np.float32))
    try:
        client.infer(model, [x])
    except InferenceServerException:
        return False
    finally:
        client.close()
    return True


@pytest.fixture(scope="module")
def scraped(
    server: ServerProcess, prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrometheusServer, float]]:
    """Prometheus scraping /metrics every second; the clients' traffic sent once it has seen every model at 0, so
    rate() has a sample before and after. Yields Prometheus and the time of the first scrape holding every count."""
    prom = PrometheusServer(prometheus_bin, tmp_path_factory.mktemp("prom"), [server.http], []).start()
    try:
        wait_until(
            lambda: len(prom.query("nv_inference_request_success == 0")) == len(PLAN),
            "Prometheus to scrape every model's nv_inference_request_success at 0",
            server=server,
        )
        jobs = [
            (model, rows, i >= ok, i % 2 == 1)  # (model, rows, good, over gRPC)
            for model, (ok, rows, bad) in PLAN.items()
            for i in range(ok + bad)
        ]
        with ThreadPoolExecutor(8) as pool:  # concurrent, so the batched model does batch
            results = list(pool.map(lambda j: (j[0], infer(server, j[0], j[1], not j[2], j[3])), jobs))
        for model, (ok, _rows, bad) in PLAN.items():
            assert [r for m, r in results if m == model].count(True) == ok
            assert [r for m, r in results if m == model].count(False) == bad
        total = sum(ok for ok, _, _ in PLAN.values())
        wait_until(
            lambda: (
                prom.query("sum(nv_inference_request_success)")
                and float(prom.query("sum(nv_inference_request_success)")[0]["value"][1]) == total
            ),
            "Prometheus to scrape the final counts",
            server=server,
        )
        # the first scrape holding each model's final count (the same scrape for every model: one target)
        firsts = [
            min(float(t) for t, v in s["values"] if float(v) == PLAN[s["metric"]["model"]][0])
            for s in prom.query("nv_inference_request_success[5m]")
        ]
        yield prom, max(firsts)
    finally:
        prom.stop()


def at(prom: PrometheusServer, expr: str, when: float) -> dict[str, float]:
    """An instant query evaluated at ``when``: model -> value."""
    result = prom.api("query", query=expr, time=when)["result"]
    return {s["metric"].get("model", ""): float(s["value"][1]) for s in result}


def test_counts_equal_what_the_clients_sent(scraped: tuple[PrometheusServer, float], server: ServerProcess) -> None:
    prom, _ = scraped
    success = {s["metric"]["model"]: float(s["value"][1]) for s in prom.query("nv_inference_request_success")}
    assert success == {model: float(ok) for model, (ok, _, _) in PLAN.items()}
    failures = {
        (s["metric"]["model"], s["metric"]["reason"]): float(s["value"][1])
        for s in prom.query("nv_inference_request_failure")
    }
    assert failures == {
        (model, reason): float(bad if reason == "OTHER" else 0)  # bad input is OTHER in Triton's reasons
        for model, (_, _, bad) in PLAN.items()
        for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER")
    }
    inferences = {s["metric"]["model"]: float(s["value"][1]) for s in prom.query("nv_inference_count")}
    assert inferences == {model: float(ok * rows) for model, (ok, rows, _) in PLAN.items()}
    executions = {s["metric"]["model"]: float(s["value"][1]) for s in prom.query("nv_inference_exec_count")}
    stats = {m: server.client.get(f"/v2/models/{m}/stats").json()["model_stats"][0] for m in PLAN}
    assert executions == {m: float(stats[m]["execution_count"]) for m in PLAN}
    assert executions["batched"] < inferences["batched"]  # one execution serves several inferences
    labels = {frozenset(s["metric"]) for s in prom.query("{__name__=~'nv_inference_.*'}")}
    assert labels == {
        frozenset({"__name__", "model", "version", "instance", "job"}),
        frozenset({"__name__", "model", "version", "reason", "instance", "job"}),
    }


def test_dashboard_request_rate_per_model(scraped: tuple[PrometheusServer, float]) -> None:
    prom, when = scraped
    rates = at(prom, "rate(nv_inference_request_success[1m])", when)
    assert set(rates) == set(PLAN)
    assert all(r > 0 and math.isfinite(r) for r in rates.values()), rates
    by_model = at(prom, "sum by (model) (rate(nv_inference_request_success[1m]))", when)
    assert by_model.keys() == rates.keys()


def test_dashboard_average_queue_time_per_request(
    scraped: tuple[PrometheusServer, float], server: ServerProcess
) -> None:
    """Both series are scraped together, so the ratio of their rates is the ratio of their increases: the average
    queue time per request since the scrape before the traffic, which is the server's own statistics' average."""
    prom, when = scraped
    query = "rate(nv_inference_queue_duration_us[1m]) / rate(nv_inference_request_success[1m])"
    average = at(prom, query, when)
    assert set(average) == set(PLAN)
    for model, (ok, _, _) in PLAN.items():
        stats = server.client.get(f"/v2/models/{model}/stats").json()["model_stats"][0]["inference_stats"]
        assert average[model] == pytest.approx((stats["queue"]["ns"] // 1000) / ok, rel=1e-6)
    assert average["batched"] > 0  # requests wait for their batch
    [request_us] = at(prom, 'nv_inference_request_duration_us{model="dense"}', when).values()
    [infer_us] = at(prom, 'nv_inference_compute_infer_duration_us{model="dense"}', when).values()
    assert request_us >= infer_us > 0
