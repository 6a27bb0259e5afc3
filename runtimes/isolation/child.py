"""The runtime process: ``python -m runtimes.isolation.child LABEL CONTROL_FD SLOT_FD...`` loads one model with its
runtime and serves calls, one thread per slot socket, tensors in shared memory (``runtimes.isolation.arena``).

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
from runtimes.isolation.wire import Closed, buffer, receive, send

_MAX_ERROR = 8192


def serve_slot(runtime: Runtime, sock: socket.socket) -> None:
    """Answer calls on one slot until the server closes it: inputs are views into the server's arena, outputs are
    written to this slot's own arena (grown, and its descriptor sent, when they do not fit)."""
    inputs_arena = arena.Arena()
    outputs_arena = arena.Arena()
    into = buffer()
    while True:
        try:
            data, fd = receive(sock, into)
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


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when this process ends (Ctrl-C drains it)
    # argv[0] names the model (``m v1``): only for whoever lists processes
    control = socket.socket(fileno=int(argv[1]))
    slots = [socket.socket(fileno=int(fd)) for fd in argv[2:]]
    runtime: Runtime | None = None
    into = buffer()
    while True:
        try:
            data, _fd = receive(control, into)
        except Closed:
            break
        message: tuple[Any, ...] = pickle.loads(data)
        if message[0] == "load":
            _op, fmt, path, options = message
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
                for sock in slots:
                    threading.Thread(target=serve_slot, args=(runtime, sock), daemon=True).start()
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
