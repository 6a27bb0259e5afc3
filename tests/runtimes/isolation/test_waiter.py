"""Doorbells and waiters: a waiter takes the other end's message whether it spun or blocked, spins only while
messages come quickly, and a spin ends like a blocking wait when the peer dies or the socket is shut down (so a
killed runtime process is a RuntimeCrashed, never a hang)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtimes import RuntimeCrashed
from runtimes.isolation import ProcessRuntime
from runtimes.isolation.waiter import WINDOW, Doorbells, Waiter
from runtimes.isolation.wire import Closed, buffer, send
from runtimes.onnx_runtime import OnnxRuntime
from tests.onnx_models import spin_model
from tests.serving import wait_until

LONG = 3600.0  # a spin that never ends on its own within a test


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, Waiter, Waiter]]:
    """Two ends of a slot: (server socket, child socket, server waiter, child waiter)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bells = Doorbells.create(2)
    yield a, b, bells.waiter(1, True, LONG), bells.waiter(1, False, LONG)
    a.close()
    b.close()
    bells.close()


def test_messages_pass_both_ways_spinning_or_not(pair: tuple[socket.socket, socket.socket, Waiter, Waiter]) -> None:
    a, b, server, child = pair
    into = buffer()
    for i in range(600):  # past the 8-bit counters' wrap
        server.budget = child.budget = (0.0, 0.01)[i % 2]
        send(a, b"call %d" % i)
        server.ring()
        assert bytes(child.receive(b, into)[0]) == b"call %d" % i
        send(b, b"reply %d" % i)
        child.ring()
        assert bytes(server.receive(a, into)[0]) == b"reply %d" % i


def test_a_spin_waits_for_a_late_message(pair: tuple[socket.socket, socket.socket, Waiter, Waiter]) -> None:
    a, b, server, child = pair
    server.follow = False  # spin whatever the other end does
    server.budget = LONG
    ready = threading.Event()

    def answer() -> None:
        ready.wait()
        send(b, b"late")
        child.ring()

    thread = threading.Thread(target=answer)
    thread.start()
    ready.set()
    assert bytes(server.receive(a, buffer())[0]) == b"late"
    thread.join()


def test_the_server_spins_only_while_the_child_does(
    pair: tuple[socket.socket, socket.socket, Waiter, Waiter],
) -> None:
    """A call sent while the child spins gets a spinning server; one sent to a child blocked in recvmsg (woken by
    the send, likely onto the server's CPU) gets a server that blocks at once."""
    a, b, server, child = pair
    server.budget = child.budget = LONG
    into = buffer()
    # the child blocks in recvmsg: the server, though its budget is an hour, blocks too
    child.budget = 0.0

    def answer(reply: bytes) -> None:
        child.receive(b, buffer())
        send(b, reply)
        child.ring()

    replier = threading.Thread(target=answer, args=(b"after blocking",))
    replier.start()
    send(a, b"call")
    server.ring()
    assert not server.peer_spinning
    assert bytes(server.receive(a, into)[0]) == b"after blocking"
    replier.join()
    # the child spins (its flag is up before the call goes): so does the server
    child.budget = LONG
    replier = threading.Thread(target=answer, args=(b"after spinning",))
    replier.start()
    wait_until(lambda: child.spinning, "the child spinning for the call")
    send(a, b"call")
    server.ring()
    assert server.peer_spinning
    assert bytes(server.receive(a, into)[0]) == b"after spinning"
    replier.join()


def test_a_wait_told_not_to_spin_blocks_at_once(pair: tuple[socket.socket, socket.socket, Waiter, Waiter]) -> None:
    a, b, server, _child = pair
    server.budget = LONG  # spinning would outlast the test: the message comes without its bell
    threading.Timer(0.05, send, args=(b, b"unrung")).start()
    assert bytes(server.receive(a, buffer(), spin=False)[0]) == b"unrung"


