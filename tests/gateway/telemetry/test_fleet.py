"""FleetMetrics: the sum of several workers' snapshots is the exposition one process would have rendered for all
their requests (statistics and Triton's families too); a dead worker's last counts stay in the sums (counters never
go backwards)."""

from __future__ import annotations

import pickle

from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry import fleet
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.stats import ModelStats

KEY3 = ("m", "1", "onnx")


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def record(m: Metrics, latencies: list[float], code: str = "OK", protocol: str = "rest") -> None:
    m.set_sla("m", "1", "onnx", {"p99": 0.02})
    series = m.series("m", "1", "onnx", protocol)
    for seconds in latencies:
        series.observe(code, seconds, 0.0, seconds / 2, seconds / 2)
    m.observe_load("m", "1", "onnx", 0.3, ok=True)
    m.observe_batch(("m", "1", "onnx"), 2)
    m.routes.series("r", "m").observe("OK", 0.001)
    m.routes.fallback("r", "m", "UNAVAILABLE")


def own_metrics() -> Metrics:
    own = Metrics()
    own.set_state("m", "1", "onnx", "READY")
    own.set_sla("m", "1", "onnx", {"p99": 0.02})
    own.store_poll(ok=True)
    return own


def test_sum_of_workers_equals_one_process_serving_everything() -> None:
    a, b, both = Metrics(), Metrics(), Metrics()
    record(a, [0.001, 0.003])
    record(b, [0.05], code="INVALID_ARGUMENT", protocol="grpc")
    record(b, [0.0004])
    for latencies, code, protocol in (([0.001, 0.003], "OK", "rest"), ([0.05], "INVALID_ARGUMENT", "grpc")):
        record(both, latencies, code, protocol)
    record(both, [0.0004])
    both.set_state("m", "1", "onnx", "READY")
    both.store_poll(ok=True)
    snaps = {0: pickle.loads(pickle.dumps(fleet.take(a))), 1: pickle.loads(pickle.dumps(fleet.take(b)))}
    got = samples(fleet.FleetMetrics(own_metrics()).render(snaps, om=False))
    want = samples(both.exposition())
    skip = ("tensorgate_store_last_sync_timestamp_seconds",)
    for key, value in want.items():
        if key[0] in skip:
            continue
        assert got.get(key) == value, key
    assert got[("tensorgate_worker_requests_total", (("protocol", "rest"), ("worker", "0")))] == 2
    assert got[("tensorgate_worker_requests_total", (("protocol", "rest"), ("worker", "1")))] == 1
    assert got[("tensorgate_worker_requests_total", (("protocol", "grpc"), ("worker", "1")))] == 1
    assert got[("tensorgate_workers", ())] == 2


def test_a_dead_workers_counts_stay_and_its_inflight_goes() -> None:
    a = Metrics()
    record(a, [0.001] * 5)
    a.inflight_add(("m", "1", "onnx"), 3)
    sums = fleet.FleetMetrics(own_metrics())
    key = (
        "tensorgate_requests_total",
        (("code", "OK"), ("model", "m"), ("protocol", "rest"), ("runtime", "onnx"), ("version", "1")),
    )
    inflight = ("tensorgate_inflight_requests", (("model", "m"), ("runtime", "onnx"), ("version", "1")))
    first = samples(sums.render({0: fleet.take(a)}, om=False))
    assert first[key] == 5 and first[inflight] == 3
    sums.retire(0, fleet.take(a))  # worker 0 died; its replacement starts from zero
    sums.restarts += 1
    fresh = Metrics()
    record(fresh, [0.002])
    after = samples(sums.render({0: fleet.take(fresh)}, om=True))
    assert after[key] == 6
    assert after.get(inflight, 0) == 0
    assert after[("tensorgate_worker_requests_total", (("protocol", "rest"), ("worker", "0")))] == 6
    assert after[("tensorgate_worker_restarts_total", ())] == 1
    assert after[("tensorgate_request_duration_seconds_count", key[1][1:])] == 6  # the histogram too


def test_openmetrics_keeps_the_latest_exemplar_per_bucket() -> None:
    a, b = Metrics(), Metrics()
    a.series("m", "1", "onnx", "rest").observe("OK", 0.001, 0, 0, 0, trace_id="aaaa")
    b.series("m", "1", "onnx", "rest").observe("OK", 0.001, 0, 0, 0, trace_id="bbbb")
    body = fleet.FleetMetrics(own_metrics()).render({0: fleet.take(a), 1: fleet.take(b)}, om=True)
    assert body.endswith(b"# EOF\n")
    assert b'trace_id="bbbb"' in body and b'trace_id="aaaa"' not in body


def served_stats(metrics: Metrics, rows: list[int], failures: int = 0) -> ModelStats:
    """One worker's statistics and request counters for ``rows`` (batch sizes), one execution each."""
    stats = ModelStats()
    series = metrics.series("m", "1", "onnx", "rest")
    for n in rows:
        stats.record_execution(n, 0.002)
        stats.record_success(1000 + n, n, 0.005, 0.001, 0.002)
        series.observe("OK", 0.005, 0.001, 0.002, 0.002)
    for _ in range(failures):
        stats.record_failure(0.001)
        series.observe("INVALID_ARGUMENT", 0.001, 0, 0, 0)
    return stats


def test_statistics_and_triton_families_sum_over_workers_and_keep_the_dead() -> None:
    a, b, both = Metrics(), Metrics(), Metrics()
    stats_a, stats_b = served_stats(a, [1, 2]), served_stats(b, [4], failures=1)
    whole = ModelStats()  # one process serving every request
    for s in (served_stats(both, [1, 2]), served_stats(both, [4], failures=1)):
        whole.merge(s)
    both.enable_triton(lambda: [(KEY3, whole)])
    snaps = {
        0: pickle.loads(pickle.dumps(fleet.take(a, [(KEY3, stats_a)], [KEY3]))),
        1: pickle.loads(pickle.dumps(fleet.take(b, [(KEY3, stats_b)], [KEY3]))),
    }
    sums = fleet.FleetMetrics(own_metrics(), triton=True)
    summed = sums.total(snaps).statistics("m", "1")
    assert summed is not None and summed.to_json("m", "1") == whole.to_json("m", "1")
    assert summed.inference_count == 7 and summed.execution_count == 3 and summed.fail.count == 1
    assert sorted(summed.batches) == [1, 2, 4] and summed.last_inference_ms == 1004
    assert sums.total(snaps).statistics("m", "2") is None

    def triton(body: bytes) -> dict[str, str]:
        return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in body.decode().splitlines() if "nv_" in line}

    got = triton(sums.render(snaps, om=False))
    assert got == triton(both.exposition()) and got['nv_inference_count{model="m",version="1"}'] == "7"
    assert got['nv_inference_request_failure{model="m",version="1",reason="OTHER"}'] == "1"
    sums.retire(1, snaps[1])  # worker 1 died; its replacement has served nothing yet
    fresh = fleet.take(Metrics(), [(KEY3, ModelStats())], [KEY3])
    after = sums.total({0: snaps[0], 1: fresh}).statistics("m", "1")
    assert after is not None and after.to_json("m", "1") == whole.to_json("m", "1")
    assert triton(sums.render({0: snaps[0], 1: fresh}, om=False)) == got
    assert b"nv_inference" not in fleet.FleetMetrics(own_metrics()).render(snaps, om=False)  # only when enabled
