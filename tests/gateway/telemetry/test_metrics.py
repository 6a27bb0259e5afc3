"""Metrics: cumulative histogram buckets with SLA boundaries, a parseable exposition, gauges and store metrics."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.metrics import LATENCY_BUCKETS, LOAD_BUCKETS, STATES, Metrics

KEY3 = ("m", "1", "onnx")
LABELS3 = {"model": "m", "version": "1", "runtime": "onnx"}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(auto_describe=False))


def families(metrics: Metrics) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = metrics.exposition().decode()
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return out


def buckets(metrics: Metrics, name: str, **match: str) -> list[tuple[float, float]]:
    samples = families(metrics)[name]
    rows = [
        (float(labels["le"]), value)
        for sample, labels, value in samples
        if sample.endswith("_bucket") and all(labels.get(k) == v for k, v in match.items())
    ]
    return sorted(rows)


def test_fresh_registry_exposition_parses(metrics: Metrics) -> None:
    names = set(families(metrics))
    assert {
        "tensorgate_request_duration_seconds",
        "tensorgate_queue_duration_seconds",
        "tensorgate_compute_duration_seconds",
        "tensorgate_overhead_duration_seconds",
        "tensorgate_requests",
        "tensorgate_inflight_requests",
        "tensorgate_model_state",
        "tensorgate_sla_target_seconds",
        "tensorgate_model_load_duration_seconds",
        "tensorgate_model_load_failures",
        "tensorgate_batch_size",
        "tensorgate_store_stale",
        "tensorgate_store_poll_errors",
        "tensorgate_store_last_sync_timestamp_seconds",
    } <= names


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.series(*KEY3, "rest").observe("OK", 0.01, 0.001, 0.002, 0.003)
    assert families(a)["tensorgate_requests"] != families(b)["tensorgate_requests"]


def test_histogram_buckets_are_cumulative(metrics: Metrics) -> None:
    series = metrics.series(*KEY3, "rest")
    values = [0.00005, 0.0003, 0.0003, 0.004, 0.2, 7.0, 30.0]
    for v in values:
        series.observe("OK", v, v / 10, v / 2, v / 5)
    rows = buckets(metrics, "tensorgate_request_duration_seconds", protocol="rest")
    bounds = [b for b, _ in rows]
    assert bounds == [*sorted(LATENCY_BUCKETS), math.inf]
    counts = [c for _, c in rows]
    assert counts == sorted(counts)  # never decreases
    for bound, count in rows:
        assert count == sum(1 for v in values if v <= bound)
    assert counts[-1] == len(values)
    samples = families(metrics)["tensorgate_request_duration_seconds"]
    total = {s: v for s, labels, v in samples if s.endswith(("_count", "_sum"))}
    assert total["tensorgate_request_duration_seconds_count"] == len(values)
    assert total["tensorgate_request_duration_seconds_sum"] == pytest.approx(sum(values))


def test_bucket_boundary_is_inclusive(metrics: Metrics) -> None:
    series = metrics.series(*KEY3, "rest")
    series.observe("OK", 0.005, 0, 0, 0)
    rows = dict(buckets(metrics, "tensorgate_request_duration_seconds"))
    assert rows[0.004] == 0
    assert rows[0.005] == 1  # Prometheus buckets are "less than or equal"


def test_failed_requests_count_only_in_request_duration(metrics: Metrics) -> None:
    series = metrics.series(*KEY3, "grpc")
    series.observe("INVALID_ARGUMENT", 0.001, 0, 0, 0)
    series.observe("OK", 0.002, 0.0005, 0.001, 0.0005)
    found = families(metrics)
    counts = {
        name: value
        for fam in found.values()
        for name, labels, value in fam
        if name.endswith("_duration_seconds_count") and labels.get("protocol") == "grpc"
    }
    assert counts == {
        "tensorgate_request_duration_seconds_count": 2,
        "tensorgate_queue_duration_seconds_count": 1,
        "tensorgate_compute_duration_seconds_count": 1,
        "tensorgate_overhead_duration_seconds_count": 1,
    }
    totals = {labels["code"]: value for _, labels, value in found["tensorgate_requests"]}
    assert totals == {"INVALID_ARGUMENT": 1, "OK": 1}


def test_sla_targets_are_extra_request_buckets_and_a_gauge(metrics: Metrics) -> None:
    metrics.set_sla(*KEY3, {"p50": 0.0033, "p99": 0.017})
    metrics.set_state(*KEY3, "READY")
    series = metrics.series(*KEY3, "rest")
    series.observe("OK", 0.016, 0, 0.01, 0)
    series.observe("OK", 0.018, 0, 0.01, 0)
    rows = dict(buckets(metrics, "tensorgate_request_duration_seconds"))
    assert rows[0.017] == 1 and rows[0.0033] == 0
    assert 0.017 not in dict(buckets(metrics, "tensorgate_compute_duration_seconds"))
    other = metrics.series("n", "1", "onnx", "rest")
    other.observe("OK", 0.001, 0, 0, 0)
    assert 0.017 not in dict(buckets(metrics, "tensorgate_request_duration_seconds", model="n"))
    gauge = {labels["objective"]: value for _, labels, value in families(metrics)["tensorgate_sla_target_seconds"]}
    assert gauge == {"p50": 0.0033, "p99": 0.017}


def test_sla_gauge_disappears_with_the_model(metrics: Metrics) -> None:
    metrics.set_sla(*KEY3, {"p99": 0.02})
    metrics.set_state(*KEY3, "READY")
    assert families(metrics)["tensorgate_sla_target_seconds"]
    metrics.set_state(*KEY3, None)
    assert families(metrics)["tensorgate_sla_target_seconds"] == []


def test_inflight_gauge(metrics: Metrics) -> None:
    metrics.inflight_add(KEY3, 1)
    metrics.inflight_add(KEY3, 1)
    metrics.inflight_add(KEY3, -1)
    assert families(metrics)["tensorgate_inflight_requests"] == [("tensorgate_inflight_requests", LABELS3, 1.0)]


@pytest.mark.parametrize("current", STATES)
def test_model_state_gauge_is_one_for_the_current_state(metrics: Metrics, current: str) -> None:
    metrics.set_state(*KEY3, "LOADING")
    metrics.set_state(*KEY3, current)
    samples = families(metrics)["tensorgate_model_state"]
    assert {labels["state"]: value for _, labels, value in samples} == {
        state: (1.0 if state == current else 0.0) for state in STATES
    }
    assert all({k: v for k, v in labels.items() if k != "state"} == LABELS3 for _, labels, _ in samples)


def test_removed_model_leaves_no_state_or_inflight(metrics: Metrics) -> None:
    metrics.set_state(*KEY3, "READY")
    metrics.inflight_add(KEY3, 0)
    metrics.set_state(*KEY3, None)
    found = families(metrics)
    assert found["tensorgate_model_state"] == []
    assert found["tensorgate_inflight_requests"] == []


def test_load_duration_and_failures(metrics: Metrics) -> None:
    metrics.observe_load(*KEY3, 0.3, ok=True)
    metrics.observe_load("bad", "1", "unknown", 0.02, ok=False)
    metrics.observe_load("bad", "2", "unknown", 0.04, ok=False)
    found = families(metrics)
    rows = buckets(metrics, "tensorgate_model_load_duration_seconds", model="m")
    assert [b for b, _ in rows] == [*(float(b) for b in LOAD_BUCKETS), math.inf]
    assert dict(rows)[0.25] == 0 and dict(rows)[0.5] == 1
    failures = {labels["model"]: value for _, labels, value in found["tensorgate_model_load_failures"]}
    assert failures == {"bad": 2}


def test_batch_size_histogram(metrics: Metrics) -> None:
    for size in (1, 3, 8):
        metrics.observe_batch(KEY3, size)
    rows = dict(buckets(metrics, "tensorgate_batch_size"))
    assert (rows[1.0], rows[4.0], rows[8.0], rows[math.inf]) == (1, 2, 3, 3)


def test_store_metrics(metrics: Metrics) -> None:
    def store() -> dict[str, float]:
        found = families(metrics)
        return {
            name: found[name][0][2]
            for name in (
                "tensorgate_store_stale",
                "tensorgate_store_poll_errors",
                "tensorgate_store_last_sync_timestamp_seconds",
            )
        }

    assert store() == {
        "tensorgate_store_stale": 0,
        "tensorgate_store_poll_errors": 0,
        "tensorgate_store_last_sync_timestamp_seconds": 0,
    }
    metrics.store_poll(ok=True)
    synced = store()["tensorgate_store_last_sync_timestamp_seconds"]
    assert synced >= metrics.started
    metrics.store_poll(ok=False)
    metrics.store_poll(ok=False)
    assert store() == {
        "tensorgate_store_stale": 1,
        "tensorgate_store_poll_errors": 2,
        "tensorgate_store_last_sync_timestamp_seconds": synced,
    }
    metrics.store_poll(ok=True)
    assert store()["tensorgate_store_stale"] == 0
    assert store()["tensorgate_store_poll_errors"] == 2
    text = metrics.exposition().decode()
    assert "tensorgate_store_poll_errors_total 2.0" in text
