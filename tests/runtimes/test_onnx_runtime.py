"""OnnxRuntime: signatures from the session, output subsets, session options, BYTES, and load failures."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runtimes import RuntimeInputError, RuntimeLoadError, TensorSpec, detect_format, runtime_class
from runtimes.onnx_runtime import OnnxRuntime
from tests.onnx_models import dense_weights


def loaded(folder: Path, **options: object) -> OnnxRuntime:
    runtime = OnnxRuntime()
    runtime.load(folder, options)
    return runtime


def session_options(runtime: OnnxRuntime) -> ort.SessionOptions:
    session = runtime._session
    assert session is not None
    return session.get_session_options()


def test_format_table_finds_the_onnx_runtime() -> None:
    assert runtime_class("onnx") is OnnxRuntime
    assert (OnnxRuntime.format, OnnxRuntime.platform, OnnxRuntime.artifact) == (
        "onnx",
        "onnxruntime_onnx",
        "model.onnx",
    )


def test_signature_comes_from_the_session(onnx_models: Path) -> None:
    sig = loaded(onnx_models / "dense").signature()
    assert sig.inputs == (TensorSpec("x", "FP32", (-1, 16)),)
    assert sig.outputs == (TensorSpec("y", "FP32", (-1, 4)),)
    assert sig.batched
    assert loaded(onnx_models / "dense").signatures().keys() == {"serving_default"}


def test_symbolic_and_unknown_dims_become_minus_one(onnx_models: Path) -> None:
    sig = loaded(onnx_models / "unknown_dims").signature()
    assert sig.inputs == (TensorSpec("a", "INT64", (-1, -1, 2)),)
    assert sig.outputs == (TensorSpec("b", "INT64", (-1, -1, 2)),)


def test_fixed_shape_model_has_no_batch_dimension(onnx_models: Path) -> None:
    runtime = loaded(onnx_models / "fixed")
    sig = runtime.signature()
    assert sig.inputs == (TensorSpec("x", "FP32", (3,)),)
    assert not sig.batched
    out = runtime.infer({"x": np.array([1, 2, 3], dtype=np.float32)})
    assert out["y"].tolist() == [2, 4, 6]


def test_infer_computes_the_model(onnx_models: Path) -> None:
    runtime = loaded(onnx_models / "dense")
    x = np.random.default_rng(3).standard_normal((5, 16)).astype(np.float32)
    w, b = dense_weights()
    out = runtime.infer({"x": x})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], x @ w + b, rtol=1e-5, atol=1e-5)


def test_outputs_subset_and_order(onnx_models: Path) -> None:
    runtime = loaded(onnx_models / "two_io")
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 3, dtype=np.float32)
    only = runtime.infer({"a": a, "b": b}, ["prod"])
    assert list(only) == ["prod"]
    np.testing.assert_array_equal(only["prod"], a * b)
    both = runtime.infer({"a": a, "b": b}, ["prod", "sum"])
    assert list(both) == ["prod", "sum"]
    everything = runtime.infer({"a": a, "b": b})
    assert list(everything) == ["sum", "prod"]
    np.testing.assert_array_equal(everything["sum"], a + b)


def test_default_thread_options_suit_a_small_box(onnx_models: Path) -> None:
    options = session_options(loaded(onnx_models / "dense"))
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_thread_and_graph_options_are_applied(onnx_models: Path) -> None:
    runtime = loaded(
        onnx_models / "dense",
        intra_op_threads=2,
        inter_op_threads=3,
        execution_mode="parallel",
        graph_optimization="basic",
    )
    options = session_options(runtime)
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 3
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert runtime.infer({"x": np.zeros((1, 16), np.float32)})["y"].shape == (1, 4)


def test_unavailable_providers_fall_back_to_cpu(onnx_models: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tensorgate.runtimes.onnx"):
        runtime = loaded(onnx_models / "dense", providers=["NoSuchExecutionProvider"])
    assert "NoSuchExecutionProvider" in caplog.text
    assert runtime.device == "cpu"
    assert runtime._session is not None
    assert runtime._session.get_providers() == ["CPUExecutionProvider"]


def test_cuda_device_without_cuda_provider_is_a_load_error(onnx_models: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        runtime = loaded(onnx_models / "dense", device="cuda")
        assert runtime.device == "cuda"
        return
    with pytest.raises(RuntimeLoadError, match="no CUDAExecutionProvider"):
        loaded(onnx_models / "dense", device="cuda")


def test_bytes_model_takes_and_returns_bytes(onnx_models: Path) -> None:
    runtime = loaded(onnx_models / "identity_bytes")
    assert runtime.signature().inputs == (TensorSpec("input", "BYTES", (-1, -1)),)
    data = np.array([[b"hello", b""], ["wörld".encode(), b"x"]], dtype=np.object_)
    out = runtime.infer({"input": data})["output"]
    assert out.dtype == np.object_
    assert out.tolist() == [[b"hello", b""], ["wörld".encode(), b"x"]]
    empty = runtime.infer({"input": np.empty((0, 2), dtype=np.object_)})["output"]
    assert empty.shape == (0, 2)


def test_rejected_inputs_are_runtime_input_errors(onnx_models: Path) -> None:
    runtime = loaded(onnx_models / "dense")
    with pytest.raises(RuntimeInputError, match="rejected the inputs"):
        runtime.infer({"x": np.zeros((1, 5), np.float32)})
    with pytest.raises(RuntimeInputError):
        runtime.infer({"x": np.zeros((1, 16), np.float64)})


def test_missing_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeLoadError, match=r"model\.onnx does not exist"):
        OnnxRuntime().load(tmp_path, {})


def test_corrupt_file_is_a_load_error(tmp_path: Path, onnx_models: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"this is not an onnx file")
    with pytest.raises(RuntimeLoadError, match="could not load"):
        OnnxRuntime().load(tmp_path, {})
    truncated = tmp_path / "cut"
    truncated.mkdir()
    good = (onnx_models / "dense" / "model.onnx").read_bytes()
    (truncated / "model.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(RuntimeLoadError):
        OnnxRuntime().load(truncated, {})


def test_unloaded_runtime_refuses_to_answer(onnx_models: Path, tmp_path: Path) -> None:
    fresh = OnnxRuntime()
    with pytest.raises(RuntimeLoadError, match="not loaded"):
        fresh.signature()
    with pytest.raises(RuntimeLoadError, match="not loaded"):
        fresh.infer({})
    folder = tmp_path / "copy"
    shutil.copytree(onnx_models / "dense", folder)
    runtime = loaded(folder)
    runtime.unload()
    with pytest.raises(RuntimeLoadError, match="not loaded"):
        runtime.infer({"x": np.zeros((1, 16), np.float32)})


def test_the_artefact_file_name_is_an_option(onnx_models: Path, tmp_path: Path) -> None:
    shutil.copy(onnx_models / "dense" / "model.onnx", tmp_path / "net.onnx")
    runtime = loaded(tmp_path, filename="net.onnx")
    assert runtime.artifact == "net.onnx" and OnnxRuntime.artifact == "model.onnx"
    assert runtime.signature().inputs == (TensorSpec("x", "FP32", (-1, 16)),)
    assert detect_format(tmp_path, "net.onnx") == "onnx"
    with pytest.raises(RuntimeLoadError, match=r"model\.onnx does not exist"):
        loaded(tmp_path)
    for bad in ("../dense/model.onnx", "/etc/passwd", ".."):
        with pytest.raises(RuntimeLoadError, match="must be a plain file or folder name"):
            loaded(tmp_path, filename=bad)


def test_declared_tensors_pin_free_dims_and_must_match_the_model(onnx_models: Path) -> None:
    runtime = loaded(onnx_models / "unknown_dims", inputs=[{"name": "a", "datatype": "INT64", "shape": [-1, 5, 2]}])
    assert runtime.signature().inputs == (TensorSpec("a", "INT64", (-1, 5, 2)),)
    assert runtime.signature().outputs == (TensorSpec("b", "INT64", (-1, -1, 2)),)
    cases = [
        ({"inputs": [{"name": "z", "datatype": "FP32", "shape": [-1, 16]}]}, "declared input 'z' is not one of"),
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 16]}]}, "declared FP64 but the model's is FP32"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [16]}]}, "rank 1"),
        ({"outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 5]}]}, "dim 1 is declared 5 but the model"),
    ]
    for options, words in cases:
        with pytest.raises(RuntimeLoadError, match=words):
            loaded(onnx_models / "dense", **options)
