"""The gRPC end-to-end suite (tests/e2e/test_grpc_v2.py: tritonclient.grpc infer and streaming, metadata, health,
reflection, error codes, deadlines, message limits, draining on SIGTERM) against ``--grpc-server h2``; and h2's
refusal of TLS at startup."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.credentials import CertificateAuthority
from tests.e2e.test_grpc_v2 import (  # noqa: F401 - collected again here, against the h2 server
    client,
    test_client_deadline_is_honoured,
    test_errors_map_to_grpc_codes,
    test_every_datatype_round_trips,
    test_health_metadata_config,
    test_health_service_per_model,
    test_infer_matches_onnxruntime,
    test_large_message_and_limit,
    test_reflection_lists_services,
    test_shutdown_delay_keeps_serving_while_not_ready,
    test_sigterm_drains_in_flight_and_refuses_new_requests,
    test_statistics_repository_and_stream,
    test_typed_contents_are_accepted,
)
from tests.serving import ServerProcess


@pytest.fixture(autouse=True)
def h2_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers the tests start themselves are h2 too (ServerProcess passes the environment on)."""
    monkeypatch.setenv("TENSORGATE_GRPC_SERVER", "h2")


@pytest.fixture(scope="module")
def server(onnx_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        onnx_store,
        tmp_path_factory.mktemp("server-h2"),
        ["--poll-interval", "0", "--no-strict-readiness", "--grpc-server", "h2"],
    ).start()
    assert "gRPC served by the h2 server" in proc.log()
    yield proc
    proc.stop()


def test_h2_refuses_tls_at_startup(onnx_store: Path, tmp_path: Path) -> None:
    issued = CertificateAuthority(tmp_path / "ca").issue("server", "tensorgate", server=True)
    command = [sys.executable, "-m", "gateway", "serve", "--store", str(onnx_store), "--host", "127.0.0.1",
               "--http-port", "0", "--grpc-port", "0", "--poll-interval", "0", "--grpc-server", "h2",
               "--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "--grpc-server h2 serves no TLS" in done.stdout + done.stderr
