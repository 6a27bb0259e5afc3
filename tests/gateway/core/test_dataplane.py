"""DataPlane: validation errors that name the field, error mapping, overload, deadlines, classification,
and metrics recorded once per request with bounded labels and SLA buckets."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from gateway.core.errors import (
    DeadlineExceeded,
    GatewayError,
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    ServerUnavailable,
)
from gateway.core.types import InferRequest, RequestedOutput, Tensor
from gateway.telemetry.metrics import UNKNOWN
from tests.gateway.testbed import StoreFolder, Testbed, labels, request

ROW = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)


@pytest.fixture
def one_model(store: StoreFolder) -> StoreFolder:
    store.add("m", 1)
    store.config("m", "max_batch_size: 4\n")
    return store


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda: request(extra=[Tensor("z", ROW)]), ["unexpected input 'z'", "expected inputs: x"]),
        (lambda: request(x=ROW.astype(np.float64)), ["input 'x'", "FP64", "expected FP32"]),
        (lambda: request(x=ROW.reshape(3)), ["input 'x'", "shape [3]", "[-1, 3]"]),
        (lambda: request(x=np.zeros((1, 4), np.float32)), ["input 'x'", "shape [1, 4]", "[-1, 3]"]),
        (lambda: request(x=np.zeros((5, 3), np.float32)), ["batch size 5", "max_batch_size 4"]),
        (
            lambda: request(outputs=[RequestedOutput("y"), RequestedOutput("nope")]),
            ["unknown output 'nope'", "y, total"],
        ),
        (lambda: request(extra=[Tensor("x", ROW)]), ["input 'x' is given more than once"]),
    ],
    ids=["unknown-input", "datatype", "rank", "dim", "batch", "unknown-output", "duplicate"],
)
def test_validation_errors_name_the_field(
    one_model: StoreFolder, make: Callable[[], InferRequest], needles: list[str]
) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            with pytest.raises(InvalidInput) as caught:
                await bed.infer(make())
            for needle in needles:
                assert needle in caught.value.message
            assert caught.value.http_status == 400
            assert bed.runtime_of("m").calls == 0

    asyncio.run(scenario())


def test_missing_input_is_named(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            req = request()
            req.inputs = []
            with pytest.raises(InvalidInput, match="missing input\\(s\\) 'x'"):
                await bed.infer(req)

    asyncio.run(scenario())


def test_batch_up_to_max_batch_size_and_output_subset(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            x = np.arange(12, dtype=np.float32).reshape(4, 3)
            response = await bed.infer(request(x=x, outputs=[RequestedOutput("total")]))
            assert [t.name for t in response.outputs] == ["total"]
            np.testing.assert_array_equal(response.outputs[0].data, (2 * x).sum(axis=1, keepdims=True))
            full = await bed.infer(request(x=x))
            assert [t.name for t in full.outputs] == ["y", "total"]
            assert (full.model, full.version) == ("m", "1")

    asyncio.run(scenario())


def test_runtime_input_error_is_invalid_input(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            with pytest.raises(InvalidInput, match="must not start with -1"):
                await bed.infer(request(x=np.array([[-1, 0, 0]], np.float32)))
            codes = bed.samples("tensorgate_requests_total")
            key = labels(model="m", version="1", runtime="onnx", protocol="rest", code="INVALID_ARGUMENT")
            assert codes[key] == 1.0

    asyncio.run(scenario())


def test_runtime_crash_is_internal_and_the_plane_keeps_working(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            with pytest.raises(InferenceFailed) as caught:
                await bed.infer(request(x=np.array([[-2, 0, 0]], np.float32)))
            assert caught.value.code == "INTERNAL"
            assert caught.value.http_status == 500
            assert "ZeroDivisionError" in caught.value.message
            response = await bed.infer(request())
            assert response.outputs[0].data.tolist() == [[2.0, 4.0, 6.0]]
            codes = bed.samples("tensorgate_requests_total")
            base = {"model": "m", "version": "1", "runtime": "onnx", "protocol": "rest"}
            assert codes[labels(**base, code="INTERNAL")] == 1.0
            assert codes[labels(**base, code="OK")] == 1.0

    asyncio.run(scenario())


def test_overloaded_when_pending_exceeds_queue_and_instances(store: StoreFolder) -> None:
    store.add("m", 1)
    store.config("m", "instances: 1\nmax_queue_size: 2\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            runtime = bed.runtime_of("m")
            runtime.gate = threading.Event()
            model = bed.router.resolve("m")
            waiting = [asyncio.create_task(bed.infer(request())) for _ in range(3)]  # 1 running + 2 queued
            try:
                assert await asyncio.to_thread(runtime.entered.acquire, True, 10)
                for _ in range(100):
                    if model.inflight.count == 3:
                        break
                    await asyncio.sleep(0.01)
                assert model.inflight.count == 3
                with pytest.raises(Overloaded, match="overloaded") as caught:
                    await bed.infer(request())
                assert caught.value.http_status == 429
                assert caught.value.code == "RESOURCE_EXHAUSTED"
                inflight = bed.samples("tensorgate_inflight_requests")
                assert inflight[labels(model="m", version="1", runtime="onnx")] == 3.0
            finally:
                runtime.gate.set()
            results = await asyncio.gather(*waiting)
            assert [r.version for r in results] == ["1", "1", "1"]
            assert model.inflight.count == 0
            assert bed.samples("tensorgate_inflight_requests")[labels(model="m", version="1", runtime="onnx")] == 0
            codes = bed.samples("tensorgate_requests_total")
            base = {"model": "m", "version": "1", "runtime": "onnx", "protocol": "rest"}
            assert codes[labels(**base, code="OK")] == 3.0
            assert codes[labels(**base, code="RESOURCE_EXHAUSTED")] == 1.0

    asyncio.run(scenario())


def test_passed_deadline_fails_before_the_runtime_runs(store: StoreFolder, caplog: pytest.LogCaptureFixture) -> None:
    store.add("m", 1)
    store.config("m", "instances: 1\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            late = request()
            late.deadline = time.monotonic() - 0.001
            with pytest.raises(DeadlineExceeded) as caught:
                await bed.infer(late)
            assert caught.value.http_status == 504
            await bed.infer(request())  # runs after the dropped one on the single worker
            assert bed.runtime_of("m").calls == 1
            codes = bed.samples("tensorgate_requests_total")
            key = labels(model="m", version="1", runtime="onnx", protocol="rest", code="DEADLINE_EXCEEDED")
            assert codes[key] == 1.0
            gc.collect()  # an abandoned future with an unread error would log here

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_deadline_passing_while_running_is_deadline_exceeded(
    store: StoreFolder, caplog: pytest.LogCaptureFixture
) -> None:
    store.add("m", 1)
    store.config("m", "timeout_ms: 50\n")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            runtime = bed.runtime_of("m")
            runtime.gate = threading.Event()
            try:
                with pytest.raises(DeadlineExceeded, match="while running"):
                    await bed.infer(request(x=np.array([[-2, 0, 0]], np.float32)))  # will crash late
            finally:
                runtime.gate.set()
        # closing joined the worker: the late crash was dropped, not logged as an unread future error

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_draining_plane_refuses_requests(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            bed.dataplane.draining = True
            with pytest.raises(ServerUnavailable):
                await bed.infer(request())
            assert not bed.dataplane.ready()
            assert not bed.dataplane.model_ready("m")

    asyncio.run(scenario())


def test_classification_extension(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            x = np.array([[1.0, 3.0, 2.0], [5.0, 4.0, 6.0]], np.float32)
            wanted = [RequestedOutput("y", {"classification": 2}), RequestedOutput("total")]
            response = await bed.infer(request(x=x, outputs=wanted))
            y, total = response.outputs
            assert y.datatype == "BYTES"
            assert y.shape == [2, 2]
            assert y.data.tolist() == [[b"6.000000:1", b"4.000000:2"], [b"12.000000:2", b"10.000000:0"]]
            assert total.datatype == "FP32"
            many = await bed.infer(request(x=x, outputs=[RequestedOutput("y", {"classification": 10})]))
            assert many.outputs[0].shape == [2, 3]  # k is capped at the class count
            with pytest.raises(InvalidInput, match="classification must be"):
                await bed.infer(request(outputs=[RequestedOutput("y", {"classification": "two"})]))
            with pytest.raises(InvalidInput, match=">= 1"):
                await bed.infer(request(outputs=[RequestedOutput("y", {"classification": 0})]))

    asyncio.run(scenario())


def test_metrics_recorded_once_per_request_with_registry_labels(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            await bed.infer(request())
            await bed.infer(request(), protocol="grpc")
            with pytest.raises(InvalidInput):
                await bed.infer(request(x=ROW.astype(np.float64)))
            rest = {"model": "m", "version": "1", "runtime": "onnx", "protocol": "rest"}
            grpc = {**rest, "protocol": "grpc"}
            codes = bed.samples("tensorgate_requests_total")
            assert codes == {
                labels(**rest, code="OK"): 1.0,
                labels(**rest, code="INVALID_ARGUMENT"): 1.0,
                labels(**grpc, code="OK"): 1.0,
            }
            assert bed.samples("tensorgate_request_duration_seconds_count") == {
                labels(**rest): 2.0,
                labels(**grpc): 1.0,
            }
            for stage in ("queue", "compute", "overhead"):  # only successful requests have stages
                counts = bed.samples(f"tensorgate_{stage}_duration_seconds_count")
                assert counts == {labels(**rest): 1.0, labels(**grpc): 1.0}
            compute = bed.samples("tensorgate_compute_duration_seconds_sum")[labels(**rest)]
            request_sum = bed.samples("tensorgate_request_duration_seconds_sum")[labels(**rest)]
            assert 0 < compute < request_sum
            stats = (await bed.dataplane.statistics("m"))[0]
            assert stats["inference_count"] == 2 and stats["execution_count"] == 2
            assert stats["inference_stats"]["fail"]["count"] == 1

    asyncio.run(scenario())


def test_unknown_model_names_collapse_to_one_label_unknown_versions_to_one_per_model(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            for i in range(100):
                with pytest.raises(ModelNotFound):
                    await bed.infer(request(f"no-such-model-{i}"))
            with pytest.raises(ModelNotFound):
                await bed.infer(request("m", version="42"))
            await bed.infer(request("m"))
            text = bed.metrics.exposition().decode()
            assert "no-such-model" not in text
            codes = bed.samples("tensorgate_requests_total")  # an unknown version keeps the model's name
            assert codes == {
                labels(model=UNKNOWN, version="", runtime="", protocol="rest", code="NOT_FOUND"): 100.0,
                labels(model="m", version=UNKNOWN, runtime="", protocol="rest", code="NOT_FOUND"): 1.0,
                labels(model="m", version="1", runtime="onnx", protocol="rest", code="OK"): 1.0,
            }
            models = {dict(key)["model"] for key in bed.samples("tensorgate_request_duration_seconds_bucket")}
            assert models == {UNKNOWN, "m"}

    asyncio.run(scenario())


def test_sla_targets_become_bucket_boundaries_and_a_gauge(store: StoreFolder) -> None:
    store.add("m", 1)
    store.config("m", "sla: {p50_ms: 3.3, p99_ms: 17}\n")
    store.add("plain", 1)
    store.config("plain")

    async def scenario() -> None:
        async with Testbed(store) as bed:
            await bed.infer(request("m"))
            await bed.infer(request("plain"))
            base = {"model": "m", "version": "1", "runtime": "onnx"}
            sla = bed.samples("tensorgate_sla_target_seconds")
            assert sla == {
                labels(**base, objective="p50"): pytest.approx(0.0033),
                labels(**base, objective="p99"): pytest.approx(0.017),
            }

            def bounds(model: str, stage: str = "request") -> set[float]:
                buckets = bed.samples(f"tensorgate_{stage}_duration_seconds_bucket")
                return {float(dict(k)["le"]) for k in buckets if dict(k)["model"] == model}

            assert {0.0033, 0.017} <= bounds("m")
            assert not {0.0033, 0.017} & bounds("plain")
            assert not {0.0033, 0.017} & bounds("m", "compute")
            meta = bed.dataplane.model_metadata("m")
            assert meta.parameters["sla"] == {"p50_ms": 3.3, "p99_ms": 17.0}

    asyncio.run(scenario())


def test_metadata_and_config_describe_the_model(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            meta = bed.dataplane.model_metadata("m")
            assert (meta.name, meta.versions, meta.platform) == ("m", ["1"], "fake_numpy")
            assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 3])]
            config = bed.dataplane.model_config("m")
            assert config["max_batch_size"] == 4
            assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}]
            assert bed.dataplane.model_ready("m")
            with pytest.raises(ModelNotFound):  # readiness of a model the server does not know is a 404
                bed.dataplane.model_ready("ghost")

    asyncio.run(scenario())


def test_every_failure_is_a_gateway_error(one_model: StoreFolder) -> None:
    async def scenario() -> None:
        async with Testbed(one_model) as bed:
            for bad in (
                request("ghost"),
                request(x=ROW.astype(np.int32)),
                request(x=np.array([[-2, 0, 0]], np.float32)),
            ):
                with pytest.raises(GatewayError):
                    await bed.infer(bad)

    asyncio.run(scenario())
