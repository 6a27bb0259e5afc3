"""Isolated runtimes: a model's framework in a child process, tensors crossing in shared memory."""

from __future__ import annotations

from runtimes.isolation.process import ProcessRuntime, process_rss

__all__ = ["ProcessRuntime", "process_rss"]
