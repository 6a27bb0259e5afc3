"""Bench verdicts: SLA objectives against client percentiles, and the winner among the runs that meet them."""

from __future__ import annotations

from collections import Counter

from gateway.cli.bench.load import LoadWindow
from gateway.cli.bench.result import Run, Variant, sla_verdict, winner
from gateway.cli.bench.scrape import ServerWindow

META = {
    "name": "m_onnx",
    "platform": "onnxruntime_onnx",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    "parameters": {"runtime": "onnx", "sla": {"p50_ms": 5.0, "p99_ms": 20.0}},
}


def make_run(model: str, sla: dict[str, float], latency_ms: float, n: int, errors: int = 0) -> Run:
    variant = Variant(model, "onnx", sla, [], [])
    load = LoadWindow(2, [int(latency_ms * 1e6)] * n, Counter({"HTTP 503": errors} if errors else {}), 1.0, 0.1)
    return Run.measured(variant, "rest", 1, load, ServerWindow(n + errors, {}, {}))


def test_variant_reads_runtime_and_sla_from_metadata() -> None:
    variant = Variant.from_metadata(META)
    assert (variant.model, variant.runtime) == ("m_onnx", "onnx")
    assert variant.sla_ms == {"p50": 5.0, "p99": 20.0}


def test_variant_without_sla_takes_the_default() -> None:
    meta = {**META, "parameters": {"runtime": "onnx"}}
    assert Variant.from_metadata(meta).sla_ms == {}
    assert Variant.from_metadata(meta, {"p99": 50.0}).sla_ms == {"p99": 50.0}


def test_sla_verdict_checks_every_objective_and_errors() -> None:
    assert sla_verdict({"p50": 1.0, "p99": 19.0}, 0, {"p50": 5.0, "p99": 20.0}) == (True, [])
    met, misses = sla_verdict({"p50": 6.0, "p99": 19.0}, 0, {"p50": 5.0, "p99": 20.0})
    assert met is False and misses == ["p50 6.00 ms > 5 ms"]
    met, misses = sla_verdict({"p50": 1.0, "p99": 2.0}, 3, {"p99": 20.0})
    assert met is False and misses == ["3 errors"]
    assert sla_verdict({"p99": 2.0}, 0, {}) == (None, [])


def test_winner_has_most_throughput_among_runs_meeting_their_sla() -> None:
    runs = [
        make_run("slow_but_fast", {"p99": 1.0}, 2.0, 900),  # most throughput, misses its SLA
        make_run("a", {"p99": 10.0}, 2.0, 500),
        make_run("b", {"p99": 10.0}, 3.0, 700),
        make_run("c", {"p99": 10.0}, 1.0, 800, errors=1),  # an error fails the SLA
    ]
    best = winner(runs)
    assert best is not None and best["model"] == "b" and best["basis"] == "sla"


def test_no_winner_when_nothing_meets_its_sla() -> None:
    assert winner([make_run("a", {"p99": 1.0}, 2.0, 500)]) is None


def test_without_any_sla_the_fastest_error_free_run_wins() -> None:
    best = winner([make_run("a", {}, 2.0, 500), make_run("b", {}, 2.0, 700, errors=2)])
    assert best is not None and best["model"] == "a" and best["basis"].startswith("throughput")
