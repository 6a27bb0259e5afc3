"""Server-side bench figures: histograms parsed from the gateway's own Metrics exposition and differenced."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from gateway.cli.bench.scrape import Histogram, parse_snapshot, window
from gateway.telemetry.metrics import Metrics


def observe(metrics: Metrics, version: str, protocol: str, seconds: list[float], compute: float) -> None:
    series = metrics.series("m", version, "onnx", protocol)
    for s in seconds:
        series.observe("OK", s, 0.0, compute, s - compute)


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    hist = Histogram([0.001, 0.002, 0.004, math.inf], [0.0, 50.0, 100.0, 100.0], 0.2)
    assert hist.quantile(0.5) == pytest.approx(0.002)
    assert hist.quantile(0.25) == pytest.approx(0.0015)
    assert hist.quantile(0.75) == pytest.approx(0.003)
    assert math.isnan(Histogram().quantile(0.5))


def test_quantile_beyond_the_last_bound_is_that_bound() -> None:
    hist = Histogram([0.001, math.inf], [1.0, 10.0], 1.0)
    assert hist.quantile(0.99) == pytest.approx(0.001)


def test_window_counts_only_what_happened_between_the_scrapes() -> None:
    metrics = Metrics(CollectorRegistry(auto_describe=False))
    metrics.set_sla("m", "1", "onnx", {"p99": 0.02})
    observe(metrics, "1", "rest", [0.5] * 10, 0.1)  # before the window: slow requests
    before = parse_snapshot(metrics.exposition().decode(), "m", "rest")
    observe(metrics, "1", "rest", [0.0012] * 90 + [0.018] * 10, 0.0002)
    observe(metrics, "2", "rest", [0.0012] * 100, 0.0002)  # another version of the same model counts too
    observe(metrics, "1", "grpc", [0.3] * 50, 0.1)  # other protocol: not this window's
    after = parse_snapshot(metrics.exposition().decode(), "m", "rest")
    figures = window(before, after)
    assert figures.requests == 200
    expected_mean = (190 * 0.0012 + 10 * 0.018) / 200 * 1e3
    assert figures.mean_ms["request"] == pytest.approx(expected_mean)
    assert figures.mean_ms["compute"] == pytest.approx(0.2)
    assert figures.mean_ms["queue"] == pytest.approx(0.0)
    assert 1.0 < figures.quantiles_ms["p50"] <= 1.5  # the 0.001-0.0015 bucket
    assert 15.0 < figures.quantiles_ms["p99"] <= 20.0  # the 0.015-0.02 bucket (0.02 is the SLA bound)
    assert figures.to_json()["requests"] == 200


def test_a_model_with_no_traffic_has_no_figures() -> None:
    metrics = Metrics(CollectorRegistry(auto_describe=False))
    observe(metrics, "1", "rest", [0.001], 0.0005)
    text = metrics.exposition().decode()
    figures = window(parse_snapshot(text, "other", "rest"), parse_snapshot(text, "other", "rest"))
    assert figures.requests == 0
    assert math.isnan(figures.quantiles_ms["p99"])
