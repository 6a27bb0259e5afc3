"""Doorbells and waiters: how one end of a slot waits for the other's next message — a bounded spin on a counter in
shared memory while recent messages came quickly, then the blocking receive. A thread blocked in ``recvmsg`` takes
tens of µs to wake (its CPU idles, and runs cold once woken, on a VM); watching a shared byte costs no system call
and keeps the waiting CPU warm while calls come back to back.

The socket stays the channel: the sender rings (bumps its counter in the shared page) after each message, and the
receiver always takes the message with a blocking receive — at once when the bell rang, after the spin otherwise —
so a peer that died, or a socket shut down, ends a wait exactly as it did without spinning (at most ``cap`` later;
at once when the server's watcher marks the page shut, as it does when the runtime process exits).
"""

from __future__ import annotations

import mmap
import os
import socket
from time import perf_counter

from runtimes.isolation.wire import receive

#: waits observed before the spin budget is recomputed
WINDOW = 16
#: the least a spin lasts when one is worth doing (a median of a few µs would give too short a spin to catch jitter)
FLOOR = 10e-6
#: bytes per slot in a page of doorbells: one cache line per direction; the first slot's worth holds the shut flag
_SLOT = 128
_SHUT = 0


class Doorbells:
    """A shared page (an anonymous ``memfd``) holding a shut flag and one counter per direction per slot: created by
    the server (``create``), mapped by the runtime process from the descriptor it inherits (``Doorbells(fd)``)."""

    __slots__ = ("fd", "view")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.view = memoryview(mmap.mmap(fd, os.fstat(fd).st_size))

    @classmethod
    def create(cls, slots: int) -> Doorbells:
        fd = os.memfd_create("tensorgate-doorbells", os.MFD_CLOEXEC)
        os.ftruncate(fd, (max(1, slots) + 1) * _SLOT)
        return cls(fd)

    def waiter(self, slot: int, server: bool, cap: float) -> Waiter:
        """The waiter of slot ``slot`` on the server's side (rings calls, watches replies, spins only while the
        child does) or the child's."""
        calls = (slot + 1) * _SLOT
        replies = calls + _SLOT // 2
        return Waiter(self.view, calls if server else replies, replies if server else calls, cap, follow=server)

    def shut(self) -> None:
        """End every spin now and for good (the peer is gone): waits go straight to their blocking receive."""
        self.view[_SHUT] = 1

    def close(self) -> None:
        """Close the descriptor; the page is unmapped once no waiter holds it (a call may still be in one)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Waiter:
    """One end of a slot: ``ring`` after sending, ``receive`` to wait for the other end's message. ``budget``
    (seconds) is how long the next wait spins before blocking: after every ``WINDOW`` waits it becomes twice their
    median (at least ``FLOOR``, at most ``cap``), or 0 — block at once — when the median exceeds ``cap`` (the
    message would rarely come within the spin: the CPU is better left to others). The spin yields the CPU and the
    GIL (``sched_yield``) on every turn, so other threads of this process and other processes on this CPU still
    run.

    Each end also shows whether it is spinning (a byte next to its counter). A ``follow``ing waiter (the server's)
    spins only when the other end was spinning as its message went out: a peer blocked in ``recvmsg`` is woken by
    the send, likely onto this very CPU (the kernel expects the sender to sleep now), and a spin here would only
    keep it waiting. So requests far apart cost what blocking costs; calls back to back get both ends spinning."""

    __slots__ = ("_bells", "_mine", "_peer_spinning", "_rung", "_seen", "_theirs", "_waits", "budget", "cap", "follow")

    def __init__(self, bells: memoryview, mine: int, theirs: int, cap: float, follow: bool = False) -> None:
        self._bells = bells
        self._mine = mine
        self._theirs = theirs
        self.follow = follow
        self._peer_spinning = False
        self._rung = 0  # messages sent, mod 256
        self._seen = 0  # messages received, mod 256
        self.cap = cap
        self.budget = 0.0  # block until the first window shows how long waits take
        self._waits: list[float] = []

    @property
    def spinning(self) -> bool:
        """Whether this end is spinning for the other's message now."""
        return self._bells[self._mine + 1] == 1

    @property
    def peer_spinning(self) -> bool:
        """Whether the other end was spinning when this end's last message went out (known to a ``follow``ing one)."""
        return self._peer_spinning

    def ring(self) -> None:
        """Tell the other end a message was sent (call after the send returned)."""
        self._rung = (self._rung + 1) & 0xFF
        bells = self._bells
        bells[self._mine] = self._rung
        if self.follow:
            self._peer_spinning = bells[self._theirs + 1] == 1

    def receive(self, sock: socket.socket, into: bytearray, spin: bool = True) -> tuple[memoryview, int]:
        """``wire.receive``, after spinning for up to ``budget`` seconds for the other end's bell (unless ``spin`` is
        False)."""
        start = perf_counter()
        expected = (self._seen + 1) & 0xFF
        budget = self.budget
        if budget > 0.0 and spin and (self._peer_spinning or not self.follow):
            bells, theirs, spinning = self._bells, self._theirs, self._mine + 1
            bells[spinning] = 1
            deadline = start + budget
            while bells[theirs] != expected and not bells[_SHUT] and perf_counter() < deadline:
                os.sched_yield()
            bells[spinning] = 0
        got = receive(sock, into)
        self._seen = expected
        self.observe(perf_counter() - start)
        return got

    def observe(self, waited: float) -> None:
        waits = self._waits
        waits.append(waited)
        if len(waits) >= WINDOW:
            waits.sort()
            median = waits[len(waits) // 2]
            self.budget = 0.0 if median > self.cap else min(self.cap, max(FLOOR, 2.0 * median))
            waits.clear()
