"""Exemplars end to end: with tracing on, the request-latency buckets in /metrics (OpenMetrics, as Prometheus asks
for it) carry the trace ID of a recent request, and a real Prometheus with exemplar storage stores them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.deploy.conftest import require_tool
from tests.deploy.prometheus_server import PrometheusServer
from tests.e2e.test_tracing import caller, grpc_infer, rest_infer
from tests.otlp_receiver import OtlpReceiver
from tests.serving import ServerProcess

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def bucket_exemplars(text: str, model: str) -> dict[str, set[str]]:
    """protocol -> trace IDs of the exemplars on ``model``'s request-latency buckets (parsed as OpenMetrics)."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "tensorgate_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.labels.get("model") == model and sample.exemplar is not None:
                out.setdefault(sample.labels["protocol"], set()).add(sample.exemplar.labels["trace_id"])
    return out


def test_openmetrics_buckets_carry_trace_ids(observed: ServerProcess, otlp: OtlpReceiver) -> None:
    sent = {}
    for protocol, send in (("rest", rest_infer), ("grpc", grpc_infer)):
        trace_id, _, traceparent = caller()
        send(observed, "dense", {"traceparent": traceparent})
        sent[protocol] = trace_id
    response = httpx.get(f"{observed.http_url}/metrics", headers={"accept": OPENMETRICS})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    found = bucket_exemplars(response.text, "dense")  # the OpenMetrics parser accepts the whole exposition
    for protocol, trace_id in sent.items():  # each protocol's latest request is the exemplar of its bucket
        assert trace_id in found[protocol], (protocol, trace_id, found)
    plain = httpx.get(f"{observed.http_url}/metrics").text  # the classic text format has no exemplars
    assert "# {" not in plain and "# EOF" not in plain


def test_prometheus_stores_the_exemplars(observed: ServerProcess, tmp_path: Path) -> None:
    trace_id, _, traceparent = caller()
    rest_infer(observed, "dense", {"traceparent": traceparent})
    prometheus = PrometheusServer(
        require_tool("prometheus"), tmp_path, [observed.http], [], args=["--enable-feature=exemplar-storage"]
    ).start()
    try:
        deadline = time.monotonic() + 30
        stored: set[str] = set()
        while time.monotonic() < deadline and trace_id not in stored:
            time.sleep(0.5)
            now = time.time()
            data = prometheus.api(
                "query_exemplars", query='tensorgate_request_duration_seconds_bucket{model="dense"}',
                start=now - 600, end=now + 60,
            )  # fmt: skip
            stored = {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}
        assert trace_id in stored, f"exemplars stored: {stored}\n{prometheus.log()}"
    finally:
        prometheus.stop()
