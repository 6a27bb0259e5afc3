"""S3Server: a real S3-compatible HTTP server (moto) in a subprocess on 127.0.0.1, for tests needing S3.

Usage::

    from tests.model_store.s3server import S3Server

    with S3Server() as server:                       # or server.start() / server.stop()
        server.upload_version(folder, "mlp", 1)      # <folder>/model.onnx -> s3://models/mlp/1/model.onnx
        store = S3Store(server.uri(), endpoint_url=server.endpoint_url)
        server.restart()                             # an outage: same port, same contents afterwards
        server.pause(); server.resume()              # a hung server: clients time out

``env``/``environ()`` give the AWS_* variables a client (or a ``tensorgate serve`` subprocess) needs:
dummy credentials, region, ``AWS_ENDPOINT_URL``, and no profile or metadata lookups.

moto keeps objects in memory only, so this class keeps its own copy of everything written through
``put``/``upload_*`` and writes it back after each ``start()``: a restart looks like an outage of a durable
store. Objects written by other clients do not survive a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from model_store.s3 import ARTEFACTS, MANIFEST, build_manifest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class S3Server:
    """A moto S3 server process holding one bucket; ``uri(prefix)`` is the store URI to give to open_store."""

    def __init__(self, bucket: str = "models", *, max_keys: int | None = None, start_timeout: float = 20.0):
        """``max_keys`` lowers the server's page size for listings, to exercise pagination."""
        self.bucket = bucket
        self.max_keys = max_keys
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._objects: dict[str, bytes] = {}
        self._pending: set[str] = set()  # keys written while paused, sent on resume()
        self._log = Path(tempfile.mkdtemp(prefix="tensorgate-s3server-")) / "moto.log"
        self._client: Any = None

    # --- lifecycle ------------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise RuntimeError("S3Server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> S3Server:
        """Start the server (on the port it had before, if any), create the bucket and restore its objects."""
        if self.running:
            return self
        attempts = 1 if self.port else 3  # a fresh free port may be taken by someone else in between
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = _free_port()
            if self._spawn():
                break
        else:
            raise RuntimeError(f"moto S3 server did not start on 127.0.0.1:{self.port}:\n{self.log_tail()}")
        self._client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}),
        )
        self._client.create_bucket(Bucket=self.bucket)
        for key, data in self._objects.items():
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self

    def _spawn(self) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["S3_IGNORE_SUBDOMAIN_BUCKETNAME"] = "true"
        if self.max_keys:
            env["MOTO_S3_DEFAULT_MAX_KEYS"] = str(self.max_keys)
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the server process; the port stays reserved for the next start()."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._paused:
            proc.send_signal(signal.SIGCONT)
            self._paused = False
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> S3Server:
        """stop() then start() on the same port: clients fail while it is down and recover after."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted but never answered, so clients time out."""
        if self._proc is not None and not self._paused:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Continue a paused server and apply the writes made meanwhile."""
        if self._proc is not None and self._paused:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False
        pending, self._pending = self._pending, set()
        for key in sorted(pending):
            if key in self._objects:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=self._objects[key])
            else:
                self.client.delete_object(Bucket=self.bucket, Key=key)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        return self._log.read_text(errors="replace")[-chars:] if self._log.exists() else ""

    # --- clients --------------------------------------------------------------------------------------------

    def uri(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>``, the store URI for open_store / ``tensorgate serve --store``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    @property
    def env(self) -> dict[str, str]:
        """The AWS_* variables that point a boto3 client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default os.environ) without its AWS_* variables, plus ``env``: for a subprocess."""
        source = dict(os.environ if base is None else base)
        return {k: v for k, v in source.items() if not k.startswith("AWS_")} | self.env

    @property
    def client(self) -> Any:
        """A boto3 S3 client for this server (writes through it are not restored after a restart)."""
        if self._client is None:
            raise RuntimeError("S3Server has not been started")
        return self._client

    # --- contents -------------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Write one object (kept across restarts; sent on resume() when the server is paused)."""
        self._objects[key] = data
        self._send(key)

    def delete(self, key: str) -> None:
        self._objects.pop(key, None)
        self._send(key)

    def _send(self, key: str) -> None:
        if self._paused:
            self._pending.add(key)
        elif self.running:
            if key in self._objects:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=self._objects[key])
            else:
                self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str = "") -> list[str]:
        """The keys under ``prefix`` written through this class (what a restart restores)."""
        return sorted(k for k in self._objects if k.startswith(prefix))

    @staticmethod
    def version_prefix(model: str, version: int, prefix: str = "") -> str:
        return "/".join(p for p in (prefix.strip("/"), model, str(version)) if p) + "/"

    def upload_version(
        self,
        folder: str | Path,
        model: str,
        version: int,
        *,
        prefix: str = "",
        marker: str | None = None,
        manifest: bool = False,
        skip: Iterable[str] = (),
    ) -> str:
        """Upload every file under ``folder`` to ``<prefix>/<model>/<version>/``; returns that key prefix.

        ``manifest`` adds a MANIFEST.json (sizes and sha256 of all files, skipped ones included) first;
        ``marker`` (``"_COMPLETE"`` or ``".complete"``) is written last; paths in ``skip`` are left out.
        """
        root = Path(folder)
        base = self.version_prefix(model, version, prefix)
        if manifest:
            self.put(base + MANIFEST, build_manifest(root))
        skipped = set(skip)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            if rel not in skipped:
                self.put(base + rel, path.read_bytes())
        if marker:
            self.put(base + marker, b"")
        return base

    def upload_partial_version(
        self, folder: str | Path, model: str, version: int, *, prefix: str = "", manifest: bool = False
    ) -> str:
        """An upload cut short: with ``manifest``, the manifest and a truncated artefact; else no artefact."""
        root = Path(folder)
        artefact = next(name for name in ARTEFACTS if (root / name).is_file())
        base = self.upload_version(root, model, version, prefix=prefix, manifest=manifest, skip=[artefact])
        if manifest:
            data = (root / artefact).read_bytes()
            self.put(base + artefact, data[: len(data) // 2])
        return base

    def upload_corrupt_version(self, folder: str | Path, model: str, version: int, *, prefix: str = "") -> str:
        """A manifest for the real files, and an artefact of the right size whose bytes were flipped."""
        root = Path(folder)
        artefact = next(name for name in ARTEFACTS if (root / name).is_file())
        base = self.upload_version(root, model, version, prefix=prefix, manifest=True, skip=[artefact])
        data = bytes(b ^ 0xFF for b in (root / artefact).read_bytes())
        self.put(base + artefact, data)
        return base

    def delete_version(self, model: str, version: int, *, prefix: str = "") -> None:
        """Delete every object under ``<prefix>/<model>/<version>/``."""
        base = self.version_prefix(model, version, prefix)
        for key in self.keys(base):
            self.delete(key)
