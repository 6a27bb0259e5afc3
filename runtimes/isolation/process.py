"""ProcessRuntime: a Runtime whose framework runs in a child process (``runtimes.isolation.child``), so a native
crash there (an abort, a segfault) ends only that process, and stopping it returns all of its memory.

Each concurrent call takes a slot: a socket to one of the child's threads and a shared-memory arena this side
writes the inputs to; the child answers with a header naming where in its own arena the outputs lie.
"""

from __future__ import annotations

import logging
import marshal
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.base import Runtime, RuntimeCrashed, RuntimeInputError, RuntimeLoadError, Signature
from runtimes.isolation import arena
from runtimes.isolation.waiter import Doorbells, Waiter
from runtimes.isolation.wire import Closed, buffer, receive, send

log = logging.getLogger("tensorgate.isolation")

#: called (from a watcher thread) when the child exits on its own: how it ended, e.g. "signal 6"
OnExit = Callable[[str], None]

#: the longest a call spins for its reply before blocking (``waiter.Waiter``; it spins only while replies come in
#: about that long, and only while the child spins), and the longest the child spins for a slot's next call after
#: answering one (long enough to cover a blocked server's wake-up, so that spinning can start on both ends)
SPIN_REPLY = 100e-6
SPIN_NEXT_CALL = 150e-6
#: ``0`` turns the spin off (both ends block at once): for machines where a spinning CPU costs more than a wake-up
SPIN_ENV = "TENSORGATE_ISOLATION_SPIN"


class _Slot:
    __slots__ = ("buffer", "inputs", "outputs", "sock", "waiter")

    def __init__(self, sock: socket.socket, waiter: Waiter) -> None:
        self.sock = sock
        self.buffer = buffer()
        self.inputs = arena.Arena()
        self.outputs = arena.Arena()
        self.waiter = waiter

    def close(self) -> None:
        self.sock.close()
        self.inputs.close()
        self.outputs.close()


def exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        try:
            return f"signal {-returncode}, {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class ProcessRuntime(Runtime):
    """The runtime for ``fmt`` run in a child process with ``slots`` concurrent calls. ``label`` names the model in
    errors (``m v1``). ``platform``/``artifact``/``device`` are the child runtime's, known once loaded. ``spin``
    False makes both sides block at once instead of spinning briefly for the other's next message (default: on
    unless ``TENSORGATE_ISOLATION_SPIN=0``)."""

    format = "isolated"
    platform = ""
    artifact = ""

    def __init__(self, fmt: str, label: str = "model", slots: int = 1, spin: bool | None = None) -> None:
        self.fmt = fmt
        self.label = label
        self.slots = max(1, slots)
        self.spin = os.environ.get(SPIN_ENV, "1") != "0" if spin is None else spin
        self.last_used = time.monotonic()  # the memory budget unloads the least recently used first
        self._path: Path | None = None
        self._options: dict[str, Any] = {}
        self._signatures: dict[str, Signature] = {}
        self._device = "cpu"
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._all: list[_Slot] = []
        self._bells: Doorbells | None = None
        self._lock = threading.Lock()  # start / stop
        self._calls = 0  # in flight or waiting for a slot
        self._calls_lock = threading.Lock()
        self._stopping = False
        self._closed = False  # unloaded for good: no restart
        self._exited = ""  # how the current child ended, once it has
        self._on_exit: OnExit | None = None

    # -- Runtime -------------------------------------------------------------------------------------------------
    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        self._path = Path(path)
        self._options = dict(options)
        self.start()

    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    @property
    def device(self) -> str:
        return self._device

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> dict[str, np.ndarray]:
        self.last_used = time.monotonic()
        if self._exited or self._process is None:
            raise RuntimeCrashed(self._crash_message())
        with self._calls_lock:
            self._calls += 1
        try:
            return self._call(inputs, outputs, signature)
        finally:
            with self._calls_lock:
                self._calls -= 1

    def _call(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None, signature: str | None
    ) -> dict[str, np.ndarray]:
        slot = self._free.get()
        try:
            parts, size = arena.layout(inputs)
            sent_fd = -1
            if size > slot.inputs.size:
                slot.inputs.close()
                slot.inputs = arena.Arena.create(size)
                sent_fd = slot.inputs.fd
            entries = arena.write(slot.inputs, inputs, parts)
            wanted = None if outputs is None else list(outputs)
            try:
                send(slot.sock, marshal.dumps((signature, wanted, entries)), sent_fd)
                slot.waiter.ring()
                # calls queued for a slot: the CPU a spin would take is theirs (and the server's) to use
                data, fd = slot.waiter.receive(slot.sock, slot.buffer, spin=self._calls <= self.slots)
            except (Closed, OSError):
                raise RuntimeCrashed(self._crash_message(wait=True)) from None
            if fd >= 0:
                slot.outputs.attach(fd)
            kind, payload = marshal.loads(data)
            if kind == "ok":
                return arena.read(slot.outputs, payload, copy=True)
            if kind == "input":
                raise RuntimeInputError(payload)
            raise RuntimeError(payload)
        finally:
            self._free.put(slot)

    def unload(self) -> None:
        """Stop the child (a stop message, then SIGKILL if it lingers) and wait for it: its memory is returned."""
        with self._lock:
            self._stopping = self._closed = True
            self._stop_child()

    # -- the child ---------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def rss(self) -> int:
        """The child's resident memory in bytes (0 when it is not running)."""
        pid = self.pid
        if pid is None:
            return 0
        return process_rss(pid)

    def watch(self, on_exit: OnExit | None) -> None:
        """Call ``on_exit`` when the child exits on its own (a crash), not when it is stopped."""
        self._on_exit = on_exit
        if on_exit is not None and self._exited and not self._stopping:
            on_exit(self._exited)

    def restart(self) -> None:
        """Start a new child and load the same artefact into it (after a crash)."""
        with self._lock:
            self._stop_child()
        self.start()

    def start(self) -> None:
        with self._lock:
            if self._path is None or self._closed:
                raise RuntimeLoadError(f"{self.label}: {'unloaded' if self._closed else 'nothing to load'}")
            self._stopping = False
            self._exited = ""
            self._spawn()

    def _spawn(self) -> None:
        control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(self.slots)]
        bells = Doorbells.create(self.slots)
        child_fds = [child_control.fileno(), bells.fd, *(b.fileno() for _a, b in pairs)]
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "runtimes.isolation.child", self.label, *map(str, child_fds)],
                pass_fds=child_fds,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            control.close()
            bells.close()
            for a, _b in pairs:
                a.close()
            raise RuntimeLoadError(f"{self.label}: could not start a runtime process: {exc}") from exc
        finally:
            child_control.close()
            for _a, b in pairs:
                b.close()
        self._process = process
        self._control = control
        try:
            spin_next = SPIN_NEXT_CALL if self.spin else 0.0
            send(control, pickle.dumps(("load", self.fmt, str(self._path), self._options, spin_next)))
            data, _fd = receive(control, buffer())
        except (Closed, OSError):
            code = _wait(process, 10.0)
            self._close_sockets(pairs)
            bells.close()
            self._process = None
            raise RuntimeLoadError(
                f"the runtime process for {self.label} exited while loading ({exit_description(code)})"
            ) from None
        reply = pickle.loads(data)
        if reply[0] != "ok":
            self._stop_process(process, control)
            self._close_sockets(pairs)
            bells.close()
            self._process = None
            _op, kind, message = reply
            raise RuntimeLoadError(message if kind == "RuntimeLoadError" else f"{kind}: {message}")
        _op, self._signatures, platform, artifact, self._device = reply
        self.platform = platform  # type: ignore[misc]  # per instance: the child runtime's
        self.artifact = artifact  # type: ignore[misc]
        self._free = queue.SimpleQueue()
        spin = SPIN_REPLY if self.spin else 0.0
        self._bells = bells
        self._all = [_Slot(a, bells.waiter(i, True, spin)) for i, (a, _b) in enumerate(pairs)]
        for slot in self._all:
            self._free.put(slot)
        threading.Thread(target=self._watch, args=(process, bells), name=f"tg-watch-{process.pid}", daemon=True).start()
        log.info("%s: runtime process %d started (%s)", self.label, process.pid, self.fmt)

    def _watch(self, process: subprocess.Popen[bytes], bells: Doorbells) -> None:
        code = process.wait()
        bells.shut()  # a call spinning for its reply goes to the receive that sees the end
        if process is not self._process or self._stopping:
            return
        self._exited = exit_description(code)
        log.error("the runtime process for %s exited (%s)", self.label, self._exited)
        for slot in self._all:  # wake calls waiting on it
            try:
                slot.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        on_exit = self._on_exit
        if on_exit is not None:
            on_exit(self._exited)

    def _crash_message(self, wait: bool = False) -> str:
        how = self._exited
        process = self._process
        if not how and wait and process is not None:
            how = exit_description(_wait(process, 5.0))
        return f"the runtime process for model {self.label} exited ({how or 'not running'})"

    def _stop_child(self) -> None:
        process, control = self._process, self._control
        self._process = self._control = None
        if process is not None and control is not None:
            self._stop_process(process, control)
        for slot in self._all:
            slot.close()
        self._all = []
        if self._bells is not None:
            self._bells.shut()
            self._bells.close()
            self._bells = None

    @staticmethod
    def _stop_process(process: subprocess.Popen[bytes], control: socket.socket) -> None:
        try:
            send(control, pickle.dumps(("stop",)))
        except OSError:
            pass
        control.close()
        if _wait(process, 10.0) is None:
            process.kill()
            _wait(process, 10.0)

    @staticmethod
    def _close_sockets(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
        for a, _b in pairs:
            a.close()


def _wait(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def process_rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
