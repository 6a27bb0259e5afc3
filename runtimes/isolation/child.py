"""The runtime process: ``python -m runtimes.isolation.child LABEL CONTROL_FD BELLS_FD SLOT_FD...`` loads one model
with its runtime and serves calls, one thread per slot socket, tensors in shared memory (``runtimes.isolation.arena``),
doorbells in a shared page (``runtimes.isolation.waiter``).

It exits when the server closes the control socket (or dies); a native abort here ends only this process.
"""

from __future__ import annotations

import marshal
import os
import pickle
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from runtimes import Runtime, RuntimeInputError, runtime_class
from runtimes.isolation import arena
from runtimes.isolation.waiter import Doorbells, Waiter
from runtimes.isolation.wire import Closed, buffer, receive, send

_MAX_ERROR = 8192


def serve_slot(runtime: Runtime, sock: socket.socket, waiter: Waiter) -> None:
    """Answer calls on one slot until the server closes it: inputs are views into the server's arena, outputs are
    written to this slot's own arena (grown, and its descriptor sent, when they do not fit). Waiting for the next
    call spins (up to the waiter's cap) while calls come back to back."""
    inputs_arena = arena.Arena()
    outputs_arena = arena.Arena()
    into = buffer()
    while True:
        try:
            data, fd = waiter.receive(sock, into)
        except Closed:
            return
        if fd >= 0:
            inputs_arena.attach(fd)
        signature, wanted, entries = marshal.loads(data)
        sent_fd = -1
        reply: tuple[str, Any]
        try:
            inputs = arena.read(inputs_arena, entries, copy=False)
            result = runtime.infer(inputs, wanted, signature)
            del inputs
            parts, size = arena.layout(result)
            if size > outputs_arena.size:
                outputs_arena.close()
                outputs_arena = arena.Arena.create(size)
                sent_fd = outputs_arena.fd
            reply = ("ok", arena.write(outputs_arena, result, parts))
        except RuntimeInputError as exc:
            reply = ("input", str(exc)[:_MAX_ERROR])
        except Exception as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}"[:_MAX_ERROR])
        send(sock, marshal.dumps(reply), sent_fd)
        waiter.ring()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when this process ends (Ctrl-C drains it)
    # argv[0] names the model (``m v1``): only for whoever lists processes
    control = socket.socket(fileno=int(argv[1]))
    bells = Doorbells(int(argv[2]))
    slots = [socket.socket(fileno=int(fd)) for fd in argv[3:]]
    runtime: Runtime | None = None
    into = buffer()
    while True:
        try:
            data, _fd = receive(control, into)
        except Closed:
            break
        message: tuple[Any, ...] = pickle.loads(data)
        if message[0] == "load":
            _op, fmt, path, options, spin = message
            try:
                cls = runtime_class(fmt)
                runtime = cls()
                runtime.load(Path(path), options)
                signatures = dict(runtime.signatures())
                reply: tuple[Any, ...] = ("ok", signatures, cls.platform, cls.artifact, runtime.device)
            except Exception as exc:
                reply = ("error", type(exc).__name__, str(exc)[:_MAX_ERROR])
            send(control, pickle.dumps(reply))
            if runtime is not None and reply[0] == "ok":
                for i, sock in enumerate(slots):
                    waiter = bells.waiter(i, False, spin)
                    threading.Thread(target=serve_slot, args=(runtime, sock, waiter), daemon=True).start()
        elif message[0] == "stop":
            break
    if runtime is not None:
        try:
            runtime.unload()
        except Exception:  # exiting anyway
            pass
    sys.stdout.flush()
    os._exit(0)  # slot threads may be inside the framework: do not wait for them


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
