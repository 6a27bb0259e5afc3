"""Executor: the one interface that runs a loaded version's calls, and what its implementations share — the
runtime call with its error mapping, the expiry check before a call starts, and the wait bounded by a deadline.

Implementations: ``ThreadPool`` (gateway.execution.pool) and ``Batcher`` (gateway.execution.batcher).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gateway.core.errors import DeadlineExceeded, GatewayError, InferenceFailed, InvalidInput, ModelNotReady
from runtimes import Runtime, RuntimeCrashed, RuntimeInputError

log = logging.getLogger("tensorgate.execution")

#: (outputs, queue seconds, compute seconds) of one request
Result = tuple[dict[str, np.ndarray], float, float]
#: called on the event loop after each runtime call: (requests, rows, seconds)
OnExecution = Callable[[int, int, float], None]


@dataclass(slots=True)
class Call:
    """One request's work: validated inputs, the outputs to return, the signature (None: the default) and the
    deadline (a time.monotonic() instant, or None); ``trace`` is the request's RequestTrace while tracing is on
    (a Batcher records its batch's compute span on it)."""

    inputs: dict[str, np.ndarray]
    outputs: list[str]
    signature: str | None
    deadline: float | None
    rows: int = 1
    trace: Any = None


class Executor(Protocol):
    """Runs calls on a runtime with bounded parallelism; ``close`` runs what is queued, then stops."""

    async def run(self, call: Call) -> Result: ...

    def close(self) -> None: ...


def infer(
    runtime: Runtime, inputs: dict[str, np.ndarray], outputs: list[str], signature: str | None = None
) -> dict[str, np.ndarray]:
    """The runtime call: a client's mistake the runtime detects is InvalidInput, an isolated runtime's process that
    exited ModelNotReady (UNAVAILABLE: a route's fallback retries elsewhere), any other failure InferenceFailed."""
    try:
        return runtime.infer(inputs, outputs, signature)
    except RuntimeInputError as exc:
        raise InvalidInput(str(exc)) from exc
    except RuntimeCrashed as exc:
        raise ModelNotReady(f"{exc}; restarting") from exc
    except GatewayError:
        raise
    except Exception as exc:
        log.exception("runtime call failed")
        raise InferenceFailed(f"runtime failed: {type(exc).__name__}: {exc}") from exc


def expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


async def within_deadline(future: asyncio.Future[Result], deadline: float | None, what: str) -> Result:
    """Await ``future`` until ``deadline``; past it the work is cancelled (skipped if not started, its late result
    dropped otherwise) and DeadlineExceeded raised."""
    if deadline is None:
        return await future
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline - time.monotonic(), 0.0))
    except TimeoutError:
        future.cancel()
        raise DeadlineExceeded(f"deadline exceeded {what}") from None
