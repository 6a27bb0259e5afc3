"""gRPC server credentials from certificate files re-read when they change: grpc calls the fetcher on every new
handshake, and it returns a new certificate configuration only when the files changed (checked at most once a
second). With a client CA, clients must present a certificate it signed (mTLS). grpc's TLS is 1.2 or newer."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from gateway.server.tls import CertificateFiles, Watched

log = logging.getLogger("tensorgate.tls")


def server_credentials(files: CertificateFiles) -> Any:
    watched = Watched(files, "gRPC TLS")

    def configuration() -> Any:
        cert, key, ca = files.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch() -> Any:
        if not watched.changed():
            return None
        try:
            config = configuration()
        except OSError as exc:
            log.error("gRPC TLS: keeping the current certificate: %s", exc)
            return None
        log.info("gRPC TLS: certificates reloaded from %s", files.cert)
        return config

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=files.client_ca is not None
    )
