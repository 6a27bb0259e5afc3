"""Shared fixtures: the ONNX test store and a real server on it (session scope; the store holds a broken model on
purpose, so that server runs without strict readiness)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.onnx_models import build_store
from tests.serving import ServerProcess


@pytest.fixture(scope="session")
def onnx_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("onnx_store"))


@pytest.fixture(scope="session")
def server(onnx_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        onnx_store, tmp_path_factory.mktemp("server"), ["--poll-interval", "0", "--no-strict-readiness"]
    ).start()
    yield proc
    proc.stop()
