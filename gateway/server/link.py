"""Link: the supervisor's channel to one worker process (and the worker's to it): small pickled messages, each
framed by its length, over a socket pair the supervisor created. Either side ``call``s the other (a request
answered by the peer's handler, its GatewayError re-raised on the caller's side) or ``tell``s it (no answer).

Both ends are the same program started by the same user: the pickles never come from a client or a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.core import errors

log = logging.getLogger("tensorgate.link")

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]
_HEAD = struct.Struct("!I")


class LinkClosed(ConnectionError):
    """The peer went away (its process exited) before answering."""


class RemoteError(RuntimeError):
    """The peer's handler failed with an error that is not a GatewayError."""


class Link:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler | None = None
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.handler = handler  # answers the peer's requests (set before ``serve``)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    async def call(self, op: str, **args: Any) -> Any:
        """Asks the peer and returns its answer; LinkClosed when it goes away first."""
        if self.closed:
            raise LinkClosed(f"link closed before {op}")
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self._send((ident, op, args))
            return await future
        finally:
            self._pending.pop(ident, None)

    def tell(self, op: str, **args: Any) -> None:
        """Sends without waiting for an answer (dropped if the peer is gone)."""
        if not self.closed:
            self._send((0, op, args))

    def _send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._writer.write(_HEAD.pack(len(data)) + data)

    async def serve(self) -> None:
        """Reads until the peer closes; requests run as tasks of their own (a slow one never blocks the rest)."""
        try:
            while True:
                head = await self._reader.readexactly(_HEAD.size)
                ident, op, body = pickle.loads(await self._reader.readexactly(_HEAD.unpack(head)[0]))
                if op == "":  # an answer: body is (ok, value)
                    future = self._pending.get(ident)
                    if future is not None and not future.done():
                        ok, value = body
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(_error(*value))
                    continue
                task = asyncio.create_task(self._answer(ident, op, body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.close()

    async def _answer(self, ident: int, op: str, args: dict[str, Any]) -> None:
        try:
            if self.handler is None:
                raise RuntimeError("this end answers no requests")
            value = await self.handler(op, args)
            answer: tuple[bool, Any] = (True, value)
        except Exception as exc:
            if not isinstance(exc, errors.GatewayError | LinkClosed):
                log.exception("%s failed", op)
            answer = (False, (type(exc).__name__, str(exc)))
        if ident and not self.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._send((ident, "", answer))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkClosed("the peer went away"))
        with contextlib.suppress(Exception):
            self._writer.close()


def _error(name: str, message: str) -> Exception:
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, errors.GatewayError):
        return cls(message)
    if name == "LinkClosed":
        return LinkClosed(message)
    return RemoteError(f"{name}: {message}")
