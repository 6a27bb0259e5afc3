"""Honest readiness, end to end: a corrupt model or an unreachable S3 store at start keep /v2/health/ready (and
gRPC ServerReady) at 503 / false; all versions READY turn it 200; ``--exit-on-error`` refuses to start."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as tg

from tests.model_store.s3server import S3Server
from tests.onnx_models import dense_model
from tests.serving import ServerProcess


def _ready(proc: ServerProcess) -> int:
    return httpx.get(f"{proc.http_url}/v2/health/ready", timeout=5).status_code


def _wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_corrupt_model_is_not_ready_until_fixed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    dense_model(store / "good" / "1" / "model.onnx")
    (store / "bad" / "1").mkdir(parents=True)
    (store / "bad" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    proc = ServerProcess(store, tmp_path, ["--poll-interval", "0.3"]).start(wait_ready=False)
    try:
        index = f"{proc.http_url}/v2/repository/index"
        _wait_for(lambda: any(r["name"] == "bad" and r["state"] == "UNAVAILABLE" for r in httpx.post(index).json()))
        assert _ready(proc) == 503
        assert not tg.InferenceServerClient(proc.grpc).is_server_ready()
        assert httpx.get(f"{proc.http_url}/v2/models/good/ready").status_code == 200  # the good one serves
        dense_model(store / "bad" / "1" / "model.onnx")  # fixed in the store: the next poll loads it
        _wait_for(lambda: _ready(proc) == 200)
        assert tg.InferenceServerClient(proc.grpc).is_server_ready()
    finally:
        proc.stop()


def test_s3_unreachable_at_start_is_not_ready_then_ready(tmp_path: Path) -> None:
    s3 = S3Server().start()
    try:
        folder = tmp_path / "dense"
        dense_model(folder / "model.onnx")
        s3.upload_version(folder, "dense", 1, marker="_COMPLETE")
        s3.stop()  # the store is down when the server starts
        proc = ServerProcess(
            s3.uri(), tmp_path, ["--poll-interval", "0.5", "--cache-dir", str(tmp_path / "cache")], env=s3.env
        ).start(wait_ready=False)
        try:
            _wait_for(lambda: "unreachable" in proc.log())
            assert _ready(proc) == 503
            s3.start()  # back on the same port, its objects restored one by one (a poll may see an empty bucket)
            _wait_for(lambda: httpx.get(f"{proc.http_url}/v2/models/dense/ready").status_code == 200)
            assert _ready(proc) == 200
        finally:
            proc.stop()
    finally:
        s3.stop()


def test_exit_on_error_refuses_to_start_with_a_failed_model(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "bad" / "1").mkdir(parents=True)
    (store / "bad" / "1" / "model.onnx").write_bytes(b"garbage")
    cmd = [sys.executable, "-m", "gateway", "serve", "--store", str(store), "--host", "127.0.0.1", "--http-port", "0",
           "--grpc-port", "-1", "--poll-interval", "0", "--exit-on-error"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "--exit-on-error: bad v1:" in done.stderr


@pytest.mark.parametrize("path", ["/v2/models/ghost/versions/1/ready", "/v2/models/dense/versions/9/ready"])
def test_ready_of_something_that_does_not_exist_is_404(server: ServerProcess, path: str) -> None:
    assert httpx.get(server.http_url + path).status_code == 404
