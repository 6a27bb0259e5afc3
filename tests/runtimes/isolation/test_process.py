"""ProcessRuntime: a model served from a child process answers exactly as the in-process runtime does (tensors
through shared memory, arenas that grow, BYTES), reports input errors as such, turns a dead child into
RuntimeCrashed naming the signal, restarts, and returns its memory when unloaded."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runtimes import RuntimeCrashed, RuntimeInputError, RuntimeLoadError
from runtimes.isolation import ProcessRuntime, process_rss
from runtimes.onnx_runtime import OnnxRuntime


@pytest.fixture
def dense(onnx_models: Path) -> Iterator[ProcessRuntime]:
    runtime = ProcessRuntime("onnx", "dense v1", slots=2)
    runtime.load(onnx_models / "dense", {})
    yield runtime
    runtime.unload()


@pytest.fixture(scope="module")
def reference(onnx_models: Path) -> OnnxRuntime:
    runtime = OnnxRuntime()
    runtime.load(onnx_models / "dense", {})
    return runtime


def test_answers_like_the_runtime_in_process(dense: ProcessRuntime, reference: OnnxRuntime) -> None:
    assert dense.signatures() == reference.signatures()
    assert dense.platform == reference.platform and dense.artifact == reference.artifact
    rng = np.random.default_rng(0)
    for rows in (1, 3, 40_000, 2):  # 40,000 rows outgrow both arenas; the next call reuses the grown ones
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        got = dense.infer({"x": x})
        want = reference.infer({"x": x})
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
            assert got[name].flags.writeable  # a copy: the arena slot is reused by the next call


def test_bytes_tensors_round_trip(onnx_models: Path) -> None:
    runtime = ProcessRuntime("onnx", "identity v1")
    runtime.load(onnx_models / "identity_bytes", {})
    try:
        data = np.array([[b"ab", b""], [b"x\x00yz", "é".encode()]], dtype=object)
        (name,) = [s.name for s in runtime.signature().inputs]
        (out,) = runtime.infer({name: data}).values()
        assert out.dtype == object and out.shape == data.shape and out.tolist() == data.tolist()
    finally:
        runtime.unload()


def test_input_errors_stay_input_errors(dense: ProcessRuntime, reference: OnnxRuntime) -> None:
    bad = {"x": np.zeros((2, 5), np.float32)}
    with pytest.raises(RuntimeInputError) as got:
        dense.infer(bad)
    with pytest.raises(RuntimeInputError) as want:
        reference.infer(bad)
    assert str(got.value) == str(want.value)
    assert dense.infer({"x": np.zeros((1, 16), np.float32)})  # the child still serves


def test_a_load_failure_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    runtime = ProcessRuntime("onnx", "broken v1")
    with pytest.raises(RuntimeLoadError):
        runtime.load(tmp_path, {})
    assert runtime.pid is None


def test_a_killed_child_fails_calls_then_restarts(dense: ProcessRuntime, reference: OnnxRuntime) -> None:
    exits: list[str] = []
    dense.watch(exits.append)
    pid = dense.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    x = np.ones((2, 16), np.float32)
    with pytest.raises(RuntimeCrashed, match=r"runtime process for model dense v1 exited \(signal 9"):
        dense.infer({"x": x})
    assert exits and exits[0].startswith("signal 9")
    dense.restart()
    assert dense.pid not in (None, pid)
    np.testing.assert_array_equal(dense.infer({"x": x})["y"], reference.infer({"x": x})["y"])


def test_unload_stops_the_child_without_calling_it_a_crash(onnx_models: Path) -> None:
    runtime = ProcessRuntime("onnx", "dense v1")
    runtime.load(onnx_models / "dense", {})
    exits: list[str] = []
    runtime.watch(exits.append)
    pid = runtime.pid
    assert pid is not None and runtime.rss() > 0
    runtime.unload()
    assert runtime.pid is None and process_rss(pid) == 0 and not os.path.exists(f"/proc/{pid}/stat")
    assert exits == []
    with pytest.raises(RuntimeLoadError):
        runtime.restart()  # unloaded for good
