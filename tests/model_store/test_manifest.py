"""MANIFEST.json digests checked before a version is loaded from a local folder: a tampered or planted file is
refused, an intact version fetches."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.base import StoreError
from model_store.local import LocalStore
from model_store.manifest import MANIFEST, build_manifest
from tests.onnx_models import dense_model


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    folder = tmp_path / "store" / "dense" / "1"
    dense_model(folder / "model.onnx")
    (folder / "signature.json").write_text("{}")
    (folder / MANIFEST).write_bytes(build_manifest(folder))
    return tmp_path / "store"


def test_an_intact_version_fetches(signed: Path) -> None:
    assert LocalStore(signed).fetch("dense", 1) == (signed / "dense" / "1").resolve()


def test_a_tampered_file_is_refused(signed: Path) -> None:
    model = signed / "dense" / "1" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    model.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"dense/1: model.onnx is corrupt: its sha256 differs from MANIFEST.json"):
        LocalStore(signed).fetch("dense", 1)


def test_a_planted_or_missing_file_is_refused(signed: Path) -> None:
    (signed / "dense" / "1" / "extra.so").write_bytes(b"\x7fELF")
    with pytest.raises(StoreError, match=r"extra.so is not listed in MANIFEST.json"):
        LocalStore(signed).fetch("dense", 1)
    (signed / "dense" / "1" / "extra.so").unlink()
    (signed / "dense" / "1" / "signature.json").unlink()
    with pytest.raises(StoreError, match=r"signature.json does not match MANIFEST.json"):
        LocalStore(signed).fetch("dense", 1)
