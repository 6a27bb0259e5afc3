"""Log setup: readable text or one JSON object per line (structured logs for log shippers)."""

from __future__ import annotations

import logging
import sys
import time

import orjson


class JsonFormatter(logging.Formatter):
    process: str | None = None  # which worker process logs, when there are several

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.process is not None:
            doc["process"] = self.process
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def setup_logging(level: str = "info", fmt: str = "text", process: str | None = None) -> None:
    """Logs on stderr; ``process`` names the worker process on every line (``--workers``)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter = JsonFormatter()
        formatter.process = process
        handler.setFormatter(formatter)
    else:
        who = f"[{process}] " if process else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {who}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
