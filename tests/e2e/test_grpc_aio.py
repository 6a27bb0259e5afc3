"""The gRPC end-to-end suite (tests/e2e/test_grpc_v2.py: tritonclient.grpc infer and streaming, metadata, health,
reflection, error codes, deadlines, message limits, draining on SIGTERM), the gRPC fuzzer and the gRPC TLS checks
(tests/e2e/test_tls.py: mTLS, untrusted clients refused, certificates rotated under the running server) against
``--grpc-server aio``, the grpc.aio server kept beside the default h2 one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_grpc_fuzz import (  # noqa: F401 - the fuzzer too
    test_bytes_that_do_not_decode_are_invalid_argument_naming_the_message,
    test_random_and_mutated_messages_never_answer_unknown_or_internal,
)
from tests.e2e.test_grpc_v2 import (  # noqa: F401 - collected again here, against grpc.aio
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
from tests.e2e.test_tls import (  # noqa: F401 - the gRPC ones, against grpc.aio
    Pki,
    pki,
    test_tf_serving_stub_over_a_secure_channel,
    test_tritonclient_http_and_grpc_over_tls,
    test_untrusted_or_missing_client_certificates_are_refused,
    tls_server,
)
from tests.e2e.test_tls import test_replaced_certificates_serve_new_connections_without_a_restart as rotation
from tests.serving import ServerProcess


@pytest.fixture(scope="module", autouse=True)
def aio_everywhere() -> Iterator[None]:
    """Every server started here (by the tests or the module's fixtures) is grpc.aio: ServerProcess passes the
    environment on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TENSORGATE_GRPC_SERVER", "aio")
        yield


@pytest.fixture(scope="module")
def server(onnx_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        onnx_store,
        tmp_path_factory.mktemp("server-aio"),
        ["--poll-interval", "0", "--no-strict-readiness", "--grpc-server", "aio"],
    ).start()
    assert "gRPC served by grpc.aio" in proc.log()
    yield proc
    proc.stop()


def test_tls_servers_here_are_aio(tls_server: ServerProcess) -> None:  # noqa: F811 - the imported fixture
    assert "gRPC served by grpc.aio" in tls_server.log()


def test_replaced_certificates_reach_new_connections(tls_server: ServerProcess, pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    """Last here, as in test_tls.py: it leaves the rotated certificate in place."""
    rotation(tls_server, pki, tmp_path)
