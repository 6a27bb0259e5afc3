"""End to end: a real Prometheus scrapes a real `tensorgate serve` under traffic, with the rule file loaded, and
every Grafana panel query, every template variable, every recording rule and every autoscaling query returns data.
No panel or rule may stand on a metric that does not exist."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.deploy.manifests import ADAPTER_RULES, DASHBOARD, RULES, render_chart
from tests.deploy.prometheus_server import PrometheusServer
from tests.onnx_models import dense_model

MODEL = "affine"
ROUTE = "affine_route"  # sla over affine and affine_b, mirroring half its requests to affine_drift
#: The labels the chart's ServiceMonitor puts on every series, so the chart's KEDA queries and the
#: prometheus-adapter rules can run here verbatim.
TARGET_LABELS = {"namespace": "serving", "service": "demo-tensorgate", "pod": "demo-tensorgate-7d9c-abcde"}


def tensorgate_command() -> str:
    path = Path(sys.executable).with_name("tensorgate")
    if not path.exists():
        pytest.fail(f"{path} missing: install the project (pip install -e '.[all,dev]')", pytrace=False)
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """affine: a dense ONNX layer with a p99 SLA of 20 ms; broken: an artefact that fails to load; a route over
    affine and a copy, with a drifted shadow."""
    root = tmp_path_factory.mktemp("store")
    dense_model(root / MODEL / "1" / "model.onnx", n_in=4, n_out=3)
    (root / MODEL / "config.yaml").write_text("sla:\n  p99_ms: 20\n")
    dense_model(root / "affine_b" / "1" / "model.onnx", n_in=4, n_out=3)
    dense_model(root / "affine_drift" / "1" / "model.onnx", n_in=4, n_out=3, perturb=0.05)
    (root / ROUTE).mkdir()
    (root / ROUTE / "route.yaml").write_text(
        f"policy: sla\nvariants: [{MODEL}, affine_b]\nsla: {{p99_ms: 20}}\nshadow: {{model: affine_drift, share: 0.5}}\n"
    )
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    return root


@pytest.fixture(scope="module")
def gateway(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """`tensorgate serve` on 127.0.0.1 with OS-chosen ports; yields {"http", "grpc", "metrics"}."""
    folder = tmp_path_factory.mktemp("gateway")
    port_file = folder / "ports.json"
    log_path = folder / "server.log"
    cmd = [
        tensorgate_command(), "serve", "--store", str(store), "--host", "127.0.0.1", "--http-port", "0",
        "--grpc-port", "0", "--metrics-port", "0", "--poll-interval", "1", "--port-file", str(port_file),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        ports: dict[str, int] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            if port_file.exists():
                ports = json.loads(port_file.read_text())
                try:
                    url = f"http://127.0.0.1:{ports['http']}/v2/models/{MODEL}/ready"
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        else:
            pytest.fail(f"tensorgate serve did not get {MODEL} ready:\n{log_path.read_text()[-4000:]}")
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Traffic(threading.Thread):
    """Real requests in a loop until stopped (bounded to 300 s): valid inferences, a few malformed ones, a few for
    a model that does not exist and a few for the model that failed to load."""

    def __init__(self, http_port: int) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{http_port}"
        self.stop_event = threading.Event()
        self.codes: dict[int, int] = {}
        self.error: BaseException | None = None

    def body(self, rows: int) -> dict[str, Any]:
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        return {"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}

    def run(self) -> None:
        deadline = time.monotonic() + 300
        bad_shape = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [0.0] * 5}]}
        try:
            with httpx.Client(base_url=self.base, timeout=10) as client:
                i = 0
                while not self.stop_event.is_set() and time.monotonic() < deadline:
                    i += 1
                    if i % 20 == 0:
                        resp = client.post(f"/v2/models/{MODEL}/infer", json=bad_shape)
                    elif i % 20 == 1:
                        resp = client.post("/v2/models/no_such_model/infer", json=self.body(1))
                    elif i % 20 == 2:
                        resp = client.post("/v2/models/broken/infer", json=self.body(1))
                    else:
                        target = ROUTE if i % 2 else MODEL
                        resp = client.post(f"/v2/models/{target}/infer", json=self.body(1 + i % 4))
                    self.codes[resp.status_code] = self.codes.get(resp.status_code, 0) + 1
                    time.sleep(0.01)
        except BaseException as exc:  # reported by the test that reads it
            self.error = exc


@pytest.fixture(scope="module")
def prometheus(
    gateway: dict[str, int], prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """Prometheus scraping the gateway's metrics port every second while traffic flows, once data is in."""
    traffic = Traffic(gateway["http"])
    traffic.start()
    server = PrometheusServer(
        prometheus_bin,
        tmp_path_factory.mktemp("prometheus"),
        [f"127.0.0.1:{gateway['metrics']}"],
        [RULES.resolve()],
        TARGET_LABELS,
    ).start()
    try:
        # Enough scrapes for rate() over several samples, and every recording rule evaluated at least once.
        ready = "model_runtime:tensorgate_sla_compliance:ratio_rate5m and model_runtime:tensorgate_sla_burn_rate:rate6h"
        deadline = time.monotonic() + 90
        while not server.query(ready) or len(server.query(f'tensorgate_requests_total{{model="{MODEL}"}}[6s]')) == 0:
            assert time.monotonic() < deadline, f"no data in Prometheus after 90 s:\n{server.log()}"
            time.sleep(0.5)
        # Not a fixed pause that a busy machine may outrun: wait until what the tests read is there. If something
        # never comes (a rule without data), the test that reads it says which; running out of time here is not
        # itself the failure.
        deadline = time.monotonic() + 120
        while not settled(server, traffic) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert traffic.error is None, traffic.error
        assert traffic.codes.get(200, 0) > 50, traffic.codes
        yield server
    finally:
        traffic.stop_event.set()
        traffic.join(15)
        server.stop()


