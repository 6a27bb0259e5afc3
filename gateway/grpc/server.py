"""start_grpc: the gRPC server (grpc.aio, or the h2 server with ``grpc_server: h2``) with the V2 service, TF Serving
services (loaded on first call), health, reflection, message-size limits and keepalive settings. No interceptor:
each method's handler is wrapped once when it is registered (key check, then decoding), and ModelInfer, the hot
path, does both itself on raw bytes."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from gateway.core.auth import Guard
from gateway.core.dataplane import DataPlane
from gateway.grpc.auth import guarding
from gateway.grpc.calls import Registrar, compose
from gateway.grpc.decoding import decoded
from gateway.grpc.health import HealthServicer
from gateway.grpc.protos import service_pb2, service_pb2_grpc
from gateway.grpc.tls import server_credentials
from gateway.grpc.v2 import InferenceServicer
from gateway.server.settings import Settings
from gateway.server.tls import ServerTLS, certificate_files

log = logging.getLogger("tensorgate.grpc")


async def start_grpc(
    dataplane: DataPlane, settings: Settings, guard: Guard | None = None, *, reuse_port: bool = False
) -> tuple[Any, int]:
    """The gRPC server, started; ``reuse_port``: the port is shared with the other worker processes."""
    options = [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", settings.grpc_keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.grpc_keepalive_timeout_ms),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    server: Any
    if settings.grpc_server == "h2":
        from gateway.grpc.h2.server import H2Server, Limits

        limits = Limits(
            max_message_bytes=settings.grpc_max_message_bytes,
            keepalive_time=settings.grpc_keepalive_time_ms / 1000,
            keepalive_timeout=settings.grpc_keepalive_timeout_ms / 1000,
        )
        server = H2Server(limits)
    else:
        server = grpc.aio.server(options=options)
    log.info("gRPC served by %s", "the h2 server" if settings.grpc_server == "h2" else "grpc.aio")
    v2 = InferenceServicer(dataplane, guard)
    wrap = compose(guarding(guard), decoded) if guard is not None and guard.enabled else decoded
    registrar = Registrar(server, wrap, v2.handlers())
    try:
        from gateway.grpc.tfserving import TFServingHandler

        registrar.add_generic_rpc_handlers((TFServingHandler(dataplane),))
    except ImportError as exc:
        log.warning("TF Serving gRPC API disabled: %s", exc)
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(v2, registrar)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(dataplane), registrar)
    names = (
        service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(names), registrar)
    host = settings.host
    address = f"[{host}]:{settings.grpc_port}" if ":" in host else f"{host}:{settings.grpc_port}"
    files = certificate_files(settings)
    if settings.grpc_server == "h2":
        if files:
            context = ServerTLS(files, alpn=("h2",), what="gRPC TLS").context()
            port = server.add_secure_port(address, context, reuse_port=reuse_port)
        else:
            port = server.add_insecure_port(address, reuse_port=reuse_port)
    elif files:
        port = server.add_secure_port(address, server_credentials(files))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    await server.start()
    return server, port
