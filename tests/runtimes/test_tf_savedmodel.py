"""TFSavedModelRuntime against real SavedModels: a Keras export, TF1 classify/regress signatures, DT_STRING I/O."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtimes import RuntimeInputError, RuntimeLoadError, detect_format, runtime_class
from runtimes.base import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD, TensorSpec
from runtimes.tf_savedmodel import TFSavedModelRuntime, apply_thread_options
from tests import tf_models


@pytest.fixture(scope="session")
def tf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tf_models")


@pytest.fixture(scope="session")
def keras_savedmodel(tf_root: Path) -> tuple[Path, Any]:
    return tf_models.build_keras_savedmodel(tf_root)


@pytest.fixture(scope="session")
def classify_dir(tf_root: Path) -> Path:
    return tf_models.build_classify_regress_savedmodel(tf_root)


@pytest.fixture(scope="session")
def bytes_dir(tf_root: Path) -> Path:
    return tf_models.build_bytes_savedmodel(tf_root)


def _load(path: Path, options: dict[str, Any] | None = None) -> TFSavedModelRuntime:
    runtime = TFSavedModelRuntime()
    runtime.load(path, options or {})
    return runtime


@pytest.fixture(scope="session")
def keras_runtime(keras_savedmodel: tuple[Path, Any]) -> TFSavedModelRuntime:
    return _load(keras_savedmodel[0])


@pytest.fixture(scope="session")
def classify_runtime(classify_dir: Path) -> TFSavedModelRuntime:
    return _load(classify_dir)


@pytest.fixture(scope="session")
def bytes_runtime(bytes_dir: Path) -> TFSavedModelRuntime:
    return _load(bytes_dir)


def _in_process(path: Path, signature: str, **inputs: Any) -> dict[str, np.ndarray]:
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures[signature]
    return {k: v.numpy() for k, v in function(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def test_format_detection_and_lookup(keras_savedmodel: tuple[Path, Any]) -> None:
    assert detect_format(keras_savedmodel[0]) == "tf_savedmodel"
    assert runtime_class("tf_savedmodel") is TFSavedModelRuntime
    assert (TFSavedModelRuntime.platform, TFSavedModelRuntime.artifact) == ("tensorflow_savedmodel", "saved_model.pb")


def test_keras_export_signatures(keras_runtime: TFSavedModelRuntime) -> None:
    sigs = keras_runtime.signatures()
    assert set(sigs) == {"serve", "serving_default"}
    sig = keras_runtime.signature()
    assert sig.name == "serving_default"
    assert sig.method == PREDICT_METHOD
    assert sig.inputs == (TensorSpec(tf_models.MLP_INPUT, "FP32", (-1, 16)),)
    assert sig.outputs == (TensorSpec(tf_models.MLP_OUTPUT, "FP32", (-1, 4)),)
    assert sig.batched
    assert sig.extra["input_tensor_names"] == {"pixels": "serving_default_pixels:0"}


@pytest.mark.parametrize("batch", [1, 5])
def test_keras_outputs_equal_the_savedmodel_called_in_process(
    keras_runtime: TFSavedModelRuntime, keras_savedmodel: tuple[Path, Any], batch: int
) -> None:
    path, model = keras_savedmodel
    pixels = tf_models.random_pixels(batch)
    got = keras_runtime.infer({"pixels": pixels})
    want = _in_process(path, "serving_default", pixels=pixels)
    assert list(got) == ["output_0"]
    np.testing.assert_allclose(got["output_0"], want["output_0"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["output_0"], model(pixels).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(
        keras_runtime.infer({"pixels": pixels}, signature="serve")["output_0"], got["output_0"]
    )


@pytest.mark.parametrize(
    ("inputs", "signature", "message"),
    [
        ({"pixels": np.zeros((2, 16), np.float64)}, None, "input 'pixels' has dtype float64; expected pixels (FP32"),
        (
            {"pixels": np.zeros((2, 15), np.float32)},
            None,
            "input 'pixels' has shape [2, 15]; expected pixels (FP32 [-1, 16])",
        ),
        ({"pixels": np.zeros(16, np.float32)}, None, "has shape [16]"),
        ({}, None, "missing input 'pixels'"),
        ({"pixels": np.zeros((1, 16), np.float32), "x": np.zeros(1)}, None, "unexpected input 'x'"),
        ({"pixels": np.zeros((1, 16), np.float32)}, "nope", "signature 'nope' not found"),
    ],
)
def test_bad_inputs_are_refused_before_tensorflow(
    keras_runtime: TFSavedModelRuntime, inputs: dict[str, np.ndarray], signature: str | None, message: str
) -> None:
    with pytest.raises(RuntimeInputError) as info:
        keras_runtime.infer(inputs, signature=signature)
    assert message in str(info.value)


def test_requested_outputs(classify_runtime: TFSavedModelRuntime) -> None:
    examples = np.array([tf_models.tf_example([1, 2])], dtype=object)
    got = classify_runtime.infer({"inputs": examples}, ["scores"], signature="classify")
    assert list(got) == ["scores"]
    with pytest.raises(RuntimeInputError, match="unknown output 'probabilities'"):
        classify_runtime.infer({"inputs": examples}, ["probabilities"], signature="classify")


def test_classify_and_regress_signatures_keep_their_method_names(classify_runtime: TFSavedModelRuntime) -> None:
    sigs = classify_runtime.signatures()
    assert {name: s.method for name, s in sigs.items()} == {
        "classify": CLASSIFY_METHOD,
        "regress": REGRESS_METHOD,
        "serving_default": PREDICT_METHOD,
    }
    assert sigs["classify"].inputs == (TensorSpec("inputs", "BYTES", (-1,)),)
    assert sigs["classify"].outputs == (TensorSpec("classes", "BYTES", (-1, 3)), TensorSpec("scores", "FP32", (-1, 3)))
    assert sigs["regress"].outputs == (TensorSpec("outputs", "FP32", (-1, 1)),)


def test_classify_and_regress_take_serialized_examples(
    classify_runtime: TFSavedModelRuntime, classify_dir: Path
) -> None:
    x = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0]], np.float32)
    examples = np.array([tf_models.tf_example(list(row)) for row in x], dtype=object)
    got = classify_runtime.infer({"inputs": examples}, signature="classify")
    assert got["classes"].dtype == object
    assert got["classes"].tolist() == [list(tf_models.CLASSIFY_LABELS)] * 3
    logits = x @ np.array([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]], np.float32)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got["scores"], softmax, rtol=1e-5)
    want = _in_process(classify_dir, "classify", inputs=examples)
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6)
    regress = classify_runtime.infer({"inputs": examples}, signature="regress")
    np.testing.assert_allclose(regress["outputs"], 0.5 * x.sum(axis=1, keepdims=True) + 2.0, rtol=1e-6)


def test_unparseable_example_is_an_input_error(classify_runtime: TFSavedModelRuntime) -> None:
    with pytest.raises(RuntimeInputError) as info:
        classify_runtime.infer({"inputs": np.array([b"not a tf.Example"], dtype=object)}, signature="classify")
    text = str(info.value)
    assert "Could not parse example input" in text
    assert "File " not in text  # TensorFlow's Python stack is stripped


def test_bytes_round_trip(bytes_runtime: TFSavedModelRuntime, bytes_dir: Path) -> None:
    sig = bytes_runtime.signature()
    assert sig.inputs == (TensorSpec("text", "BYTES", (-1,)),)
    assert sig.outputs == (TensorSpec("length", "INT32", (-1,)), TensorSpec("upper_bytes", "BYTES", (-1,)))
    text = np.array([b"abc", b"x\x00y", b"\xff\xfe", b""], dtype=object)
    got = bytes_runtime.infer({"text": text})
    assert got["upper_bytes"].dtype == object
    assert got["upper_bytes"].tolist() == [b"ABC", b"X\x00Y", b"\xff\xfe", b""]
    assert got["length"].tolist() == [3, 3, 2, 0]
    assert got["length"].dtype == np.int32
    want = _in_process(bytes_dir, "serving_default", text=text)
    assert want["upper_bytes"].tolist() == got["upper_bytes"].tolist()
    as_str = bytes_runtime.infer({"text": np.array(["héllo"])}, ["upper_bytes"])
    assert as_str["upper_bytes"].tolist() == ["HéLLO".encode()]


def test_concurrent_calls_agree_with_sequential_ones(keras_runtime: TFSavedModelRuntime) -> None:
    batches = [tf_models.random_pixels(1 + i % 4, seed=i) for i in range(32)]
    expected = [keras_runtime.infer({"pixels": b})["output_0"] for b in batches]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda b: keras_runtime.infer({"pixels": b})["output_0"], batches))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_thread_settings_are_fixed_once_per_process(keras_savedmodel: tuple[Path, Any]) -> None:
    script = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
        import tensorflow as tf
        from runtimes.tf_savedmodel import TFSavedModelRuntime
        first = TFSavedModelRuntime()
        first.load({str(keras_savedmodel[0])!r}, {{"intra_op_threads": 1, "inter_op_threads": 2}})
        print("first", first.threads["intra_op_threads"], first.threads["inter_op_threads"])
        second = TFSavedModelRuntime()
        second.load({str(keras_savedmodel[0])!r}, {{"intra_op_threads": 3}})
        print("second", second.threads["intra_op_threads"],
              tf.config.threading.get_intra_op_parallelism_threads())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "first 1 2" in lines
    assert "second 1 1" in lines
    assert any("process-wide and already fixed at 1; ignoring the requested 3" in line for line in lines)


def test_conflicting_thread_settings_warn(caplog: pytest.LogCaptureFixture, keras_runtime: TFSavedModelRuntime) -> None:
    current = apply_thread_options({})["intra_op_threads"]
    with caplog.at_level("WARNING", logger="runtimes.tf_savedmodel"):
        after = apply_thread_options({"intra_op_threads": current + 3})
    assert after["intra_op_threads"] == current
    assert "process-wide" in caplog.text
    with pytest.raises(RuntimeLoadError, match="must be >= 0"):
        apply_thread_options({"inter_op_threads": -1})


def test_load_failures(tmp_path: Path) -> None:
    with pytest.raises(RuntimeLoadError, match="not a SavedModel directory"):
        TFSavedModelRuntime().load(tmp_path / "missing", {})
    with pytest.raises(RuntimeLoadError, match=r"no saved_model\.pb"):
        TFSavedModelRuntime().load(tmp_path, {})
    (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage\xff")
    with pytest.raises(RuntimeLoadError, match="unreadable SavedModel proto"):
        TFSavedModelRuntime().load(tmp_path, {})


def test_tags_option_and_unload(keras_savedmodel: tuple[Path, Any]) -> None:
    with pytest.raises(RuntimeLoadError, match="no MetaGraphDef with tags"):
        TFSavedModelRuntime().load(keras_savedmodel[0], {"tags": ["train"]})
    runtime = _load(keras_savedmodel[0], {"tags": "serve"})
    assert runtime.tags == ["serve"]
    runtime.unload()
    assert runtime.signatures() == {}
    with pytest.raises(RuntimeError, match="not loaded"):
        runtime.infer({"pixels": tf_models.random_pixels(1)})
