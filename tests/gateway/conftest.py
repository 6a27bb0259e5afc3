"""Fixtures for the gateway unit tests: an empty store folder to fill with fake models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.testbed import StoreFolder


@pytest.fixture
def store(tmp_path: Path) -> StoreFolder:
    return StoreFolder(tmp_path / "store")