def settled(server: PrometheusServer, traffic: Traffic) -> bool:
    """Over 50 good requests sent, at least 5 scrapes of the gateway with traffic in, every rule evaluated, and
    every recording rule holding data."""
    if traffic.codes.get(200, 0) <= 50:
        return False
    scrapes = server.query(f'count_over_time(tensorgate_requests_total{{model="{MODEL}", code="OK"}}[5m])')
    if not scrapes or min(float(s["value"][1]) for s in scrapes) < 5:
        return False
    rules = [rule for group in server.api("rules")["groups"] for rule in group["rules"]]
    if not rules or any(rule["health"] == "unknown" for rule in rules):
        return False
    return all(server.query(record) for record in recorded())


def substitute(expr: str) -> str:
    """A panel query as Grafana would send it for model=affine, runtime=All, route=All."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$model", MODEL)
        .replace("$runtime", ".*")
        .replace("$route", ".*")
    )


def dashboard_targets() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return out


def recorded() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]


def finite(result: list[dict[str, Any]]) -> list[float]:
    return [float(s["value"][1]) for s in result if math.isfinite(float(s["value"][1]))]


@pytest.mark.parametrize(("panel", "expr"), dashboard_targets(), ids=[t[0] for t in dashboard_targets()])
def test_dashboard_query_returns_data(prometheus: PrometheusServer, panel: str, expr: str) -> None:
    result = prometheus.query(substitute(expr))
    assert result, f"{panel}: no data for {substitute(expr)}"
    assert finite(result), f"{panel}: only NaN/Inf for {substitute(expr)}: {result}"


def test_template_variables_list_the_model_and_runtime(prometheus: PrometheusServer) -> None:
    board = json.loads(DASHBOARD.read_text())
    queries = {v["name"]: v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"}
    found: dict[str, list[str]] = {}
    for name, query in queries.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", substitute(query))
        assert match, query
        found[name] = prometheus.label_values(match.group(2), match.group(1))
    assert MODEL in found["model"] and "broken" in found["model"]
    assert found["runtime"] == ["onnx"]
    assert found["route"] == [ROUTE]


@pytest.mark.parametrize("record", recorded())
def test_recording_rule_returns_data(prometheus: PrometheusServer, record: str) -> None:
    result = prometheus.query(record)
    assert result, f"{record}: no series"
    assert all(s["metric"].get("model") != "_unknown" for s in result if "duration" in record)


def test_every_rule_evaluates_without_error(prometheus: PrometheusServer) -> None:
    groups = prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 29
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken


def test_sla_compliance_is_the_bucket_at_the_target(prometheus: PrometheusServer) -> None:
    """The recorded compliance equals the 20 ms bucket's share computed directly: the count_values join works.

    Both are taken at the instant the rule was last evaluated, so that traffic since then cannot tell them apart."""
    [target] = prometheus.query(f'tensorgate_sla_target_seconds{{model="{MODEL}", objective="p99"}}')
    assert float(target["value"][1]) == pytest.approx(0.02)
    compliance = f'model_runtime:tensorgate_sla_compliance:ratio_rate5m{{model="{MODEL}"}}'
    [stamp] = prometheus.query(f"timestamp({compliance})")
    direct = (
        f'sum(rate(tensorgate_request_duration_seconds_bucket{{model="{MODEL}", le="0.02"}}[5m]))'
        f' / sum(rate(tensorgate_request_duration_seconds_count{{model="{MODEL}"}}[5m]))'
    )
    recorded_value = prometheus.api("query", query=f"{compliance} - scalar({direct})", time=stamp["value"][1])
    assert recorded_value["result"] and abs(float(recorded_value["result"][0]["value"][1])) < 0.05


def test_model_states_reach_prometheus(prometheus: PrometheusServer) -> None:
    states = {s["metric"]["model"]: s["metric"]["state"] for s in prometheus.query("tensorgate_model_state == 1")}
    assert states[MODEL] == "READY"
    assert states["broken"] == "UNAVAILABLE", "the model-unavailable alert watches this series"
    assert prometheus.query('tensorgate_model_load_failures_total{model="broken"} > 0')


def test_chart_keda_queries_return_data(prometheus: PrometheusServer) -> None:
    for metric in ("inflight", "sla"):
        docs = render_chart({"autoscaling": {"mode": "keda", "metric": metric}})
        [scaled] = [d for d in docs if d["kind"] == "ScaledObject"]
        query = scaled["spec"]["triggers"][0]["metadata"]["query"]
        result = prometheus.query(query)
        assert result and finite(result), f"{metric}: {query} -> {result}"


def test_adapter_metrics_queries_return_data(prometheus: PrometheusServer) -> None:
    """prometheus-adapter's templates filled in as it would for the pods of the release."""
    for rule in yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]:
        series = re.match(r"\w+", rule["seriesQuery"])
        assert series
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series.group(0))
            .replace("<<.LabelMatchers>>", f'namespace="serving",pod=~"{TARGET_LABELS["pod"]}"')
            .replace("<<.GroupBy>>", "pod")
        )
        result = prometheus.query(query)
        assert result and finite(result), f"{rule['name']['as']}: {query} -> {result}"
        assert result[0]["metric"] == {"pod": TARGET_LABELS["pod"]}