def test_the_budget_follows_recent_waits() -> None:
    waiter = Doorbells.create(1).waiter(0, True, 100e-6)
    for _ in range(WINDOW):
        waiter.observe(30e-6)
    assert waiter.budget == pytest.approx(60e-6)  # twice the median
    for _ in range(WINDOW):
        waiter.observe(80e-6)
    assert waiter.budget == pytest.approx(100e-6)  # at most the cap
    for _ in range(WINDOW):
        waiter.observe(1e-3)
    assert waiter.budget == 0.0  # replies slower than the cap: block at once
    for _ in range(WINDOW):
        waiter.observe(1e-6)
    assert waiter.budget > 0.0  # back to back again: spin
    assert Doorbells.create(1).waiter(0, True, 0.0).budget == 0.0


def test_a_spinning_wait_ends_when_the_peer_is_killed() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bells = Doorbells.create(1)
    peer = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], pass_fds=[b.fileno()], stdin=subprocess.DEVNULL
    )
    b.close()
    try:
        waiter = bells.waiter(0, True, 0.5)
        waiter.budget = 0.5  # the peer dies during the spin; the receive after it sees the end
        threading.Timer(0.05, peer.kill).start()
        with pytest.raises(Closed):
            waiter.receive(a, buffer())
    finally:
        peer.kill()
        peer.wait()
        a.close()
        bells.close()


def test_shutting_the_page_ends_a_spin_at_once() -> None:
    """What the server's watcher does when the runtime process exits: mark the page shut (or the spin would last its
    whole budget: here an hour) and shut the slot's socket down, which the receive after the spin sees."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    bells = Doorbells.create(1)
    try:
        server = bells.waiter(0, True, LONG)
        server.follow = False  # spin whatever the other end does
        server.budget = LONG

        def watcher() -> None:
            bells.shut()
            a.shutdown(socket.SHUT_RDWR)

        threading.Timer(0.05, watcher).start()
        with pytest.raises(Closed):
            server.receive(a, buffer())
    finally:
        a.close()
        b.close()
        bells.close()


def test_a_child_killed_while_the_server_spins_for_the_reply_is_a_crash(tmp_path: Path) -> None:
    spin_model(tmp_path / "spin" / "model.onnx")
    runtime = ProcessRuntime("onnx", "spin v1")
    runtime.load(tmp_path / "spin", {})
    try:
        waiter = runtime._all[0].waiter  # spin for the reply for an hour: only the child's exit can end the wait
        waiter.cap = waiter.budget = LONG
        waiter.follow = False
        pid = runtime.pid
        assert pid is not None
        x = np.ones((1, 16), np.float32)
        threading.Timer(0.2, os.kill, args=(pid, signal.SIGKILL)).start()
        with pytest.raises(RuntimeCrashed, match=r"exited \(signal 9"):
            runtime.infer({"x": x, "spins": np.full((1, 1), 10**7, np.int64)})  # minutes of work
    finally:
        runtime.unload()


def test_a_child_killed_between_back_to_back_calls_is_a_crash(onnx_models: Path) -> None:
    """Calls back to back (both ends spinning for the other's next message) and the child SIGKILLed: the call in
    flight or the next one fails with RuntimeCrashed, and after a restart the answers are right again."""
    runtime = ProcessRuntime("onnx", "dense v1")
    runtime.load(onnx_models / "dense", {})
    reference = OnnxRuntime()
    reference.load(onnx_models / "dense", {})
    try:
        x = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
        for _ in range(4 * WINDOW):
            runtime.infer({"x": x})
        pid = runtime.pid
        assert pid is not None
        threading.Timer(0.05, os.kill, args=(pid, signal.SIGKILL)).start()
        with pytest.raises(RuntimeCrashed, match=r"exited \(signal 9"):
            while True:
                np.testing.assert_array_equal(runtime.infer({"x": x})["y"], reference.infer({"x": x})["y"])
        runtime.restart()
        for _ in range(2 * WINDOW):
            np.testing.assert_array_equal(runtime.infer({"x": x})["y"], reference.infer({"x": x})["y"])
    finally:
        runtime.unload()


def test_the_spin_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ProcessRuntime("onnx").spin
    assert not ProcessRuntime("onnx", spin=False).spin
    monkeypatch.setenv("TENSORGATE_ISOLATION_SPIN", "0")
    assert not ProcessRuntime("onnx").spin
    assert ProcessRuntime("onnx", spin=True).spin
