"""TritonFamilies: Triton's nv_inference_* families with Triton's labels and semantics, from the statistics each
version keeps and the outcome counters, parsed back by both reference parsers; absent unless enabled."""

from __future__ import annotations

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from gateway.telemetry.metrics import Metrics
from gateway.telemetry.stats import ModelStats
from gateway.telemetry.triton_metrics import FAILURE_REASONS, FAMILIES

KEY = ("m", "1", "onnx")


@pytest.fixture
def loaded() -> dict[tuple[str, str, str], ModelStats]:
    return {KEY: ModelStats()}


@pytest.fixture
def metrics(loaded: dict[tuple[str, str, str], ModelStats]) -> Metrics:
    m = Metrics()
    m.enable_triton(lambda: list(loaded.items()))
    return m


def serve(metrics: Metrics, stats: ModelStats, rows: list[int], key: tuple[str, str, str] = KEY) -> None:
    """What the data plane and the executor record: one batched execution for all of ``rows``, then each request."""
    stats.record_execution(sum(rows), 0.004)
    for n in rows:
        stats.record_success(0, n, 0.010, 0.003, 0.004)
        metrics.series(*key, "rest").observe("OK", 0.010, 0.003, 0.004, 0.003)


def fail(metrics: Metrics, stats: ModelStats | None, code: str, protocol: str = "grpc") -> None:
    metrics.series(*KEY, protocol).observe(code, 0.001, 0, 0, 0)
    if stats is not None:
        stats.record_failure(0.001)


def samples(text: str, om: bool) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The nv_ samples by (name, labels). prometheus_client's text parser appends ``_total`` to every counter
    sample it reads (Prometheus itself keeps the name as written): taken off again."""
    parse = parse_openmetrics if om else parse_text
    return {
        (s.name.removesuffix("_total"), tuple(sorted(s.labels.items()))): s.value
        for f in parse(text)
        if f.name.startswith("nv_")
        for s in f.samples
    }


@pytest.mark.parametrize("om", [False, True], ids=["text", "openmetrics"])
def test_counts_and_durations_follow_triton(
    metrics: Metrics, loaded: dict[tuple[str, str, str], ModelStats], om: bool
) -> None:
    stats = loaded[KEY]
    serve(metrics, stats, [1, 3])  # two requests batched into one execution of 4 inferences
    serve(metrics, stats, [2])
    fail(metrics, stats, "INVALID_ARGUMENT")
    fail(metrics, stats, "RESOURCE_EXHAUSTED", "rest")
    fail(metrics, stats, "INTERNAL")
    fail(metrics, stats, "CANCELLED")
    fail(metrics, stats, "DEADLINE_EXCEEDED", "tfs_rest")
    got = samples(metrics.exposition(openmetrics=om).decode(), om)
    tags = (("model", "m"), ("version", "1"))
    one = {name: got[(name, tags)] for name, _ in FAMILIES if name != "nv_inference_request_failure"}
    assert one == {
        "nv_inference_request_success": 3,
        "nv_inference_count": 6,  # batch items
        "nv_inference_exec_count": 2,  # runtime calls
        "nv_inference_request_duration_us": stats.success.ns // 1000,
        "nv_inference_queue_duration_us": stats.queue.ns // 1000,
        "nv_inference_compute_input_duration_us": 0,
        "nv_inference_compute_infer_duration_us": stats.compute_infer.ns // 1000,
        "nv_inference_compute_output_duration_us": 0,
    }
    assert stats.queue.ns // 1000 == pytest.approx(3 * 3000, abs=3)
    failures = {dict(k[1])["reason"]: v for k, v in got.items() if k[0] == "nv_inference_request_failure"}
    assert failures == {"REJECTED": 2, "CANCELED": 1, "BACKEND": 1, "OTHER": 1}
    assert sum(failures.values()) == stats.fail.count


def test_stored_under_triton_names_in_both_formats(metrics: Metrics) -> None:
    """OpenMetrics counters must end in _total, which would rename the series in Prometheus: there the families
    are ``unknown``, so the sample names stay Triton's; the text format types them ``counter`` as Triton does."""
    text = metrics.exposition().decode()
    om = metrics.exposition(openmetrics=True).decode()
    for name, _ in FAMILIES:
        assert f"# TYPE {name} counter\n" in text
        assert f"# TYPE {name} unknown\n" in om
    assert "nv_inference_request_success_total" not in text + om
    assert samples(text, False) == samples(om, True)


def test_every_failure_reason_shows_from_the_start(metrics: Metrics) -> None:
    got = samples(metrics.exposition().decode(), False)
    reasons = {dict(k[1])["reason"]: v for k, v in got.items() if k[0] == "nv_inference_request_failure"}
    assert reasons == dict.fromkeys(FAILURE_REASONS, 0)
    assert got[("nv_inference_request_success", (("model", "m"), ("version", "1")))] == 0


def test_versions_come_and_go_with_what_is_loaded(
    metrics: Metrics, loaded: dict[tuple[str, str, str], ModelStats]
) -> None:
    loaded[("m", "2", "onnx")] = ModelStats()
    serve(metrics, loaded[("m", "2", "onnx")], [1], ("m", "2", "onnx"))
    versions = {dict(k[1])["version"] for k in samples(metrics.exposition().decode(), False)}
    assert versions == {"1", "2"}
    del loaded[KEY]
    got = samples(metrics.exposition().decode(), False)
    assert {dict(k[1])["version"] for k in got} == {"2"}
    assert got[("nv_inference_request_success", (("model", "m"), ("version", "2")))] == 1


def test_a_versions_text_is_reused_until_it_moves(
    metrics: Metrics, loaded: dict[tuple[str, str, str], ModelStats]
) -> None:
    loaded[("idle", "1", "onnx")] = ModelStats()
    metrics.exposition()
    triton = metrics.triton
    idle = triton._cache[("idle", "1", "onnx")][1]
    busy = triton._cache[KEY][1]
    serve(metrics, loaded[KEY], [1])
    text = metrics.exposition().decode()
    assert triton._cache[("idle", "1", "onnx")][1] is idle
    assert triton._cache[KEY][1] is not busy
    assert 'nv_inference_request_success{model="m",version="1"} 1\n' in text


def test_absent_unless_enabled() -> None:
    m = Metrics()
    m.series(*KEY, "rest").observe("OK", 0.01, 0, 0.01, 0)
    assert b"nv_inference" not in m.exposition()
    assert m.triton is None
