"""Settings: every server option, from the command line or TENSORGATE_* environment variables (the only env reader;
with ``tracing`` on, the OpenTelemetry SDK reads its own standard OTEL_* variables)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """``tensorgate serve`` options; each has an env-var twin, e.g. TENSORGATE_HTTP_PORT."""

    model_config = SettingsConfigDict(env_prefix="TENSORGATE_", extra="ignore")

    store: str = "./models"
    host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=8001, ge=-1, le=65535)  # -1 disables gRPC
    metrics_port: int = Field(default=-1, ge=-1, le=65535)  # -1: /metrics on the HTTP port only
    model_control: Literal["poll", "explicit", "none"] = "poll"
    poll_interval: float = Field(default=5.0, ge=0)
    load_models: list[str] = Field(default_factory=list)
    max_request_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    grpc_max_message_bytes: int = Field(default=256 * 1024 * 1024, ge=4 * 1024 * 1024)
    grpc_keepalive_time_ms: int = 30_000
    grpc_keepalive_timeout_ms: int = 10_000
    grpc_server: Literal["aio", "h2"] = "h2"  # the small HTTP/2 server (README: gRPC server); aio: grpc.aio
    grace_period: float = Field(default=30.0, ge=0)
    shutdown_delay: float = Field(default=0.0, ge=0)
    cache_dir: str | None = None
    config_overrides: str | None = None  # folder of <model>.yaml merged into the store's config.yaml
    port_file: str | None = None
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    load_threads: int = Field(default=2, ge=1)
    idle_thread_s: float = Field(
        default=30.0, ge=0
    )  # a model's executor threads retire after this long idle (0: never)
    access_log: bool = False  # one line per inference request on stderr (JSON with log_format json)
    access_log_sample: float = Field(default=1.0, ge=0.0, le=1.0)  # share of fast successful requests logged
    access_log_slow_ms: float = Field(default=0.0, ge=0.0)  # requests at least this slow are always logged (0: off)
    tracing: bool = False  # OpenTelemetry spans exported over OTLP (configured by OTEL_* variables)
    metrics_compat: Literal["none", "triton"] = "none"  # triton: also Triton's nv_inference_* families on /metrics
    # -- TF Serving's model config file (README "Coming from TF Serving"): replaces --store when set
    model_config_file: str | None = None  # a ModelServerConfig text proto: names, base paths, policies, labels
    model_config_file_poll_wait_seconds: float = Field(default=0.0, ge=0)  # re-read period; 0: read once
    model_base_path: str | None = None  # TF Serving's one-model mode: the folder (or s3://) of <version>/ folders
    model_name: str = "default"  # the name it is served under (TF Serving's default too)
    server_name: str = Field(default="tensorgate", min_length=1, max_length=64)  # server metadata's name (triton)
    # -- security (README "Security")
    auth_keys: str | None = None  # YAML file of hashed API keys with scopes (gateway.core.auth); None: no auth
    auth_open: list[str] = Field(default_factory=lambda: ["health", "metrics"])  # endpoint groups needing no key
    tls_cert: str | None = None  # PEM certificate chain: HTTPS and gRPC over TLS (re-read when it changes)
    tls_key: str | None = None
    tls_client_ca: str | None = None  # PEM CA bundle: clients must present a certificate it signed (mTLS)
    strict_readiness: bool = True  # ready only when every version the store and policies want is READY
    exit_on_error: bool = False  # exit non-zero when a model fails to load at startup
    allow_pickle: bool = False  # load torch.export archives whose weights are pickled (runs code from the store)
    allow_client_shm: bool = False  # Triton's system shared memory: clients may register /dev/shm objects
    body_timeout: float = Field(default=30.0, gt=0)  # seconds a request body may take to arrive (408 beyond)
    header_timeout: float = Field(default=10.0, gt=0)  # seconds a request head may take (connection closed beyond)
    # -- workers (README "Workers"): server processes sharing the ports under one supervisor; auto = usable CPUs
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = 1

    def worker_count(self) -> int:
        """How many server processes ``workers`` asks for (``auto``: the CPUs this container may use)."""
        if self.workers == "auto":
            from gateway.server.cpus import usable_cpus

            return usable_cpus()
        return self.workers

    # -- isolation (README "Isolation and the memory budget")
    memory_budget: int | None = Field(default=None, gt=0)  # bytes the isolated models' processes may hold together

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        return parse_bytes(value) if isinstance(value, str) else value


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
          "ti": 2**40, "tib": 2**40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """``4GiB``, ``512Mi``, ``2G``, ``1e9`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size: expected bytes or a number with a unit (e.g. 4GiB, 512MiB, 2GB)")
    return int(float(match.group(1)) * _UNITS[unit])
