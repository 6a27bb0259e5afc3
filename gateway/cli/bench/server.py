"""A gateway started by the bench itself: ``tensorgate serve`` on free ports, stopped when the bench ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx


class GatewayProcess:
    """``python -m gateway serve --store STORE`` on 127.0.0.1 with OS-chosen ports (read back via --port-file),
    ready once the first load finished (not strict: the bench measures the variants that did load)."""

    def __init__(self, store: str, extra_args: Sequence[str] = (), log_path: Path | None = None) -> None:
        self.store = store
        self.extra_args = list(extra_args)
        self._dir = tempfile.TemporaryDirectory(prefix="tensorgate-bench-")
        self.log_path = log_path or Path(self._dir.name) / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        port = self.ports.get("metrics") or self.ports["http"]
        return f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 300.0) -> GatewayProcess:
        port_file = Path(self._dir.name) / "ports.json"
        # not strict: a store with a variant that fails to load is still benchmarked on the others
        cmd = [
            sys.executable, "-m", "gateway", "serve", "--store", self.store, "--host", "127.0.0.1",
            "--http-port", "0", "--grpc-port", "0", "--port-file", str(port_file),
            "--poll-interval", "0", "--no-strict-readiness", *self.extra_args,
        ]  # fmt: skip
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it; closed below once it has it
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the gateway did not listen within {timeout:.0f}s:\n{self.log()}")
            time.sleep(0.05)
        self.ports = json.loads(port_file.read_text())
        while True:
            self._check_alive()
            try:
                if httpx.get(f"{self.http_url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the gateway was not ready within {timeout:.0f}s:\n{self.log()}")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with code {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
