"""Supervisor: ``tensorgate serve --workers N`` — N worker processes (gateway.server.worker) sharing the HTTP,
gRPC and metrics ports, and the one ModelController that follows the store for all of them.

Ports: the supervisor binds them first (port 0 picks one; ``--port-file`` reports the real ones). The HTTP and
metrics sockets are listening sockets every worker inherits (the kernel hands each connection to a worker that is
waiting in ``accept``: a busy worker takes fewer); gRPC, which cannot serve an inherited socket, binds the port the
supervisor reserved with SO_REUSEPORT in each worker (the kernel spreads connections by their addresses).

Models: the controller runs here against a ``FleetHost``, which keeps the index and asks every worker to load a
version, publishes it only once every live worker has it loaded and warm (so versions swap together), then has
them drain and unload what it replaces. A worker that starts (or restarts) first loads what the others serve and
only then counts as ready. Repository API calls and scrapes on any worker come here and act on all of them.

Client state: a shared-memory region a client registers (or unregisters) through one worker is applied on every
other worker before the call returns, and a starting worker registers the fleet's regions first; statistics
extension calls are answered with the sums over every worker, like scrapes.

A worker that exits is restarted (with backoff); SIGTERM drains every worker (each with the shutdown delay and
grace period of a lone server) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.lifecycle.assembly import Assembler
from gateway.lifecycle.controller import ModelController
from gateway.lifecycle.host import ModelHost
from gateway.lifecycle.model import (
    LOADING,
    READY,
    UNAVAILABLE,
    UNLOADING,
    ModelEntry,
    ModelVersion,
    RouteEntry,
    VersionStatus,
)
from gateway.server.link import Link, LinkClosed
from gateway.server.process import (
    StartupError,
    _write_atomically,
    check_startup,
    initial_load,
    open_model_store,
    poll_interval,
    poll_store,
)
from gateway.server.settings import Settings
from gateway.telemetry.fleet import FleetMetrics, Snapshot
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.stats import ModelStats
from model_store import ModelConfig, ModelStore
from runtimes import runtime_class

log = logging.getLogger("tensorgate.supervisor")

SNAPSHOT_TIMEOUT = 10.0  # a worker that does not answer a scrape in time counts with its previous snapshot
SNAPSHOT_EVERY = 5.0  # each worker's counts are also fetched this often: one killed between scrapes loses at most these
BACKOFF = (0.5, 10.0)  # first and longest wait before restarting a worker that keeps exiting
STABLE_AFTER = 30.0  # a worker that ran this long before exiting restarts after the first wait again


@dataclass(eq=False)
class Member:
    """One running worker process."""

    slot: int
    proc: asyncio.subprocess.Process
    link: Link
    started_at: float = field(default_factory=time.monotonic)
    greeted: bool = False  # it said hello: its ports are up
    joined: bool = False  # it has loaded what the fleet serves and takes part in every change
    dead: bool = False
    problem: str | None = None  # what it could not load when it joined (it stays not ready)
    last: Snapshot | None = None  # its counts at the last scrape
    has_regions: bool = False  # it was sent the client shared-memory regions and follows their changes


class FleetHost(ModelHost):
    """The controller's host in a supervisor: the index of what every worker serves (no runtime here); each
    change is carried out on every joined worker."""

    def __init__(self, store: ModelStore, metrics: Metrics, supervisor: Supervisor) -> None:
        super().__init__(store, metrics, Assembler(runtime_class, metrics))
        self.supervisor = supervisor

    async def load(self, entry: ModelEntry, version: int, fingerprint: str, config: ModelConfig) -> None:
        name = entry.name
        previous = entry.versions.get(version)
        if previous is None or previous.state != READY:
            entry.versions[version] = ModelVersion(name, version, config, fingerprint)  # LOADING row
        log.info("loading %s v%s on every worker", name, version)
        sup = self.supervisor
        sup.push_state()
        staged = await sup.broadcast(
            "load", name=name, version=version, fingerprint=fingerprint, config=config, gated=True
        )
        failed = [f"worker {slot}: {reason}" for slot, (ok, reason) in sorted(staged.items()) if not ok]
        refusal = "; ".join(failed) if failed else None
        await sup.broadcast("decide", name=name, version=version, refusal=refusal)  # (a worker that failed to answer
        # ``load`` still holds a gate: it is released too)
        formats = [fmt for ok, fmt in staged.values() if ok]
        fmt = formats[0] if formats else (previous.format if previous is not None else "")
        if refusal is not None:
            log.error("failed to load %s v%s: %s", name, version, refusal)
            if previous is not None and previous.state == READY:
                previous.status.reason = f"reload failed, still serving the previous load: {refusal}"
            else:
                entry.versions[version] = ModelVersion(
                    name, version, config, fingerprint, format=fmt or "unknown",
                    status=VersionStatus(UNAVAILABLE, refusal),
                )  # fmt: skip
                self.metrics.set_state(name, str(version), fmt or "unknown", UNAVAILABLE)
        else:
            entry.versions[version] = ModelVersion(name, version, config, fingerprint, format=fmt)
            entry.versions[version].status.state = READY
            self.metrics.set_sla(name, str(version), fmt, config.sla.targets())
            self.metrics.set_state(name, str(version), fmt, READY)
            if previous is not None and previous.format != fmt:
                self.metrics.set_state(name, str(version), previous.format, None)
            log.info("%s v%s READY on %d worker(s)", name, version, len(staged))
        sup.push_state()

    async def unload_version(self, entry: ModelEntry, model: ModelVersion) -> None:
        log.info("unloading %s v%s on every worker", entry.name, model.version)
        if entry.versions.get(model.version) is model:
            del entry.versions[model.version]
        labels = (model.name, str(model.version), model.format or "unknown")
        if model.state in (READY, LOADING):
            model.status.state = UNLOADING
            self.metrics.set_state(*labels, UNLOADING)
        self.supervisor.push_state()
        await self.supervisor.broadcast("unload_version", name=entry.name, version=model.version)
        self.metrics.set_state(*labels, None)
        self.supervisor.push_state()

    async def unload_model(self, name: str) -> None:
        entry = self.models.pop(name, None)
        if entry is None:
            return
        log.info("unloading %s on every worker", name)
        self.supervisor.push_state()
        await self.supervisor.broadcast("unload_model", name=name)
        for model in entry.versions.values():
            self.metrics.set_state(model.name, str(model.version), model.format or "unknown", None)
        self.supervisor.push_state()

    def publish_routes(self, routes: dict[str, RouteEntry]) -> None:
        before = dict(self.routes)
        super().publish_routes(routes)
        if self.routes.keys() != before.keys() or any(self.routes[k] is not before[k] for k in self.routes):
            self.supervisor.tell_all("routes", routes=self.routes)


class Supervisor:
    """``await Supervisor(settings, workers).run()`` -> the exit status."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.count = workers
        self.metrics = Metrics()
        options: dict[str, Any] = {"cache_dir": settings.cache_dir} if settings.cache_dir else {}
        self.store = open_model_store(settings, options)
        self.host = FleetHost(self.store, self.metrics, self)
        overrides = Path(settings.config_overrides) if settings.config_overrides else None
        self.controller = ModelController(self.store, self.host, self.metrics, config_overrides=overrides)
        self.fleet_metrics = FleetMetrics(self.metrics, triton=settings.metrics_compat == "triton")
        self.regions: dict[str, tuple[str, int, int]] = {}  # client shared memory: name -> (key, offset, byte_size)
        self.members: dict[int, Member] = {}
        self.ports: dict[str, int] = {}
        self.started = False  # the initial load is done
        self.stopping = False
        self._sockets: dict[str, socket.socket] = {}
        self._stop = asyncio.Event()
        self._greeted = asyncio.Event()
        self._startup_failure: str | None = None
        self._scrape_lock = asyncio.Lock()
        self._state_pending = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- running ---------------------------------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        keepers: list[asyncio.Task[Any]] = []
        status = 0
        try:
            self._bind()
            keepers = [asyncio.create_task(self._keep(slot)) for slot in range(self.count)]
            waiter = asyncio.create_task(self._greeted.wait())
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if self._startup_failure is not None:
                raise StartupError(self._startup_failure)
            if self._stop.is_set():
                return 0
            s = self.settings
            log.info(
                "%d workers listening: http %s:%d, grpc %s, store %s (%s mode)", self.count, s.host,
                self.ports["http"], self.ports.get("grpc", "off"), self.store.uri, s.model_control,
            )  # fmt: skip
            if s.port_file:
                await asyncio.to_thread(_write_atomically, Path(s.port_file), orjson.dumps(self.ports))
            await initial_load(self.controller, s)
            check_startup(self.controller, s)
            self.started = True
            self.push_state()
            self._spawn(self._refresh())
            if s.model_control == "poll" and poll_interval(s) > 0:
                self._spawn(poll_store(self.controller, poll_interval(s)))
            await self._stop.wait()
        except StartupError as exc:
            log.error("%s", exc)
            status = 1
        finally:
            await self._shutdown(keepers)
        return status

    def _bind(self) -> None:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        for name, port in (("http", s.http_port), ("metrics", s.metrics_port), ("grpc", s.grpc_port)):
            if port < 0:
                continue
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if name == "grpc":  # reserved, not listening: each worker's gRPC server binds it too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((s.host, port))
            if name != "grpc":
                sock.listen(2048)
                sock.set_inheritable(True)
            self._sockets[name] = sock
            self.ports[name] = sock.getsockname()[1]

    def _spec(self, slot: int, link_fd: int) -> bytes:
        settings = self.settings.model_dump(mode="json")
        settings.update(
            http_port=self.ports["http"], grpc_port=self.ports.get("grpc", -1),
            metrics_port=self.ports.get("metrics", -1), port_file=None, workers=1,
        )  # fmt: skip
        spec: dict[str, Any] = {"settings": settings, "slot": slot, "link": link_fd}
        spec["http"] = self._sockets["http"].fileno()
        if "metrics" in self._sockets:
            spec["metrics"] = self._sockets["metrics"].fileno()
        return orjson.dumps(spec)

    async def _keep(self, slot: int) -> None:
        """Runs worker ``slot`` until shutdown, restarting it (with backoff) whenever it exits."""
        failures = 0
        while not self.stopping:
            mine, theirs = socket.socketpair()
            fds = [theirs.fileno(), self._sockets["http"].fileno()]
            if "metrics" in self._sockets:
                fds.append(self._sockets["metrics"].fileno())
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway.server.worker", self._spec(slot, theirs.fileno()),
                    pass_fds=fds, stdin=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
            finally:
                theirs.close()
            reader, writer = await asyncio.open_connection(sock=mine)
            link = Link(reader, writer)
            member = Member(slot, proc, link)
            link.handler = functools.partial(self._handle, member)
            self.members[slot] = member
            log.info("worker %d started (pid %d)", slot, proc.pid)
            reading = asyncio.create_task(link.serve())
            code = await proc.wait()
            member.dead = True
            link.close()
            reading.cancel()
            if self.members.get(slot) is member:
                del self.members[slot]
            if member.last is not None:
                self.fleet_metrics.retire(slot, member.last)  # its counts stay in the sums
            if self.stopping:
                log.info("worker %d (pid %d) stopped (exit status %s)", slot, proc.pid, code)
                return
            if not member.greeted and not self.started:
                self._startup_failure = f"worker {slot} exited with status {code} before listening (see its log)"
                self._stop.set()
                return
            lived = time.monotonic() - member.started_at
            failures = 1 if lived > STABLE_AFTER else failures + 1
            delay = min(BACKOFF[1], BACKOFF[0] * 2 ** (failures - 1))
            log.error("worker %d (pid %d) exited with status %s; restarting in %.1fs", slot, proc.pid, code, delay)
            self.fleet_metrics.restarts += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _shutdown(self, keepers: list[asyncio.Task[Any]]) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        log.info("stopping %d workers (each drains, grace %.0fs)", len(self.members), self.settings.grace_period)
        for member in list(self.members.values()):
            with contextlib.suppress(ProcessLookupError):
                member.proc.send_signal(signal.SIGTERM)
        limit = self.settings.shutdown_delay + self.settings.grace_period + 30
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*keepers, return_exceptions=True)
        except TimeoutError:
            for member in list(self.members.values()):
                log.error(
                    "worker %d (pid %d) did not stop within %.0fs; killing it", member.slot, member.proc.pid, limit
                )
                with contextlib.suppress(ProcessLookupError):
                    member.proc.kill()
            await asyncio.gather(*keepers, return_exceptions=True)
        for sock in self._sockets.values():
            sock.close()
        log.info("stopped")

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- what workers ask ----------------------------------------------------------------------------------------
    async def _handle(self, member: Member, op: str, args: dict[str, Any]) -> Any:
        if op == "hello":  # before it listens: it takes connections only once it serves what the others serve
            self._send_regions(member)
            await self._join(member)
            return None
        if op == "listening":
            member.greeted = True
            if not self.started and sum(m.greeted for m in self.members.values()) == self.count:
                self._greeted.set()
            self.push_state()
            return None
        if op == "scrape":
            return await self._scrape(bool(args["om"]))
        if op == "statistics":
            return await self._statistics(args["keys"])
        if op == "shm_register":
            return await self._register_region(member, args["name"], args["region"])
        if op == "shm_unregister":
            return await self._unregister_region(member, args["name"])
        if op == "control":
            if args["verb"] == "load":
                await self.controller.load(args["name"], args.get("parameters"))
            else:
                await self.controller.unload(args["name"])
            self.push_state()
            return None
        raise ValueError(f"unknown operation {op!r}")

    async def _join(self, member: Member) -> None:
        """A worker catches up: it loads (and publishes at once) every version the others serve, then takes part
        in every change. Holding the controller's lock, nothing changes meanwhile."""
        async with self.controller.lock:
            if member.dead:
                return
            rows = [m for entry in list(self.host.models.values()) for m in entry.versions.values() if m.state == READY]
            calls = [
                member.link.call(
                    "load", name=m.name, version=m.version, fingerprint=m.fingerprint, config=m.config, gated=False
                )
                for m in rows
            ]
            try:
                results = await asyncio.gather(*calls)
                await member.link.call("routes", routes=self.host.routes)
            except LinkClosed:
                return
            problems = [
                f"{m.name} v{m.version}: {reason}" for m, (ok, reason) in zip(rows, results, strict=True) if not ok
            ]
            if problems:
                member.problem = f"worker {member.slot} could not load " + "; ".join(problems)
                log.error("%s", member.problem)
            member.joined = True
        log.info("worker %d (pid %d) serves %d version(s)", member.slot, member.proc.pid, len(rows))
        self.push_state()

    async def _scrape(self, om: bool) -> bytes:
        async with self._scrape_lock:  # one at a time: a late answer never replaces a newer snapshot
            live = await self._snapshots()
            return self.fleet_metrics.render(live, om)  # on this loop: no worker's counts move while it sums

    async def _statistics(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], ModelStats]:
        """The statistics extension's counts of these versions, summed over every worker (the dead ones' too)."""
        async with self._scrape_lock:
            total = self.fleet_metrics.total(await self._snapshots())
        found = {key: total.statistics(*key) for key in keys}
        return {key: stats for key, stats in found.items() if stats is not None}

    async def _refresh(self) -> None:
        """Keep every worker's last snapshot recent, so a worker that dies (SIGKILL, the OOM killer) between two
        scrapes takes at most SNAPSHOT_EVERY seconds of counts with it."""
        while True:
            await asyncio.sleep(SNAPSHOT_EVERY)
            async with self._scrape_lock:
                await self._snapshots()

    async def _snapshots(self) -> dict[int, Snapshot]:
        """Every live worker's counts now (one that does not answer in time: its previous ones)."""
        members = [m for m in self.members.values() if m.greeted]

        async def snapshot(member: Member) -> None:
            try:
                async with asyncio.timeout(SNAPSHOT_TIMEOUT):
                    member.last = await member.link.call("snapshot")
            except (LinkClosed, TimeoutError):
                pass

        await asyncio.gather(*(snapshot(m) for m in members))
        return {m.slot: m.last for m in members if not m.dead and m.last is not None}

    # -- client shared memory: every worker holds the regions a client registered through any of them ----------
    def _send_regions(self, member: Member) -> None:
        """A starting worker registers the fleet's regions before anything else it is told (messages arrive in
        order, and from now on every change goes to it too)."""
        member.link.tell("shm_sync", regions=dict(self.regions))
        member.has_regions = True

    async def _register_region(
        self, origin: Member, name: str, region: tuple[str, int, int]
    ) -> tuple[str, int, int] | None:
        """``origin`` registered ``name`` (it checked the key and size); every other live worker registers it.
        When another worker registered that name first, the fleet's region: ``origin`` holds it instead and
        answers its client that the name is taken."""
        fleets = self.regions.get(name)
        if fleets is not None:
            return fleets
        self.regions[name] = region
        await self._tell_regions(origin, "shm_register", name=name, region=region)
        return None

    async def _unregister_region(self, origin: Member, name: str) -> None:
        if name:
            self.regions.pop(name, None)
        else:
            self.regions.clear()
        await self._tell_regions(origin, "shm_unregister", name=name)

    async def _tell_regions(self, origin: Member, op: str, **args: Any) -> None:
        members = [m for m in self.members.values() if m.has_regions and not m.dead and m is not origin]

        async def tell(member: Member) -> None:
            async with asyncio.timeout(SNAPSHOT_TIMEOUT):  # a worker that lags applies it when it catches up
                await member.link.call(op, **args)

        results = await asyncio.gather(*(tell(m) for m in members), return_exceptions=True)
        for member, result in zip(members, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, LinkClosed):
                log.error("worker %d: %s %r failed: %s", member.slot, op, args.get("name"), result)

    # -- telling workers -------------------------------------------------------------------------------------------
    async def broadcast(self, op: str, only: set[int] | None = None, **args: Any) -> dict[int, Any]:
        """Asks every joined worker (or those in ``only``); their answers by slot (a worker that exits meanwhile
        is left out: when it restarts it joins again)."""
        members = [m for m in self.members.values() if m.joined and (only is None or m.slot in only)]
        results = await asyncio.gather(*(m.link.call(op, **args) for m in members), return_exceptions=True)
        out: dict[int, Any] = {}
        for member, result in zip(members, results, strict=True):
            if isinstance(result, LinkClosed):
                continue
            if isinstance(result, BaseException):
                log.error("worker %d: %s failed: %s", member.slot, op, result)
                continue
            out[member.slot] = result
        return out

    def tell_all(self, op: str, **args: Any) -> None:
        for member in self.members.values():
            if member.joined:
                member.link.tell(op, **args)

    def push_state(self) -> None:
        """Sends every joined worker the index and whether to count as ready (once per loop iteration)."""
        if self._state_pending:
            return
        self._state_pending = True
        asyncio.get_running_loop().call_soon(self._send_state)

    def _send_state(self) -> None:
        self._state_pending = False
        s = self.settings
        try:
            unready = self.controller.unready(s.model_control != "explicit") if s.strict_readiness else None
        except RuntimeError:  # pragma: no cover - a table changed while read: the next push corrects it
            unready = "changing"
        index = self.host.index()
        for member in self.members.values():
            if member.joined:
                member.link.tell(
                    "state", index=index, unready=member.problem or unready, synced=True, started=self.started
                )
