"""LocalStore: versions, ignored folders, paths that escape the root, config and file reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from model_store import ModelConfig, ModelStore, StoreError, StoreUnavailable, open_store
from model_store.local import LocalStore


def add_version(root: Path, model: str, version: str, artefact: str = "model.onnx") -> Path:
    folder = root / model / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artefact).write_bytes(b"weights-" + version.encode())
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    for version in ("1", "2", "0010"):
        add_version(store, "affine", version)
    add_version(store, "tf", "3", artefact="saved_model.pb")
    (store / "affine" / "config.yaml").write_text("version_policy: {all: true}\n")
    return store


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    add_version(folder, "secret", "1")
    (folder / "secret.txt").write_text("not for the gateway")
    return folder


def test_open_store_gives_a_local_store(root: Path) -> None:
    store = open_store(root)
    assert isinstance(store, LocalStore)
    assert isinstance(store, ModelStore)
    assert store.uri == str(root.resolve())


def test_lists_models_and_integer_versions(root: Path) -> None:
    store = LocalStore(root)
    assert store.list_models() == ["affine", "tf"]
    assert store.list_versions("affine") == [1, 2, 10]
    assert store.list_versions("tf") == [3]


def test_non_integer_and_empty_version_folders_are_ignored(root: Path) -> None:
    for name in ("golden", "latest", "1.5", "-3", "v4"):
        add_version(root, "affine", name)
    (root / "affine" / "7").mkdir()  # empty: an upload not started yet
    (root / "affine" / "8").write_text("a file, not a folder")
    (root / ".cache").mkdir()
    (root / "notes.txt").write_text("not a model")
    store = LocalStore(root)
    assert store.list_models() == ["affine", "tf"]
    assert store.list_versions("affine") == [1, 2, 10]
    with pytest.raises(StoreError, match="no version 7"):
        store.fetch("affine", 7)


def test_fetch_and_fingerprint(root: Path) -> None:
    store = LocalStore(root)
    folder = store.fetch("affine", 10)
    assert folder == (root / "affine" / "0010").resolve()
    assert (folder / "model.onnx").read_bytes() == b"weights-0010"
    before = store.fingerprint("affine", 10)
    assert store.fingerprint("affine", 10) == before
    (folder / "model.onnx").write_bytes(b"new weights, other size")
    assert store.fingerprint("affine", 10) != before


def test_missing_model_version_and_root(root: Path, tmp_path: Path) -> None:
    store = LocalStore(root)
    with pytest.raises(StoreError, match="not in the store"):
        store.list_versions("nope")
    with pytest.raises(StoreError, match="no version 4"):
        store.fetch("affine", 4)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        LocalStore(tmp_path / "missing").list_models()


def test_dotdot_and_bad_model_names_are_refused(root: Path) -> None:
    store = LocalStore(root)
    for name in ("..", "../outside", "a/b", ".hidden", "x..y", ""):
        with pytest.raises(StoreError, match="invalid model name"):
            store.list_versions(name)
    for relpath in ("../tf/3/saved_model.pb", "../../outside/secret.txt", "/etc/hostname"):
        with pytest.raises(StoreError, match="outside"):
            store.read_file("affine", relpath)


def test_symlinks_out_of_the_root_are_refused(root: Path, outside: Path) -> None:
    os.symlink(outside / "secret", root / "linked")  # a whole model
    os.symlink(outside / "secret" / "1", root / "affine" / "20")  # a version
    add_version(root, "affine", "21")
    os.symlink(outside / "secret.txt", root / "affine" / "21" / "extra.bin")  # a file in a version
    add_version(root, "affine", "22")
    os.symlink(outside / "secret", root / "affine" / "22" / "variables")  # a folder in a version
    os.symlink(outside / "secret.txt", root / "tf" / "config.yaml")
    store = LocalStore(root)

    assert store.list_models() == ["affine", "tf"]
    with pytest.raises(StoreError, match="outside the store root"):
        store.list_versions("linked")
    assert 20 not in store.list_versions("affine")
    for version in (20, 21, 22):
        with pytest.raises(StoreError):
            store.fetch("affine", version)
    with pytest.raises(StoreError, match="outside the store root"):
        store.read_config("tf")


def test_symlinks_inside_the_root_are_followed(root: Path) -> None:
    os.symlink(root / "affine" / "2", root / "affine" / "30")
    store = LocalStore(root)
    assert store.list_versions("affine") == [1, 2, 10, 30]
    assert (store.fetch("affine", 30) / "model.onnx").read_bytes() == b"weights-2"


def test_config_and_file_reads(root: Path) -> None:
    store = LocalStore(root)
    config = ModelConfig.from_file(store.read_config("affine"), "affine")
    assert config.version_policy.all
    assert store.read_config("tf") is None
    # Triton's config.pbtxt is read where there is no config.yaml; config.yaml wins where both exist
    (root / "affine" / "config.pbtxt").write_text("max_batch_size: 4\n")
    found = store.read_config("affine")
    assert found is not None and found.name == "config.yaml"
    (root / "triton" / "1").mkdir(parents=True)
    (root / "triton" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nversion_policy: { all {} }\n')
    found = store.read_config("triton")
    assert found is not None and found.name == "config.pbtxt"
    config = ModelConfig.from_file(found, "triton")
    assert config.runtime == "onnx" and config.version_policy.all
    (root / "affine" / "golden").mkdir()
    (root / "affine" / "golden" / "0.npz").write_bytes(b"sample")
    assert store.read_file("affine", "golden/0.npz") == b"sample"
    assert store.read_file("affine", "golden/1.npz") is None


def test_only_ascii_digits_name_a_version() -> None:
    from model_store.base import parse_version

    assert parse_version("0012") == 12
    assert parse_version("\u00b3") is None and parse_version("\u0663") is None  # digits to str.isdigit(), not int()
