"""End-to-end fixtures for observability: a real OTLP receiver and one server that logs every request (JSON) and
traces to that receiver, with a plain model and a dynamically batched one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.onnx_models import dense_model
from tests.otlp_receiver import OtlpReceiver
from tests.serving import ServerProcess


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


def observed_store(root: Path) -> Path:
    dense_model(root / "dense" / "1" / "model.onnx")
    (root / "dense" / "config.yaml").write_text("sla: {p99_ms: 50}\n")
    dense_model(root / "batched" / "1" / "model.onnx")
    (root / "batched" / "config.yaml").write_text(
        "batching: {max_batch_size: 16, max_queue_delay_ms: 50}\ninstances: 1\n"
    )
    return root


@pytest.fixture(scope="session")
def observed(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[ServerProcess]:
    """``--access-log --log-format json --tracing``, exporting to ``otlp`` every 100 ms."""
    store = observed_store(tmp_path_factory.mktemp("observed_store"))
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "tensorgate-e2e",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    args = ["--poll-interval", "0", "--access-log", "--log-format", "json", "--tracing"]
    proc = ServerProcess(store, tmp_path_factory.mktemp("observed"), args, env=env).start()
    yield proc
    proc.stop()
