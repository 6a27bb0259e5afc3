"""A real ``tensorgate serve`` subprocess on 127.0.0.1 with OS-chosen ports, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


class ServerProcess:
    """Starts ``python -m gateway serve`` and waits until /v2/health/ready answers 200."""

    def __init__(self, store: str | Path, tmp: Path, args: Sequence[str] = (), env: dict[str, str] | None = None):
        self.store = str(store)
        self.tmp = tmp
        self.args = list(args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = tmp / f"server-{time.monotonic_ns()}.log"

    def start(self, timeout: float = 120.0, wait_ready: bool = True) -> ServerProcess:
        port_file = self.tmp / f"ports-{time.monotonic_ns()}.json"
        cmd = [
            sys.executable, "-m", "gateway", "serve", "--store", self.store, "--host", "127.0.0.1",
            "--http-port", "0", "--grpc-port", "0", "--port-file", str(port_file), *self.args,
        ]  # fmt: skip
        env = {**os.environ, **self.env}
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

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
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
