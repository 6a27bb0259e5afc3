"""Renderer: OpenMetrics that the reference parser accepts (exemplars on the request buckets, counters named as
OpenMetrics wants, ``# EOF``), the classic text format unchanged for the same data, a series re-rendered only when
it changed, and reads from another thread while the loop writes."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from gateway.telemetry.metrics import STAGE_BUCKETS, Metrics

KEY3 = ("m", "1", "onnx")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics()
    m.set_sla(*KEY3, {"p99": 0.02})
    m.set_state(*KEY3, "READY")
    m.observe_load(*KEY3, 0.4, ok=True)
    m.observe_batch(KEY3, 3)
    return m


def test_openmetrics_parses_and_carries_exemplars(metrics: Metrics) -> None:
    series = metrics.series(*KEY3, "rest")
    series.observe("OK", 0.0042, 0.001, 0.002, 0.0012, TRACE)
    series.observe("OK", 0.3, 0.1, 0.1, 0.1)  # untraced: no exemplar
    series.observe("NOT_FOUND", 0.0001, 0, 0, 0, "a" * 32)
    text = metrics.exposition(openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["tensorgate_requests"].type == "counter"
    codes = {s.labels["code"]: s.value for s in families["tensorgate_requests"].samples}
    assert codes == {"OK": 2, "NOT_FOUND": 1}
    exemplars = {
        s.labels["le"]: (s.exemplar.labels["trace_id"], s.exemplar.value)
        for s in families["tensorgate_request_duration_seconds"].samples
        if s.exemplar is not None
    }
    assert exemplars == {"0.005": (TRACE, 0.0042), "0.0001": ("a" * 32, 0.0001)}  # the bucket each fell in
    assert {s.name for s in families["tensorgate_model_state"].samples} == {"tensorgate_model_state"}


def test_text_format_has_no_exemplars_and_the_same_values(metrics: Metrics) -> None:
    metrics.series(*KEY3, "grpc").observe("OK", 0.0042, 0.001, 0.002, 0.0012, TRACE)
    text = metrics.exposition().decode()
    assert "# {" not in text and "# EOF" not in text
    plain = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse_text(text) for s in f.samples}
    om = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in parse_openmetrics(metrics.exposition(openmetrics=True).decode())
        for s in f.samples
    }
    assert plain == om


def test_stage_histograms_are_lean_and_only_for_series_that_succeeded(metrics: Metrics) -> None:
    metrics.series(*KEY3, "rest").observe("OK", 0.01, 0.001, 0.005, 0.004)
    metrics.series(*KEY3, "grpc").observe("INVALID_ARGUMENT", 0.001, 0, 0, 0)
    families = {f.name: f for f in parse_text(metrics.exposition().decode())}
    compute = [s for s in families["tensorgate_compute_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert {s.labels["protocol"] for s in compute} == {"rest"}
    assert len(compute) == len(STAGE_BUCKETS) + 1
    request = families["tensorgate_request_duration_seconds"].samples
    assert {s.labels["protocol"] for s in request} == {"rest", "grpc"}


def test_only_changed_series_are_rendered_again(metrics: Metrics) -> None:
    busy, idle = metrics.series(*KEY3, "rest"), metrics.series("n", "1", "onnx", "rest")
    busy.observe("OK", 0.01, 0, 0.01, 0)
    idle.observe("OK", 0.01, 0, 0.01, 0)
    first = metrics.exposition()
    idle_text = idle.stages["request"].cache[0][1]
    busy_text = busy.stages["request"].cache[0][1]
    busy.observe("OK", 0.02, 0, 0.02, 0)
    second = metrics.exposition()
    assert second != first
    assert idle.stages["request"].cache[0][1] is idle_text  # reused as is
    assert busy.stages["request"].cache[0][1] is not busy_text
    assert metrics.exposition() == second


def test_rendering_in_a_thread_while_requests_are_recorded(metrics: Metrics) -> None:
    """Series appear and counters move during renders: every exposition still parses, buckets stay cumulative
    and ``_count`` equals the +Inf bucket."""
    stop = threading.Event()
    texts: list[str] = []

    def render() -> None:
        while not stop.is_set():
            texts.append(metrics.exposition(openmetrics=len(texts) % 2 == 1).decode())

    thread = threading.Thread(target=render)
    thread.start()
    for i in range(20_000):
        metrics.series(f"m{i % 300}", "1", "onnx", "rest").observe("OK", 0.001 * (i % 50), 0, 0, 0, TRACE)
    stop.set()
    thread.join()
    assert len(texts) >= 2
    for text in texts:
        parse = parse_openmetrics if text.endswith("# EOF\n") else parse_text
        for family in parse(text):
            if family.name != "tensorgate_request_duration_seconds":
                continue
            by_series: dict[tuple[tuple[str, str], ...], list[float]] = {}
            counts = {}
            for s in family.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                if s.name.endswith("_bucket"):
                    by_series.setdefault(key, []).append(s.value)
                elif s.name.endswith("_count"):
                    counts[key] = s.value
            for key, buckets in by_series.items():
                assert buckets == sorted(buckets)
                assert counts[key] == buckets[-1]
