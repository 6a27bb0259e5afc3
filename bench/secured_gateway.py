"""SecuredGateway: a ``tensorgate serve`` subprocess on a fresh store holding an MLP (784 -> 512 -> 10, ONNX), with
API keys and/or TLS (mTLS) as asked, certificates and keys made on the spot; and the closed-loop load the security
benchmarks drive it with: a minimal V2 REST client on asyncio streams (optionally TLS, with the key header) and a
grpc.aio client (optionally over a secure channel, with the key as metadata). Used by bench/security_cost.py and
bench/soak.py."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import onnx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import service_pb2, service_pb2_grpc

KEY = "bench-key-0123456789abcdef"
MODEL = "mlp"


def build_mlp(folder: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((784, 512)).astype(np.float32) * 0.05
    w2 = rng.standard_normal((512, 10)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W2"], ["logits"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    files = {"ca": folder / "ca.crt"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for stem, common, san in (("server", "tensorgate", True), ("client", "bench", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        )  # fmt: skip
        if san:
            ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        files[stem] = folder / f"{stem}.crt"
        files[f"{stem}_key"] = folder / f"{stem}.key"
        files[stem].write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        files[f"{stem}_key"].write_bytes(_pem_key(key))
    return files


@dataclass
class SecuredGateway:
    auth: bool
    tls: bool
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tg-secure-")))
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    pki: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return {(False, False): "plain", (True, False): "auth", (False, True): "mTLS", (True, True): "auth+mTLS"}[
            (self.auth, self.tls)
        ]

    def start(self, extra: list[str] | None = None) -> SecuredGateway:
        store = self.folder / "store"
        build_mlp(store / MODEL / "1")
        (store / MODEL / "config.yaml").write_text("instances: 2\n")
        args = ["--store", str(store), "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
                "--metrics-port", "0", "--poll-interval", "0", "--log-level", "warning"]  # fmt: skip
        if self.auth:
            keys = {"keys": [{"id": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest(), "scopes": ["infer"]}]}
            (self.folder / "keys.yaml").write_text(yaml.safe_dump(keys))
            args += ["--auth-keys", str(self.folder / "keys.yaml")]
        if self.tls:
            self.pki = make_pki(self.folder)
            args += ["--tls-cert", str(self.pki["server"]), "--tls-key", str(self.pki["server_key"]),
                     "--tls-client-ca", str(self.pki["ca"])]  # fmt: skip
        port_file = self.folder / "ports.json"
        args += ["--port-file", str(port_file), *(extra or [])]
        log = open(self.folder / "server.log", "wb")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", *args], stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while True:
            if port_file.exists():
                self.ports = json.loads(port_file.read_text())
                try:
                    if httpx.get(f"http://127.0.0.1:{self.ports['metrics']}/v2/health/ready").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.folder / "server.log").read_text()[-4000:])
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    # -- clients --------------------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.pki["ca"]))
        ctx.load_cert_chain(self.pki["client"], self.pki["client_key"])
        return ctx

    def rest_request(self, rows: int) -> bytes:
        x = np.random.default_rng(1).standard_normal((rows, 784)).astype(np.float32).tobytes()
        header = json.dumps({
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 784],
                        "parameters": {"binary_data_size": len(x)}}],
            "parameters": {"binary_data_output": True},
        }).encode()  # fmt: skip
        lines = [
            f"POST /v2/models/{MODEL}/infer HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/octet-stream",
            f"Inference-Header-Content-Length: {len(header)}", f"Content-Length: {len(header) + len(x)}",
        ]  # fmt: skip
        if self.auth:
            lines.append(f"Authorization: Bearer {KEY}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + header + x

    def grpc_channel(self) -> grpc.aio.Channel:
        target = f"127.0.0.1:{self.ports['grpc']}"
        if not self.tls:
            return grpc.aio.insecure_channel(target)
        creds = grpc.ssl_channel_credentials(
            self.pki["ca"].read_bytes(), self.pki["client_key"].read_bytes(), self.pki["client"].read_bytes()
        )
        return grpc.aio.secure_channel(target, creds)

    def grpc_request(self, rows: int) -> tuple[Any, tuple[tuple[str, str], ...]]:
        x = np.random.default_rng(1).standard_normal((rows, 784)).astype(np.float32)
        request = service_pb2.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="x", datatype="FP32", shape=[rows, 784])
        request.raw_input_contents.append(x.tobytes())
        metadata = (("authorization", f"Bearer {KEY}"),) if self.auth else ()
        return request, metadata


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


async def rest_worker(gw: SecuredGateway, stop: asyncio.Event, tally: Tally, rows: int = 1) -> None:
    request = gw.rest_request(rows)
    reader = writer = None
    while not stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["http"], ssl=gw.ssl_context())
            assert reader is not None
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            await _read_body(reader, head)
            if status == 200:
                tally.latencies.append(time.perf_counter() - start)
            else:
                tally.error(f"http {status}")
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            tally.error(type(exc).__name__)
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """A response body: sized by Content-Length, or chunked (uvicorn chunks bodies sent without a length)."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        parts.append(await reader.readexactly(size + 2))
        if size == 0:
            return b"".join(parts)


async def grpc_worker(
    stub: Any, request: Any, metadata: tuple[tuple[str, str], ...], stop: asyncio.Event, tally: Tally
) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            await stub.ModelInfer(request, metadata=metadata, timeout=30)
            tally.latencies.append(time.perf_counter() - start)
        except grpc.aio.AioRpcError as exc:
            tally.error(f"grpc {exc.code().name}")


async def drive(gw: SecuredGateway, protocol: str, concurrency: int, seconds: float) -> Tally:
    """Closed loop: ``concurrency`` workers of ``protocol`` (rest, grpc or both: half each) for ``seconds``."""
    stop, tally = asyncio.Event(), Tally()
    channel = gw.grpc_channel()
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    request, metadata = gw.grpc_request(1)
    rest_n = concurrency if protocol == "rest" else 0 if protocol == "grpc" else concurrency // 2
    tasks = [asyncio.create_task(rest_worker(gw, stop, tally)) for _ in range(rest_n)]
    grpc_n = concurrency - rest_n
    tasks += [asyncio.create_task(grpc_worker(stub, request, metadata, stop, tally)) for _ in range(grpc_n)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    await channel.close()
    return tally


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
