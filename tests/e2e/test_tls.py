"""TLS and mTLS end to end, with certificates made by the test: HTTPS and gRPC over TLS with real clients
(httpx, tritonclient http and grpc with their SSL options, TF Serving stubs over a secure channel), API keys on top;
a client certificate the server does not trust (or none) is refused; TLS below 1.2 is refused; certificates
replaced on disk mid-run are served to new connections without a restart; probes use the plain metrics port."""

from __future__ import annotations

import shutil
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.credentials import CertificateAuthority, Issued, write_keys
from tests.onnx_models import dense_model
from tests.serving import ServerProcess

KEY = "k-tls-infer"
X = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)


class Pki:
    def __init__(self, folder: Path) -> None:
        self.ca = CertificateAuthority(folder / "ca")
        self.server = self.ca.issue("server", "tensorgate", server=True)
        self.client = self.ca.issue("client", "app", server=False)
        self.rogue_ca = CertificateAuthority(folder / "rogue", "rogue CA")
        self.rogue = self.rogue_ca.issue("rogue", "app", server=False)
        self.live = folder / "live"  # what the server reads: copies, replaced on rotation
        self.live.mkdir()
        self.install(self.server)
        shutil.copy(self.ca.files.cert, self.live / "ca.crt")

    def install(self, issued: Issued) -> None:
        for source, name in ((issued.cert, "tls.crt"), (issued.key, "tls.key")):
            tmp = self.live / f".{name}"
            shutil.copy(source, tmp)
            tmp.replace(self.live / name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("tls")
    store = tmp / "store"
    dense_model(store / "dense" / "1" / "model.onnx")
    keys = write_keys(tmp / "keys.yaml", {KEY: {"id": "app", "scopes": ["infer", "read"]}})
    args = ["--poll-interval", "0", "--metrics-port", "0", "--auth-keys", str(keys),
            "--tls-cert", str(pki.live / "tls.crt"), "--tls-key", str(pki.live / "tls.key"),
            "--tls-client-ca", str(pki.live / "ca.crt")]  # fmt: skip
    proc = ServerProcess(store, tmp, args).start(wait_ready=False)
    deadline = time.monotonic() + 60
    while httpx.get(f"http://127.0.0.1:{proc.ports['metrics']}/v2/health/ready").status_code != 200:  # the probes' port
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.1)
    yield proc
    proc.stop()


def _context(ca: Path, client: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    return ctx


def _https(proc: ServerProcess) -> str:
    return f"https://127.0.0.1:{proc.ports['http']}"


def test_https_with_a_trusted_client_certificate_and_a_key(tls_server: ServerProcess, pki: Pki) -> None:
    with httpx.Client(verify=_context(pki.ca.files.cert, pki.client)) as client:
        assert client.get(_https(tls_server) + "/v2/health/ready").status_code == 200
        assert client.get(_https(tls_server) + "/v2/models/dense").status_code == 401  # TLS does not replace keys
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 16], "data": X.ravel().tolist()}]}
        out = client.post(_https(tls_server) + "/v2/models/dense/infer", json=body, headers={"x-api-key": KEY})
        assert out.status_code == 200 and out.json()["outputs"][0]["shape"] == [2, 4]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.ports['http']}/v2/health/ready")  # plain HTTP is not served


def test_tritonclient_http_and_grpc_over_tls(tls_server: ServerProcess, pki: Pki) -> None:
    ssl_options = {"ca_certs": str(pki.ca.files.cert), "certfile": str(pki.client.cert), "keyfile": str(pki.client.key)}
    http = th.InferenceServerClient(f"127.0.0.1:{tls_server.ports['http']}", ssl=True, ssl_options=ssl_options)
    inp = th.InferInput("x", [2, 16], "FP32")
    inp.set_data_from_numpy(X)
    assert http.infer("dense", [inp], headers={"Authorization": f"Bearer {KEY}"}).as_numpy("y").shape == (2, 4)
    grpc_client = tg.InferenceServerClient(
        tls_server.grpc, ssl=True, root_certificates=str(pki.ca.files.cert),
        private_key=str(pki.client.key), certificate_chain=str(pki.client.cert),
    )  # fmt: skip
    ginp = tg.InferInput("x", [2, 16], "FP32")
    ginp.set_data_from_numpy(X)
    assert grpc_client.infer("dense", [ginp], headers={"authorization": f"Bearer {KEY}"}).as_numpy("y").shape == (2, 4)
    assert grpc_client.is_server_ready()


def _channel_credentials(pki: Pki, ca: Path, client: Issued | None) -> grpc.ChannelCredentials:
    key = client.key.read_bytes() if client else None
    cert = client.cert.read_bytes() if client else None
    return grpc.ssl_channel_credentials(ca.read_bytes(), key, cert)


def test_tf_serving_stub_over_a_secure_channel(tls_server: ServerProcess, pki: Pki) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "dense"
    credentials = _channel_credentials(pki, pki.ca.files.cert, pki.client)
    with grpc.secure_channel(tls_server.grpc, credentials) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        status = stub.GetModelStatus(request, metadata=(("x-api-key", KEY),), timeout=30)
        assert status.model_version_status[0].state == 30  # AVAILABLE


def test_untrusted_or_missing_client_certificates_are_refused(tls_server: ServerProcess, pki: Pki) -> None:
    for client in (pki.rogue, None):
        with pytest.raises(httpx.HTTPError):
            httpx.get(_https(tls_server) + "/v2/health/ready", verify=_context(pki.ca.files.cert, client))
        with grpc.secure_channel(tls_server.grpc, _channel_credentials(pki, pki.ca.files.cert, client)) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_below_1_2_is_refused(tls_server: ServerProcess, pki: Pki) -> None:
    ctx = _context(pki.ca.files.cert, pki.client)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(httpx.HTTPError):
        httpx.get(_https(tls_server) + "/v2/health/ready", verify=ctx)


def test_replaced_certificates_serve_new_connections_without_a_restart(
    tls_server: ServerProcess, pki: Pki, tmp_path: Path
) -> None:
    new_ca = CertificateAuthority(tmp_path / "ca2", "rotated CA")
    rotated = new_ca.issue("server2", "tensorgate", server=True)
    old_trust, new_trust = _context(pki.ca.files.cert, pki.client), _context(new_ca.files.cert, pki.client)
    assert httpx.get(_https(tls_server) + "/v2/health/live", verify=old_trust).status_code == 200
    pki.install(rotated)  # as cert-manager and the kubelet would: the files change under the running server
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(_https(tls_server) + "/v2/health/live", verify=new_trust).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the rotated certificate was not served"
            time.sleep(0.3)
        with pytest.raises(httpx.HTTPError):  # the old one is gone for new connections
            httpx.get(_https(tls_server) + "/v2/health/live", verify=old_trust)
        new_grpc = _channel_credentials(pki, new_ca.files.cert, pki.client)
        with grpc.secure_channel(tls_server.grpc, new_grpc) as channel:
            live = service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(
                service_pb2.ServerLiveRequest(), timeout=10
            )
            assert live.live
        old_grpc = _channel_credentials(pki, pki.ca.files.cert, pki.client)
        with grpc.secure_channel(tls_server.grpc, old_grpc) as channel, pytest.raises(grpc.RpcError):
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
    finally:
        pki.install(pki.server)
