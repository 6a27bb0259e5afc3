"""TLS for the HTTP listener from certificate files that are re-read when they change (cert-manager rotates the
Secret, the kubelet swaps the mounted files): ``ServerTLS.context()`` is the context uvicorn serves with; on every
handshake its SNI callback (called with or without SNI) hands the connection the newest context, rebuilt from the
files at most once a second when their fingerprint changed. TLS 1.2 or newer; with a client CA, clients must present
a certificate it signed (mTLS). A rotation that does not load (a half-written pair) keeps the previous one."""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.server.settings import Settings

log = logging.getLogger("tensorgate.tls")
CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM files of a server identity (and the CA its clients must be signed by, for mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def fingerprint(self) -> tuple[tuple[int, int, int], ...]:
        paths = [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])
        out = []
        for path in paths:
            st = os.stat(path)  # follows the symlinks a mounted Secret swaps on update
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.client_ca.read_bytes() if self.client_ca else None


class Watched:
    """Something built from CertificateFiles, rebuilt (at most once per CHECK_SECONDS) when they change."""

    def __init__(self, files: CertificateFiles, what: str) -> None:
        self.files = files
        self.what = what
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._stamp = files.fingerprint()

    def changed(self) -> bool:
        """Whether the files changed since the last successful build (checked at most once per CHECK_SECONDS)."""
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return False
        with self._lock:
            if now - self._checked < CHECK_SECONDS:
                return False
            self._checked = now
            try:
                stamp = self.files.fingerprint()
            except OSError as exc:
                log.error("%s: keeping the current certificate: %s", self.what, exc)
                return False
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            return True


class ServerTLS(Watched):
    def __init__(self, files: CertificateFiles, alpn: tuple[str, ...] = (), what: str = "HTTPS") -> None:
        super().__init__(files, what)
        self.alpn = alpn  # protocols offered in the handshake (the h2 gRPC server: "h2")
        self._current = self._build()
        self._base = self._build()
        self._base.sni_callback = self._pick

    def context(self) -> ssl.SSLContext:
        return self._base

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.files.cert, self.files.key)
        if self.alpn:
            ctx.set_alpn_protocols(list(self.alpn))
        if self.files.client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(self.files.client_ca))
        return ctx

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if self.changed():
            try:
                self._current = self._build()
                log.info("%s: certificates reloaded from %s", self.what, self.files.cert)
            except (OSError, ssl.SSLError) as exc:
                log.error("%s: keeping the current certificate, the new files do not load: %s", self.what, exc)
        conn.context = self._current


def certificate_files(settings: Settings) -> CertificateFiles | None:
    """The configured server identity, or None when TLS is off; ValueError for half a configuration."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    ca = Path(settings.tls_client_ca) if settings.tls_client_ca else None
    return CertificateFiles(Path(settings.tls_cert), Path(settings.tls_key), ca)
