"""Server: the composition root — builds the store, metrics, host, controller, router and data plane, and runs
REST and gRPC on one event loop.

Shutdown (SIGTERM/SIGINT): readiness turns false, optionally waits ``shutdown_delay`` so load balancers notice,
stops taking new calls, lets in-flight requests finish within ``grace_period``, then unloads every model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from gateway import __version__
from gateway.core.auth import Guard, KeyRing, ModelAccessRouter, RestrictedControl
from gateway.core.dataplane import DataPlane, ServerInfo
from gateway.core.shared_memory import SharedMemoryRegistry
from gateway.lifecycle.assembly import Assembler
from gateway.lifecycle.controller import ModelController
from gateway.lifecycle.host import ModelHost
from gateway.lifecycle.warmup import Warmer
from gateway.routing.routes import RouteRouter
from gateway.server.http_protocol import protocol_class
from gateway.server.metrics_port import MetricsPort
from gateway.server.settings import Settings
from gateway.server.tls import ServerTLS, certificate_files
from gateway.telemetry.access import AccessLog
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import Tracing
from model_store import ConfigError, ModelStore, open_store
from runtimes import runtime_class

log = logging.getLogger("tensorgate.server")


class Server:
    """One tensorgate process: ``await Server(settings).run()`` until a signal or ``stop()``."""

    stop_signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        options: dict[str, Any] = {}
        if settings.cache_dir:
            options["cache_dir"] = settings.cache_dir
        self.store = open_model_store(settings, options)
        assembler = Assembler(
            runtime_class,
            self.metrics,
            Warmer(self.store).warm,
            allow_pickle=settings.allow_pickle,
            idle_thread_s=settings.idle_thread_s,
        )
        self.host = ModelHost(
            self.store, self.metrics, assembler, load_threads=settings.load_threads, **self._host_hooks()
        )
        if settings.metrics_compat == "triton":
            host = self.host
            self.metrics.enable_triton(lambda: [(m.labels, m.stats) for m in host.serving()])
        overrides = Path(settings.config_overrides) if settings.config_overrides else None
        self.controller = ModelController(
            self.store, self.host, self.metrics, config_overrides=overrides, memory_budget=settings.memory_budget
        )
        self.access_log = (
            AccessLog(settings.log_format, settings.access_log_sample, settings.access_log_slow_ms)
            if settings.access_log
            else None
        )
        self.tracing = _tracing() if settings.tracing else None
        self.guard = Guard(KeyRing(Path(settings.auth_keys)) if settings.auth_keys else None, settings.auth_open)
        control = RestrictedControl(self._control(), self.guard, explicit=settings.model_control == "explicit")
        routes = RouteRouter(self.host, self.metrics.routes)
        router = ModelAccessRouter(routes) if self.guard.enabled else routes
        self.dataplane = DataPlane(
            self.host, router, self.metrics, control, ServerInfo(name=settings.server_name, version=__version__),
            access_log=self.access_log, tracing=self.tracing,
            shared_memory=SharedMemoryRegistry(settings.allow_client_shm, settings.max_request_bytes),
        )  # fmt: skip
        if settings.memory_budget is not None:
            self.dataplane.on_demand = self.controller  # a model parked by the budget loads for its request
        self.ports: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._http: uvicorn.Server | None = None
        self._grpc: Any = None
        self._metrics_port: MetricsPort | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.shared_ports = False  # a worker: the gRPC port is shared with the other workers (SO_REUSEPORT)

    # -- what a worker process replaces (gateway.server.worker) ------------------------------------------------
    def _host_hooks(self) -> dict[str, Any]:
        return {}

    def _control(self) -> Any:
        return self.controller

    def _http_socket(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, port))
        sock.listen(2048)
        return sock

    def _metrics_socket(self) -> socket.socket | None:
        return None

    async def start(self) -> None:
        from gateway.rest.app import create_app

        s = self.settings
        app = create_app(self.dataplane, s, self.guard)
        files = certificate_files(s)
        self._http, http_port = await self._start_uvicorn(app, s.http_port, ServerTLS(files) if files else None)
        self.ports["http"] = http_port
        if s.grpc_port >= 0:
            from gateway.grpc.server import start_grpc

            self._grpc, grpc_port = await start_grpc(self.dataplane, s, self.guard, reuse_port=self.shared_ports)
            self.ports["grpc"] = grpc_port
        if s.metrics_port >= 0:
            self._metrics_port = MetricsPort(
                self.metrics, s.host, s.metrics_port, self.dataplane, self.guard, sock=self._metrics_socket()
            )
            self.ports["metrics"] = self._metrics_port.start()
        log.info(
            "tensorgate %s listening: %s %s:%d, grpc %s, store %s (%s mode)%s",
            __version__, "https" if files else "http", s.host, http_port, self.ports.get("grpc", "off"),
            self.store.uri, s.model_control, ", API keys required" if self.guard.enabled else "",
        )  # fmt: skip
        if s.port_file:
            await asyncio.to_thread(_write_atomically, Path(s.port_file), orjson.dumps(self.ports))
        await self._serve_models()

    async def _serve_models(self) -> None:
        """The initial load, then following the store (a worker follows its supervisor instead)."""
        s = self.settings
        await initial_load(self.controller, s)
        check_startup(self.controller, s)
        if s.strict_readiness:
            need_listing = s.model_control != "explicit"
            self.dataplane.readiness = lambda: self.controller.unready(need_listing)
        self.dataplane.started = True
        if s.model_control == "poll" and poll_interval(s) > 0:
            self._tasks.append(asyncio.create_task(self._poll()))

    async def _poll(self) -> None:
        await poll_store(self.controller, poll_interval(self.settings))

    async def _start_uvicorn(self, app: Any, port: int, tls: ServerTLS | None = None) -> tuple[uvicorn.Server, int]:
        sock = self._http_socket(port)
        sock.setblocking(False)
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=protocol_class(self.settings.header_timeout),
            proxy_headers=False,
            server_header=False,
            date_header=False,
            loop="none",
            timeout_keep_alive=75,
            timeout_graceful_shutdown=int(self.settings.grace_period) or None,
            backlog=2048,
            ssl_context_factory=None if tls is None else lambda _config, _default: tls.context(),
        )
        server = uvicorn.Server(config)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # signals are ours
        self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not server.started:  # noqa: ASYNC110 - uvicorn exposes no event for "listening"
            await asyncio.sleep(0.01)
        return server, sock.getsockname()[1]

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Serve until stopped; the exit status (1 when ``--exit-on-error`` refused the start)."""
        loop = asyncio.get_running_loop()
        for sig in self.stop_signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self.start()
            await self._stop.wait()
        except StartupError as exc:
            log.error("%s", exc)
            return 1
        finally:
            await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        log.info("shutting down: not ready, draining in-flight requests (grace %.0fs)", self.settings.grace_period)
        self.dataplane.stopping = True  # not ready; requests are still served while load balancers catch up
        if self.settings.shutdown_delay:
            await asyncio.sleep(self.settings.shutdown_delay)
        self.dataplane.draining = True
        waits = []
        if self._grpc is not None:
            waits.append(self._grpc.stop(self.settings.grace_period))
        if self._http is not None:
            self._http.should_exit = True
        if self._metrics_port is not None:
            await asyncio.to_thread(self._metrics_port.close)
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)
        for task in self._tasks:
            if not task.done() and task.get_coro().__qualname__.startswith("Server._poll"):  # type: ignore[union-attr]
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.host.close()
        self.dataplane.shared_memory.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)
        if self.access_log is not None:
            self.access_log.close()
        log.info("stopped")


