"""A real ``tensorgate serve`` subprocess on 127.0.0.1 with OS-chosen ports, for end-to-end tests, and what tests
read from it from outside: the repository index, Prometheus samples, waiting on a condition, timed requests to
``onnx_models.spin_model``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import tritonclient.grpc as tg
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")


class ServerProcess:
    """Starts ``python -m gateway serve`` and waits until /v2/health/ready answers 200.

    The store, host, ports (0: OS-chosen) and port file are passed as flags, or with ``via_env`` as their
    ``TENSORGATE_*`` environment twins (then the command line holds only ``args``).
    """

    def __init__(
        self,
        store: str | Path,
        tmp: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        via_env: bool = False,
    ):
        self.store = str(store)
        self.tmp = tmp
        self.args = list(args)
        self.env = env or {}
        self.via_env = via_env
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = tmp / f"server-{time.monotonic_ns()}.log"
        self._client: httpx.Client | None = None

    def start(self, timeout: float = 120.0, wait_ready: bool = True) -> ServerProcess:
        port_file = self.tmp / f"ports-{time.monotonic_ns()}.json"
        base = {
            "store": self.store,
            "host": "127.0.0.1",
            "http-port": "0",
            "grpc-port": "0",
            "port-file": str(port_file),
        }
        env = {**os.environ, **self.env}
        cmd = [sys.executable, "-m", "gateway", "serve"]
        for key, value in base.items():
            if self.via_env:
                env[f"TENSORGATE_{key.replace('-', '_').upper()}"] = value
            else:
                cmd += [f"--{key}", value]
        cmd += self.args
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not listen within {timeout}s:\n{self.log()}")
            time.sleep(0.05)
        self.ports = json.loads(port_file.read_text())
        if wait_ready:
            self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                if httpx.get(f"{self.http_url}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready within {timeout}s:\n{self.log()}")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def client(self) -> httpx.Client:
        """A keep-alive HTTP client on the REST port, for tests that make many calls (closed by ``stop()``)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.http_url, timeout=60)
        return self._client

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def wait_until(condition: Callable[[], T], what: str, timeout: float = 60.0, server: ServerProcess | None = None) -> T:
    """Calls ``condition`` until it returns something truthy and returns that; fails after ``timeout`` seconds
    saying what was awaited (and the server's log). A condition, never a fixed sleep, decides when a test moves on."""
    deadline = time.monotonic() + timeout
    while True:
        if server is not None:
            server._check_alive()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            log = f"\nserver log:\n{server.log()}" if server is not None else ""
            raise TimeoutError(f"waited {timeout:.0f}s for {what}{log}")
        time.sleep(0.02)


def repository_index(server: ServerProcess) -> list[dict[str, str]]:
    """``POST /v2/repository/index``: one row per model version (name, version, state, reason)."""
    resp = server.client.post("/v2/repository/index", json={})
    resp.raise_for_status()
    rows: list[dict[str, str]] = resp.json()
    return rows


def index_row(server: ServerProcess, model: str, version: int | str) -> dict[str, str] | None:
    """The repository index row of one model version, or None when the index does not list it."""
    return next((r for r in repository_index(server) if r["name"] == model and r["version"] == str(version)), None)


def metric_series(server: ServerProcess, sample: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every Prometheus sample named ``sample`` (e.g.
    ``tensorgate_model_load_duration_seconds_sum``) in ``GET /metrics``."""
    text = server.client.get("/metrics").text
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample
    ]


def metric_samples(server: ServerProcess, sample: str, **labels: str) -> list[float]:
    """Values of the samples named ``sample`` whose labels include ``labels``."""
    return [v for have, v in metric_series(server, sample) if all(have.get(k) == w for k, w in labels.items())]


def metric_value(server: ServerProcess, sample: str, **labels: Any) -> float | None:
    """The one sample matching (None when absent): fails if the labels match several."""
    values = metric_samples(server, sample, **{k: str(v) for k, v in labels.items()})
    assert len(values) <= 1, f"{sample} {labels} matches {len(values)} samples"
    return values[0] if values else None


def spin_infer(
    address: str, x: np.ndarray, spins: int, version: str = "", model: str = "spin"
) -> tuple[str, np.ndarray]:
    """One gRPC request to a ``tests.onnx_models.spin_model``: (model_version, y); ``spins`` rounds of busy work
    make it last as long as the test needs. Its own client, so it can run in a thread of its own."""
    client = tg.InferenceServerClient(address)
    try:
        inputs = [tg.InferInput("x", list(x.shape), "FP32"), tg.InferInput("spins", [x.shape[0], 1], "INT64")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(np.full((x.shape[0], 1), spins, dtype=np.int64))
        result = client.infer(model, inputs, model_version=version, client_timeout=300)
        return result.get_response().model_version, result.as_numpy("y")
    finally:
        client.close()


def spins_for(address: str, seconds: float, model: str = "spin") -> int:
    """How many spin rounds make a request to a spin model served at ``address`` last about ``seconds`` on this
    machine (from the fastest of three probes, so it lasts at least that long unless the machine gets faster)."""
    x = np.zeros((1, 16), np.float32)
    probe = 300
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        spin_infer(address, x, probe, model=model)
        best = min(best, time.perf_counter() - t0)
    return max(probe, int(probe * seconds / best))
