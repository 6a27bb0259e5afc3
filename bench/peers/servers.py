"""The three servers under comparison, each started as a subprocess on 127.0.0.1 free ports and stopped again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEERS_TOOLS = ROOT / ".tools" / "peers"
KINDS = ("tensorgate", "mlserver", "kserve")


class ServerFailed(RuntimeError):
    """A server did not start, did not load the model, or died."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peer_python(kind: str) -> Path:
    """The interpreter of a peer's virtualenv; a clear error when setup.sh has not made it."""
    python = PEERS_TOOLS / kind / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run bench/peers/setup.sh first (it installs MLServer and KServe)")
    return python


@dataclass
class Server:
    """A running server: its process (a session leader, so its whole tree can be signalled) and ports."""

    kind: str
    model: str
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 180.0) -> float:
        """Poll the model's V2 readiness until it answers 200; returns the seconds it took."""
        start = time.monotonic()
        url = f"{self.base_url}/v2/models/{self.model}/ready"
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() - start < timeout_s:
                if not self.alive():
                    raise ServerFailed(f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}")
                if self.http_port:
                    try:
                        if client.get(url).status_code == 200:
                            return time.monotonic() - start
                    except httpx.TransportError:
                        pass
                time.sleep(0.2)
        raise ServerFailed(f"{self.kind} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            self.proc.wait()


def _spawn(cmd: list[str], log_path: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def start_tensorgate(store: Path, model: str, workdir: Path, workers: int = 1) -> Server:
    """``tensorgate serve --workers N`` on ephemeral ports, loading only ``model`` (explicit model control)."""
    port_file = workdir / f"tensorgate-{model}.ports.json"
    port_file.unlink(missing_ok=True)
    exe = Path(sys.executable).with_name("tensorgate")
    cmd = [
        str(exe) if exe.exists() else "tensorgate",
        "serve",
        "--store",
        str(store),
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--model-control",
        "explicit",
        "--load-model",
        model,
        "--port-file",
        str(port_file),
        "--log-level",
        "warning",
    ]
    if workers != 1:
        cmd += ["--workers", str(workers)]
    log_path = workdir / f"tensorgate-{model}-w{workers}.log"
    proc = _spawn(cmd, log_path, ROOT)
    config = (store / model / "config.yaml").read_text()
    server = Server("tensorgate", model, proc, 0, 0, log_path, {"config": config, "workers": workers})
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text().strip():
        if not server.alive() or time.monotonic() > deadline:
            server.stop()
            raise ServerFailed(f"tensorgate wrote no port file:\n{server.log_tail()}")
        time.sleep(0.1)
    ports = json.loads(port_file.read_text())
    server.http_port, server.grpc_port = int(ports["http"]), int(ports["grpc"])
    return server


def start_mlserver(
    onnx: Path, model: str, workdir: Path, batching: dict[str, Any] | None, parallel_workers: int = 0
) -> Server:
    """``mlserver start`` on a generated repository: ``parallel_workers`` inference processes (0: inference in the
    serving process), debug off, adaptive batching if asked."""
    python = peer_python("mlserver")
    root = workdir / f"mlserver-{model}-w{parallel_workers}"
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    gen = [
        str(python),
        str(HERE / "mlserver_onnx.py"),
        "write-settings",
        "--root",
        str(root),
        "--model",
        model,
        "--onnx",
        str(onnx),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--parallel-workers",
        str(parallel_workers),
    ]
    if batching:
        gen += [
            "--max-batch-size",
            str(batching["max_batch_size"]),
            "--max-batch-time-ms",
            str(batching["max_queue_delay_ms"]),
        ]
    subprocess.run(gen, check=True, env={**os.environ, "PYTHONPATH": str(HERE)})
    log_path = workdir / f"mlserver-{model}-w{parallel_workers}.log"
    proc = _spawn([str(python.with_name("mlserver")), "start", str(root)], log_path, root, {"PYTHONPATH": str(HERE)})
    settings = {
        "settings.json": json.loads((root / "settings.json").read_text()),
        "model-settings.json": json.loads((root / model / "model-settings.json").read_text()),
    }
    return Server("mlserver", model, proc, http_port, grpc_port, log_path, settings)


def start_kserve(onnx: Path, model: str, workdir: Path, workers: int = 1) -> Server:
    """The KServe model server (kserve_onnx.py) with ``--workers`` uvicorn processes, latency logging off."""
    python = peer_python("kserve")
    http_port, grpc_port = free_port(), free_port()
    cmd = [
        str(python),
        str(HERE / "kserve_onnx.py"),
        "--model_name",
        model,
        "--onnx",
        str(onnx),
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--enable_latency_logging",
        "false",
        "--workers",
        str(workers),
    ]
    log_path = workdir / f"kserve-{model}-w{workers}.log"
    proc = _spawn(cmd, log_path, workdir)
    settings = {"argv": cmd[2:], "loggers raised to WARNING": ["uvicorn.access", "kserve.trace"]}
    return Server("kserve", model, proc, http_port, grpc_port, log_path, settings)


def start(
    kind: str, store: Path, model: str, workdir: Path, batching: dict[str, Any] | None, workers: int = 1
) -> Server:
    """Start one server for ``model`` (a store entry) at a worker setting and wait until the model is ready."""
    store, workdir = store.resolve(), workdir.resolve()
    onnx = store / model / "1" / "model.onnx"
    if kind == "tensorgate":
        server = start_tensorgate(store, model, workdir, workers)
    elif kind == "mlserver":
        server = start_mlserver(onnx, model, workdir, batching, workers)
    elif kind == "kserve":
        server = start_kserve(onnx, model, workdir, workers)
    else:
        raise ValueError(f"unknown server {kind!r}; known: {KINDS}")
    try:
        server.settings["ready_after_s"] = round(server.wait_ready(), 2)
    except BaseException:
        server.stop()
        raise
    return server