def open_model_store(settings: Settings, options: dict[str, Any]) -> ModelStore:
    """The store: TF Serving's model config file or one-model base path when given, else --store."""
    if not settings.model_config_file and not settings.model_base_path:
        return open_store(settings.store, **options)
    if settings.model_config_file and settings.model_base_path:
        raise SystemExit("set --model_config_file or --model_base_path, not both")
    from model_store.tfs_config import TfsConfigStore

    try:
        if settings.model_base_path:
            return TfsConfigStore.single(settings.model_name, settings.model_base_path, **options)
        assert settings.model_config_file is not None
        return TfsConfigStore(settings.model_config_file, settings.model_config_file_poll_wait_seconds, **options)
    except ConfigError as exc:
        flag = "--model_base_path" if settings.model_base_path else "--model_config_file"
        raise SystemExit(f"{flag}: {exc}") from None


async def initial_load(controller: ModelController, s: Settings) -> None:
    """What serves from the start: the whole store, or in explicit mode the ``--load-model`` names."""
    if s.model_control == "explicit":
        names = s.load_models
        if names == ["*"]:
            await controller.sync()
        elif names:
            for name in names:
                try:
                    await controller.load(name)
                except Exception as exc:
                    log.error("could not load %s at startup: %s", name, exc)
        return
    await controller.sync()


def check_startup(controller: ModelController, s: Settings) -> None:
    """``--exit-on-error``: StartupError when a model failed to load or the store could not be listed."""
    if not s.exit_on_error:
        return
    problems = controller.failed()
    if s.model_control != "explicit" and not controller.listed:
        problems.insert(0, f"store {controller.store.uri}: {controller.store_reason or 'not listed'}")
    if problems:
        raise StartupError("--exit-on-error: " + "; ".join(problems))


def poll_interval(s: Settings) -> float:
    """Seconds between store polls: --poll-interval, or TF Serving's file poll period when that is shorter
    (a model config file is re-read at a poll); 0: no polling."""
    periods = [s.poll_interval, s.model_config_file_poll_wait_seconds if s.model_config_file else 0.0]
    return min((p for p in periods if p > 0), default=0.0)


async def poll_store(controller: ModelController, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await controller.sync()
        except Exception:
            log.exception("store poll failed")


def _tracing() -> Tracing:
    try:
        return Tracing()
    except ImportError as exc:
        raise SystemExit(f"--tracing needs OpenTelemetry ({exc}): pip install 'tensorgate[tracing]'") from None


class StartupError(RuntimeError):
    """The server refuses to start serving (``--exit-on-error`` with a failed model or an unreadable store)."""


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def run(settings: Settings) -> int:
    """Run the server on uvloop until SIGTERM/SIGINT; the exit status. With ``--workers`` above one, a supervisor
    runs that many server processes (gateway.server.supervisor)."""
    workers = settings.worker_count()
    if workers > 1 and settings.memory_budget is not None:
        raise SystemExit(
            f"--memory-budget cannot be combined with --workers {settings.workers} (each worker would hold every "
            "isolated model under a budget of its own): run one worker (--workers 1) to use a memory budget"
        )
    if workers > 1:
        from gateway.server.supervisor import Supervisor

        return run_loop(Supervisor(settings, workers).run())
    return run_loop(Server(settings).run())


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """``main`` on uvloop."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.Runner()
    with runner:
        return runner.run(main)
