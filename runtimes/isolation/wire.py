"""The messages between the server and a runtime process: one ``SOCK_SEQPACKET`` socket per concurrent call
(a "slot") plus one for control, each message one packet, a shared-memory descriptor riding along (SCM_RIGHTS)
when a side's arena grew.

Calls carry ``marshal``-encoded headers (names, dtypes, shapes, offsets: never tensor data); control messages
(load, signatures, stop) are pickled — both ends are this package's own code.
"""

from __future__ import annotations

import array
import socket

MAX_MESSAGE = 1 << 20  # a header or a control message; tensors travel in the arenas
_FDS = socket.CMSG_SPACE(array.array("i", [0]).itemsize)


class Closed(EOFError):
    """The other side closed its socket (or died)."""


def send(sock: socket.socket, data: bytes, fd: int = -1) -> None:
    if fd >= 0:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    else:
        sock.send(data)


def buffer() -> bytearray:
    """A receiving buffer, allocated once per socket (a fresh MAX_MESSAGE allocation per message costs more than
    the whole hop)."""
    return bytearray(MAX_MESSAGE)


def receive(sock: socket.socket, into: bytearray) -> tuple[memoryview, int]:
    """One message (a view into ``into``, valid until the next receive) and the descriptor that came with it
    (-1: none); Closed once the other side is gone."""
    try:
        size, ancdata, _flags, _addr = sock.recvmsg_into([into], _FDS)
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise Closed(str(exc)) from None
    if not size and not ancdata:
        raise Closed("closed")
    data = memoryview(into)[:size]
    fd = -1
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            fd = fds[0]
    return data, fd
