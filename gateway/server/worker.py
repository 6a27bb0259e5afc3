"""WorkerServer: one of the server processes a supervisor runs (``--workers N``). It serves like a lone server, on
ports it shares with the other workers, but it does not follow the store: its supervisor tells it what to load,
publish and unload (so every worker swaps versions together), answers its repository API calls, its /metrics and
its statistics calls (the sums over every worker), carries the shared-memory regions clients register through it to
every other worker, and tells it whether the fleet is ready.

Started as ``python -m gateway.server.worker SPEC`` by gateway.server.supervisor, never by hand.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import Any

import orjson

from gateway.core.errors import AlreadyExists, GatewayError, ServerUnavailable
from gateway.lifecycle.model import READY, ModelVersion
from gateway.server.link import Link
from gateway.server.process import Server, run_loop
from gateway.server.settings import Settings
from gateway.telemetry import fleet
from gateway.telemetry.logs import setup_logging
from gateway.telemetry.stats import ModelStats

log = logging.getLogger("tensorgate.worker")

SCRAPE_TIMEOUT = 30.0


class RemoteControl:
    """The repository API's load/unload, carried out by the supervisor on every worker."""

    def __init__(self, server: WorkerServer) -> None:
        self.server = server

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        await self.server.ask("control", verb="load", name=name, parameters=parameters)

    async def unload(self, name: str) -> None:
        await self.server.ask("control", verb="unload", name=name)


class RemoteFleet:
    """The data plane's view of the other workers: client shared memory and statistics, through the supervisor."""

    def __init__(self, server: WorkerServer) -> None:
        self.server = server

    async def shared_memory_registered(self, name: str, key: str, offset: int, byte_size: int) -> None:
        fleets: tuple[str, int, int] | None = await self.server.ask(
            "shm_register", name=name, region=(key, offset, byte_size)
        )
        if fleets is not None:  # another worker registered that name first: the fleet's region stands, here too
            self.server.hold_region(name, fleets)
            raise AlreadyExists(f"shared memory region {name!r} is already registered; unregister it first")

    async def shared_memory_unregistered(self, name: str) -> None:
        await self.server.ask("shm_unregister", name=name)

    async def statistics(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], ModelStats]:
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT):
                summed: dict[tuple[str, str], ModelStats] = await self.server.ask("statistics", keys=keys)
        except TimeoutError:
            raise ServerUnavailable(f"the workers' statistics did not come within {SCRAPE_TIMEOUT:.0f}s") from None
        return summed


