"""S3Store against a real S3-compatible server (moto in a subprocess) and a real ONNX model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from model_store import ModelConfig, ModelStore, StoreError, StoreUnavailable, open_store
from model_store.s3 import MANIFEST, S3Store, build_manifest
from tests.model_store.conftest import OnnxModel, point_env_at
from tests.model_store.s3server import S3Server

MakeStore = Callable[..., S3Store]


def run_onnx(folder: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(["y"], {"x": x})[0]
    return result


def cache_entries(store: S3Store, model: str) -> list[str]:
    folder = store.cache_dir / model
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def test_lists_models_versions_config_and_files(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    for version in (1, 2, 10):
        s3_env.upload_version(onnx_model.folder, "affine", version, prefix=s3_prefix, marker="_COMPLETE")
    s3_env.upload_version(onnx_model.folder, "other", 3, prefix=s3_prefix, marker=".complete")
    s3_env.put(f"{s3_prefix}/affine/config.yaml", b"version_policy: {latest: 2}\nlabels: {team: vision}\n")
    s3_env.put(f"{s3_prefix}/affine/golden/0.npz", b"npz-bytes")
    s3_env.put(f"{s3_prefix}/affine/notaversion/model.onnx", b"x")
    s3_env.put(f"{s3_prefix}/bad..name/1/model.onnx", b"x")
    store = make_store()

    assert isinstance(store, ModelStore)
    assert store.list_models() == ["affine", "other"]
    assert store.list_versions("affine") == [1, 2, 10]
    assert store.list_versions("other") == [3]
    config = ModelConfig.from_file(store.read_config("affine"), "affine")
    assert config.version_policy.select(store.list_versions("affine")) == [2, 10]
    assert config.labels == {"team": "vision"}
    assert store.read_config("other") is None
    # Triton's config.pbtxt is found where there is no config.yaml
    s3_env.put(
        f"{s3_prefix}/other/config.pbtxt", b'backend: "onnxruntime"\nversion_policy: { specific { versions: [3] } }\n'
    )
    found = store.read_config("other")
    assert found is not None and found.name == "config.pbtxt"
    config = ModelConfig.from_file(found, "other")
    assert config.runtime == "onnx" and config.version_policy.select(store.list_versions("other")) == [3]
    assert store.read_file("affine", "golden/0.npz") == b"npz-bytes"
    assert store.read_file("affine", "golden/1.npz") is None


def test_open_store_uses_aws_endpoint_url_from_the_environment(
    s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel, tmp_path: Path
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = open_store(s3_env.uri(s3_prefix), cache_dir=tmp_path)
    assert isinstance(store, S3Store)
    assert store.endpoint_url == s3_env.endpoint_url
    assert store.uri == f"s3://{s3_env.bucket}/{s3_prefix}"
    assert store.list_versions("affine") == [1]


def test_cache_dir_defaults_to_tensorgate_cache_dir(
    s3_env: S3Server, s3_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENSORGATE_CACHE_DIR", str(tmp_path / "env-cache"))
    store = S3Store(s3_env.uri(s3_prefix))
    assert store.cache_dir == (tmp_path / "env-cache" / s3_env.bucket / s3_prefix).resolve()


def test_listing_paginates(make_store: MakeStore, s3_env: S3Server, s3_prefix: str) -> None:
    # the session server answers at most 3 keys per page
    for index in range(7):
        s3_env.put(f"{s3_prefix}/m{index}/1/model.onnx", b"x")
        s3_env.put(f"{s3_prefix}/m{index}/1/_COMPLETE", b"")
    for version in range(1, 8):
        s3_env.put(f"{s3_prefix}/m0/{version}/model.onnx", b"x")
        s3_env.put(f"{s3_prefix}/m0/{version}/_COMPLETE", b"")
    page = s3_env.client.list_objects_v2(Bucket=s3_env.bucket, Prefix=f"{s3_prefix}/", Delimiter="/")
    assert page["IsTruncated"]
    store = make_store()
    assert store.list_models() == [f"m{i}" for i in range(7)]
    assert store.list_versions("m0") == list(range(1, 8))


def test_fetch_downloads_a_version_that_runs(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    folder = store.fetch("affine", 1)

    assert folder.parent == store.cache_dir / "affine"
    assert folder.name == f"1-{store.fingerprint('affine', 1)[:16]}"
    assert (folder / "model.onnx").read_bytes() == (onnx_model.folder / "model.onnx").read_bytes()
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(run_onnx(folder, x), onnx_model.expected(x), rtol=1e-6)
    assert cache_entries(store, "affine") == [folder.name]  # no partial folder left behind


def test_fetch_is_cached_until_the_version_changes(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel, onnx_model_b: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    first = store.fetch("affine", 1)
    inode = (first / "model.onnx").stat().st_ino
    fingerprint = store.fingerprint("affine", 1)

    again = make_store().fetch("affine", 1)  # a new store (a restarted gateway) reuses the cache
    assert again == first
    assert (again / "model.onnx").stat().st_ino == inode

    s3_env.upload_version(onnx_model_b.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    assert store.fingerprint("affine", 1) != fingerprint
    changed = store.fetch("affine", 1)
    assert changed != first
    x = np.ones((1, 4), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(changed, x), onnx_model_b.expected(x), rtol=1e-6)
    np.testing.assert_allclose(run_onnx(first, x), onnx_model.expected(x), rtol=1e-6)  # still servable


def test_concurrent_fetches_download_once(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: store.fetch("affine", 1), range(4)))
    assert len(set(folders)) == 1
    assert cache_entries(store, "affine") == [folders[0].name]


def test_processes_sharing_a_cache_fetch_atomically(
    s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel, tmp_path: Path
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    script = (
        "import sys; from model_store.s3 import S3Store; "
        "print(S3Store(sys.argv[1], cache_dir=sys.argv[2]).fetch('affine', 1))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, s3_env.uri(s3_prefix), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=s3_env.environ(),
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    folders = {Path(out.strip()) for out, _err in outputs}
    assert len(folders) == 1
    folder = folders.pop()
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.startswith(".")) == [folder.name]
    assert (folder / "model.onnx").read_bytes() == (onnx_model.folder / "model.onnx").read_bytes()


def test_fetch_replaces_a_damaged_cache_entry(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    folder = store.fetch("affine", 1)
    (folder / "model.onnx").write_bytes(b"truncated")
    assert store.fetch("affine", 1) == folder
    assert (folder / "model.onnx").read_bytes() == (onnx_model.folder / "model.onnx").read_bytes()


def test_fetch_removes_stale_partial_downloads(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(gone.stdout)
    stale = store.cache_dir / "affine" / f"1-{store.fingerprint('affine', 1)[:16]}.partial.{dead_pid}"
    stale.mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"half")
    other_version = store.cache_dir / "affine" / f"2-0123456789abcdef.partial.{dead_pid}"
    other_version.mkdir()

    folder = store.fetch("affine", 1)
    assert not stale.exists()
    assert cache_entries(store, "affine") == sorted([folder.name, other_version.name])


def test_partial_uploads_are_not_listed_or_fetched(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    # version 2: the manifest and half of the artefact; version 3: everything but the artefact
    s3_env.upload_partial_version(onnx_model.folder, "affine", 2, prefix=s3_prefix, manifest=True)
    s3_env.upload_partial_version(onnx_model.folder, "affine", 3, prefix=s3_prefix)
    s3_env.put(f"{s3_prefix}/affine/3/variables/variables.index", b"x")
    s3_env.put(f"{s3_prefix}/affine/3/_COMPLETE", b"")  # a marker does not make up for a missing artefact
    store = make_store(settle_seconds=0)

    assert store.list_versions("affine") == [1]
    with pytest.raises(StoreError, match=r"MANIFEST\.json says"):
        store.fetch("affine", 2)
    with pytest.raises(StoreError, match="no model artefact"):
        store.fetch("affine", 3)
    assert cache_entries(store, "affine") == []

    # the upload finishes: the version appears at the next listing
    s3_env.upload_version(onnx_model.folder, "affine", 2, prefix=s3_prefix, manifest=True)
    assert store.list_versions("affine") == [1, 2]
    assert (store.fetch("affine", 2) / "model.onnx").is_file()


def test_unmarked_version_is_listed_once_its_listing_is_stable(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix)
    store = make_store(settle_seconds=3600)
    assert store.list_versions("affine") == []  # just uploaded, seen once
    with pytest.raises(StoreError, match="not yet seen unchanged"):
        store.fetch("affine", 1)
    assert store.list_versions("affine") == [1]  # unchanged since the previous poll
    assert (store.fetch("affine", 1) / "model.onnx").is_file()

    s3_env.put(f"{s3_prefix}/affine/1/extra.txt", b"still uploading")
    assert store.list_versions("affine") == []
    assert store.list_versions("affine") == [1]


def test_unmarked_version_older_than_settle_time_is_listed_at_once(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix)
    time.sleep(1.1)  # LastModified has one-second resolution
    assert make_store(settle_seconds=1).list_versions("affine") == [1]


def test_corrupt_artefact_is_detected_by_the_manifest(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_corrupt_version(onnx_model.folder, "affine", 1, prefix=s3_prefix)
    store = make_store()
    assert store.list_versions("affine") == [1]  # sizes match: only the content tells
    with pytest.raises(StoreError, match=r"model\.onnx is corrupt"):
        store.fetch("affine", 1)
    assert cache_entries(store, "affine") == []  # nothing half-written is left


def test_invalid_manifest_keeps_the_version_out(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix)
    s3_env.put(f"{s3_prefix}/affine/1/{MANIFEST}", b"{not json")
    escape = json.dumps({"files": {"../../x": {"size": 1}}}).encode()
    s3_env.upload_version(onnx_model.folder, "affine", 2, prefix=s3_prefix)
    s3_env.put(f"{s3_prefix}/affine/2/{MANIFEST}", escape)
    store = make_store(settle_seconds=0)
    assert store.list_versions("affine") == []
    with pytest.raises(StoreError, match=r"MANIFEST\.json is not valid"):
        store.fetch("affine", 1)
    with pytest.raises(StoreError, match="unsafe path"):
        store.fetch("affine", 2)


def test_build_manifest_lists_sizes_and_hashes(onnx_model: OnnxModel) -> None:
    files = json.loads(build_manifest(onnx_model.folder))["files"]
    assert list(files) == ["model.onnx"]
    assert files["model.onnx"]["size"] == (onnx_model.folder / "model.onnx").stat().st_size
    assert len(files["model.onnx"]["sha256"]) == 64


@pytest.mark.parametrize(
    "bad_key", ["../../../escape.txt", "sub/../../../escape.txt", "./model.onnx", "a//b", "a\\..\\..\\b"]
)
def test_keys_escaping_the_version_folder_are_refused(
    make_store: MakeStore,
    s3_env: S3Server,
    s3_prefix: str,
    onnx_model: OnnxModel,
    bad_key: str,
    tmp_path: Path,
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    s3_env.put(f"{s3_prefix}/affine/1/{bad_key}", b"owned")
    store = make_store()
    assert store.list_versions("affine") == []
    with pytest.raises(StoreError, match="refused"):
        store.fetch("affine", 1)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_names_and_paths_that_escape_are_refused(make_store: MakeStore) -> None:
    store = make_store()
    for model in ("..", "../other", "a/b", ".hidden", "x..y"):
        with pytest.raises(StoreError, match="invalid model name"):
            store.list_versions(model)
    for relpath in ("../other/config.yaml", "/etc/passwd", "golden/../../x", ""):
        with pytest.raises(StoreError, match="unsafe path"):
            store.read_file("affine", relpath)
    for uri in ("s3://", "s3://ab", "s3://bucket/../x", "s3://bucket/a/./b", "http://bucket/x"):
        with pytest.raises(StoreError):
            S3Store(uri)


def test_missing_model_or_version_is_a_store_error(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    for call in (lambda: store.list_versions("nope"), lambda: store.fetch("nope", 1)):
        with pytest.raises(StoreError, match="is not in the store") as info:
            call()
        assert not isinstance(info.value, StoreUnavailable)
    with pytest.raises(StoreError, match="has no version 5") as info:
        store.fetch("affine", 5)
    assert not isinstance(info.value, StoreUnavailable)


def test_missing_bucket_is_unavailable(s3_env: S3Server, tmp_path: Path) -> None:
    store = S3Store("s3://no-such-bucket/models", cache_dir=tmp_path)
    with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
        store.list_models()


def test_missing_credentials_are_unavailable(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store(s3_env.uri("x"), cache_dir=tmp_path)
    with pytest.raises(StoreUnavailable, match="NoCredentialsError"):
        store.list_models()


# --- outages: a server of their own, stopped, restarted and paused -----------------------------------------

# The outage store's settings, and how long one call may take to give up with them: a generous multiple of its
# attempts x (connect + read timeout), so that a busy machine stays well inside it, while a store ignoring its
# settings would wait out botocore's 60 s default read timeout on a hung server, far beyond it.
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, ATTEMPTS = 0.5, 1.0, 2
GIVE_UP_S = 5 * ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S)


@pytest.fixture(scope="module")
def outage_server() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outage_store(
    outage_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, onnx_model: OnnxModel
) -> S3Store:
    outage_server.start()  # in case a test before left it stopped
    point_env_at(outage_server, monkeypatch)
    outage_server.upload_version(onnx_model.folder, "affine", 1, prefix="o", marker="_COMPLETE")
    return S3Store(
        outage_server.uri("o"),
        cache_dir=tmp_path,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        max_attempts=ATTEMPTS,
    )


def test_outage_is_reported_quickly_and_the_store_recovers(outage_server: S3Server, outage_store: S3Store) -> None:
    assert outage_store.list_versions("affine") == [1]
    port = outage_server.port
    outage_server.stop()
    for call in (
        outage_store.list_models,
        lambda: outage_store.list_versions("affine"),
        lambda: outage_store.read_config("affine"),
        lambda: outage_store.fetch("affine", 1),
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="EndpointConnectionError"):
            call()
        assert time.monotonic() - started < GIVE_UP_S
    outage_server.start()
    assert outage_server.port == port
    assert outage_store.list_versions("affine") == [1]
    assert (outage_store.fetch("affine", 1) / "model.onnx").is_file()


def test_a_hung_server_times_out(outage_server: S3Server, outage_store: S3Store) -> None:
    assert outage_store.list_models() == ["affine"]
    outage_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="ReadTimeoutError"):
            outage_store.list_models()
        assert time.monotonic() - started < GIVE_UP_S
    finally:
        outage_server.resume()
    assert outage_store.list_models() == ["affine"]


def test_a_released_copy_is_deleted_once_this_process_stops_using_it(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    first, second = store.fetch("affine", 1), store.fetch("affine", 1)
    assert first == second
    store.release("affine", 1, first)
    assert first.is_dir()  # still used by the second fetch
    store.release("affine", 1, second)
    assert not first.exists()
    assert cache_entries(store, "affine") == []
    assert list((store.cache_dir / "affine" / ".users").iterdir()) == []


def test_a_newer_copy_of_a_version_replaces_the_older_one_when_it_is_free(
    make_store: MakeStore, s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel, onnx_model_b: OnnxModel
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    store = make_store()
    old = store.fetch("affine", 1)
    s3_env.upload_version(onnx_model_b.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    new = store.fetch("affine", 1)
    assert cache_entries(store, "affine") == sorted([old.name, new.name])  # the old copy still serves
    store.release("affine", 1, old)
    assert cache_entries(store, "affine") == [new.name]


def test_copies_used_by_another_live_process_stay_and_those_of_dead_ones_go(
    s3_env: S3Server, s3_prefix: str, onnx_model: OnnxModel, onnx_model_b: OnnxModel, tmp_path: Path
) -> None:
    s3_env.upload_version(onnx_model.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    script = (
        "import sys; from model_store.s3 import S3Store; "
        "print(S3Store(sys.argv[1], cache_dir=sys.argv[2]).fetch('affine', 1), flush=True); sys.stdin.read()"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", script, s3_env.uri(s3_prefix), str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=s3_env.environ(), text=True,
    )  # fmt: skip
    try:
        assert other.stdout is not None
        shared = Path(other.stdout.readline().strip())
        store = S3Store(s3_env.uri(s3_prefix), cache_dir=tmp_path)
        mine = store.fetch("affine", 1)
        assert mine == shared
        store.release("affine", 1, mine)
        assert shared.is_dir()  # the other process still uses it
    finally:
        other.communicate("", timeout=60)  # it exits without releasing
    # A newer copy of the version is fetched: the old one has no live user left and goes.
    s3_env.upload_version(onnx_model_b.folder, "affine", 1, prefix=s3_prefix, marker="_COMPLETE")
    new = store.fetch("affine", 1)
    assert cache_entries(store, "affine") == [new.name]


def test_a_pt2_of_another_name_counts_as_the_artefact(make_store: MakeStore, s3_env: S3Server, s3_prefix: str) -> None:
    # config.yaml's options.filename names it (Triton's default_model_filename); any other file does not count
    s3_env.put(f"{s3_prefix}/byo/1/two_heads.pt2", b"PK-not-parsed-by-the-listing")
    s3_env.put(f"{s3_prefix}/byo/1/_COMPLETE", b"")
    s3_env.put(f"{s3_prefix}/byo/2/notes.txt", b"x")
    s3_env.put(f"{s3_prefix}/byo/2/_COMPLETE", b"")
    store = make_store(settle_seconds=0)
    assert store.list_versions("byo") == [1]
    assert (store.fetch("byo", 1) / "two_heads.pt2").is_file()