class WorkerServer(Server):
    # SIGINT (Ctrl-C reaches the whole process group) is the supervisor's to handle: it then sends SIGTERM, so a
    # worker never exits on its own before the supervisor knows it is stopping (it would be restarted)
    stop_signals = (signal.SIGTERM,)

    def __init__(self, settings: Settings, slot: int, link_fd: int, http_fd: int, metrics_fd: int | None) -> None:
        self.slot = slot
        self._fds = (link_fd, http_fd, metrics_fd)
        self.link: Link | None = None
        self._gates: dict[tuple[str, int], tuple[asyncio.Future[str], asyncio.Future[str | None]]] = {}
        self._published: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._index: list[dict[str, str]] | None = None  # the fleet's repository index, as the supervisor sent it
        self._unready: str | None = "waiting for the supervisor"
        self._synced = False
        self._background: set[asyncio.Task[Any]] = set()  # following the supervisor, loads: ended at shutdown
        super().__init__(settings)
        self.shared_ports = True
        self.host.index = self._fleet_index  # type: ignore[method-assign]  # the index is the fleet's
        self.dataplane.fleet = RemoteFleet(self)

    # -- Server's hooks ------------------------------------------------------------------------------------------
    def _host_hooks(self) -> dict[str, Any]:
        return {"gate": self._gate, "on_ready": self._on_ready}

    def _control(self) -> Any:
        return RemoteControl(self)

    def _http_socket(self, port: int) -> socket.socket:
        return socket.socket(fileno=self._fds[1])

    def _metrics_socket(self) -> socket.socket | None:
        return None if self._fds[2] is None else socket.socket(fileno=self._fds[2])

    async def start(self) -> None:
        reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=self._fds[0]))
        self.link = Link(reader, writer, self._handle)
        self._spawn(self._follow(self.link))
        await self.ask("hello", slot=self.slot)  # loads what the other workers serve before taking connections
        await super().start()

    async def _serve_models(self) -> None:
        loop = asyncio.get_running_loop()
        self.metrics.source = lambda om: asyncio.run_coroutine_threadsafe(self._scrape(om), loop).result()
        self.dataplane.readiness = self._why_unready
        await self.ask("listening")

    async def _follow(self, link: Link) -> None:
        await link.serve()
        if not self.dataplane.stopping:
            log.error("lost the supervisor; stopping")
            self.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def shutdown(self) -> None:
        await super().shutdown()
        for task in list(self._background):
            task.cancel()
        if self.link is not None:
            self.link.close()

    # -- what the supervisor asks --------------------------------------------------------------------------------
    async def ask(self, op: str, **args: Any) -> Any:
        if self.link is None or self.link.closed:
            raise ServerUnavailable("this worker has lost its supervisor")
        return await self.link.call(op, **args)

    async def _scrape(self, om: bool) -> bytes:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            body: bytes = await self.ask("scrape", om=om)
        return body

    async def _handle(self, op: str, args: dict[str, Any]) -> Any:
        if op == "snapshot":
            held = [(m.labels, m.stats) for m in self.host.all_loaded()]
            return fleet.take(self.metrics, held, [m.labels for m in self.host.serving()])
        if op == "shm_sync":  # (before this worker listens) the regions clients registered through the others
            for name, region in args["regions"].items():
                self.hold_region(name, region)
            return None
        if op == "shm_register":
            self.hold_region(args["name"], args["region"])
            return None
        if op == "shm_unregister":
            self.dataplane.shared_memory.unregister(args["name"])
            return None
        if op == "load":
            return await self._load(**args)
        if op == "decide":
            return await self._decide(**args)
        if op == "unload_version":
            entry = self.host.get(args["name"])
            model = entry.versions.get(args["version"]) if entry is not None else None
            if entry is not None and model is not None:
                await self.host.unload_version(entry, model)
            return None
        if op == "unload_model":
            await self.host.unload_model(args["name"])
            return None
        if op == "routes":
            self.host.publish_routes(args["routes"])
            return None
        if op == "state":
            self._index, self._unready = args["index"], args["unready"]
            if args["synced"] and not self._synced:
                self._synced = True
                log.info("in step with the fleet: %d model(s)", len(self.host.models))
            self.dataplane.started = self._synced and args["started"]
            return None
        raise ValueError(f"unknown operation {op!r}")

    async def _load(self, name: str, version: int, fingerprint: str, config: Any, gated: bool) -> tuple[bool, str]:
        """Loads a version; gated: keeps it unpublished until ``decide``. (True, format) or (False, reason)."""
        entry = self.host.entry(name, config)
        if version != 0:
            entry.versions.pop(0, None)  # the placeholder row of an earlier invalid config.yaml
        current = entry.versions.get(version)
        if (
            current is not None
            and current.state == READY
            and (current.fingerprint, current.config)
            == (
                fingerprint,
                config,
            )
        ):
            return True, current.format  # serving already
        key = (name, version)
        loop = asyncio.get_running_loop()
        reached: asyncio.Future[str] = loop.create_future()
        decision: asyncio.Future[str | None] = loop.create_future()
        if gated:
            self._gates[key] = (reached, decision)
        self._published[key] = published = loop.create_future()
        task = self._spawn(self.host.load(entry, version, fingerprint, config))
        try:
            waits: set[asyncio.Future[Any]] = {task, reached if gated else published}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if gated and reached.done():
                return True, reached.result()
            if not gated and published.done():
                model = entry.versions.get(version)
                return True, model.format if model is not None else ""
            model = entry.versions.get(version)
            return False, (model.reason if model is not None else "") or "load failed"
        finally:
            if not gated:
                self._published.pop(key, None)

    async def _decide(self, name: str, version: int, refusal: str | None) -> None:
        """Publishes a gated version (returns once it serves), or discards it with ``refusal`` as its reason."""
        key = (name, version)
        gate = self._gates.pop(key, None)
        published = self._published.get(key)
        if gate is None:
            return
        gate[1].set_result(refusal)
        if refusal is None and published is not None:
            await published
        self._published.pop(key, None)

    async def _gate(self, model: ModelVersion) -> str | None:
        gate = self._gates.get((model.name, model.version))
        if gate is None:
            return None
        gate[0].set_result(model.format)
        return await gate[1]

    def _on_ready(self, model: ModelVersion) -> None:
        published = self._published.get((model.name, model.version))
        if published is not None and not published.done():
            published.set_result(None)

    def hold_region(self, name: str, region: tuple[str, int, int]) -> None:
        """Registers a region another worker registered (the same one already held: nothing to do)."""
        registry = self.dataplane.shared_memory
        key, offset, byte_size = region
        if registry.held(name) == region:
            return
        registry.unregister(name)  # a region of that name the fleet replaced
        try:
            registry.register(name, key, offset, byte_size)
        except GatewayError as exc:  # e.g. the client removed the object since: it is unknown here only
            log.error("could not register shared memory region %r like the other workers: %s", name, exc.message)

    # -- health ------------------------------------------------------------------------------------------------
    def _why_unready(self) -> str | None:
        if not self._synced:
            return f"worker {self.slot} is loading what the other workers serve"
        return self._unready if self.settings.strict_readiness else None

    def _fleet_index(self) -> list[dict[str, str]]:
        return list(self._index) if self._index is not None else []


def main(argv: list[str] | None = None) -> int:
    spec = orjson.loads((argv or sys.argv[1:])[0])
    settings = Settings(**spec["settings"])
    setup_logging(settings.log_level, settings.log_format, process=f"worker-{spec['slot']}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = WorkerServer(settings, spec["slot"], spec["link"], spec["http"], spec.get("metrics"))
    return run_loop(server.run())


if __name__ == "__main__":
    sys.exit(main())
