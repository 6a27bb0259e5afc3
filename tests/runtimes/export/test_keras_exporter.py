"""Keras export: SavedModel + tf2onnx variants agree with Keras; the torch-weights Keras MLP equals the torch MLP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_store.config import ModelConfig
from runtimes.export.keras_exporter import (
    ExportError,
    convert_onnx,
    export_keras,
    keras_mlp_like_torch,
    load_keras_model,
    sample_inputs,
)
from runtimes.tf_savedmodel import TFSavedModelRuntime
from tests import tf_models


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str], Any]:
    """One export of the tiny Keras MLP (SavedModel + ONNX) shared by the tests below."""
    store = tmp_path_factory.mktemp("keras_store")
    model = tf_models.keras_mlp()
    lines: list[str] = []
    written = export_keras(model, store, "tiny", progress=lines.append, samples=3)
    return store, written, lines, model


@pytest.fixture(scope="session")
def torch_mlp() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()


def _golden(model_dir: Path) -> list[dict[str, np.ndarray]]:
    files = sorted((model_dir / "1" / "golden").glob("*.npz"), key=lambda p: int(p.stem))
    out = []
    for path in files:
        with np.load(path, allow_pickle=False) as npz:
            out.append({key: npz[key] for key in npz.files})
    return out


def test_layout_configs_and_progress(exported: tuple[Path, list[str], list[str], Any]) -> None:
    store, written, lines, _ = exported
    assert written == ["tiny_tf_savedmodel", "tiny_onnx"]
    assert (store / "tiny_tf_savedmodel" / "1" / "saved_model.pb").is_file()
    assert (store / "tiny_tf_savedmodel" / "1" / "variables" / "variables.index").is_file()
    assert (store / "tiny_onnx" / "1" / "model.onnx").is_file()
    tf_cfg = ModelConfig.parse((store / "tiny_tf_savedmodel" / "config.yaml").read_text())
    onnx_cfg = ModelConfig.parse((store / "tiny_onnx" / "config.yaml").read_text())
    assert tf_cfg.runtime == "tf_savedmodel"
    assert tf_cfg.source["framework"] == "keras"
    assert onnx_cfg.runtime == "onnx"
    assert onnx_cfg.source["opset"] == 17
    assert onnx_cfg.source["via"] == "tiny_tf_savedmodel/1"
    assert any("tiny_onnx: converted with tf2onnx" in line for line in lines)


def test_golden_samples_come_from_keras(exported: tuple[Path, list[str], list[str], Any]) -> None:
    store, _, _, model = exported
    for name in ("tiny_tf_savedmodel", "tiny_onnx"):
        samples = _golden(store / name)
        assert len(samples) == 3
        for k, sample in enumerate(samples):
            assert set(sample) == {"in.pixels", "out.output_0"}
            assert sample["in.pixels"].shape == (k + 1, 16)
            np.testing.assert_allclose(sample["out.output_0"], model(sample["in.pixels"]).numpy(), rtol=1e-6)


def test_savedmodel_and_onnx_agree_with_keras(exported: tuple[Path, list[str], list[str], Any]) -> None:
    import onnxruntime as ort

    store, _, _, model = exported
    runtime = TFSavedModelRuntime()
    runtime.load(store / "tiny_tf_savedmodel" / "1", {})
    session = ort.InferenceSession(str(store / "tiny_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["output_0"]
    pixels = tf_models.random_pixels(7, seed=42)
    want = model(pixels).numpy()
    np.testing.assert_allclose(runtime.infer({"pixels": pixels})["output_0"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(session.run(["output_0"], {"pixels": pixels})[0], want, rtol=1e-5, atol=1e-5)


def test_torch_weights_give_the_same_function(torch_mlp: Any) -> None:
    import torch

    model = keras_mlp_like_torch(torch_mlp.state_dict())
    x = np.random.default_rng(3).standard_normal((5, 784)).astype(np.float32)
    with torch.no_grad():
        want = torch_mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x).numpy(), want, rtol=1e-5, atol=1e-5)
    # Module names do not matter, only the order of the (weight, bias) pairs.
    renamed = {f"layer{i}.{k.split('.')[1]}": v for i, (k, v) in enumerate(torch_mlp.state_dict().items())}
    np.testing.assert_allclose(keras_mlp_like_torch(renamed)(x).numpy(), want, rtol=1e-5, atol=1e-5)


def test_torch_weights_savedmodel_serves_the_torch_function(torch_mlp: Any, tmp_path: Path) -> None:
    import torch

    state = {k: v.numpy() for k, v in torch_mlp.state_dict().items()}
    written = export_keras(keras_mlp_like_torch(state, output_name="output"), tmp_path, "mlp", samples=1, onnx=False)
    assert written == ["mlp_tf_savedmodel"]
    runtime = TFSavedModelRuntime()
    runtime.load(tmp_path / "mlp_tf_savedmodel" / "1", {})
    sig = runtime.signature()
    assert [(s.name, s.shape) for s in sig.inputs] == [("input", (-1, 784))]
    assert [(s.name, s.shape) for s in sig.outputs] == [("output", (-1, 10))]
    x = np.random.default_rng(4).standard_normal((3, 784)).astype(np.float32)
    with torch.no_grad():
        want = torch_mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runtime.infer({"input": x})["output"], want, rtol=1e-5, atol=1e-5)


def test_wrong_state_dict_is_refused() -> None:
    with pytest.raises(ExportError, match=r"Linear\(784,128\)"):
        keras_mlp_like_torch({"w": np.zeros((128, 100)), "b": np.zeros(128)})


def test_failed_onnx_conversion_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "not_a_savedmodel"
    empty.mkdir()
    path, why = convert_onnx(empty, tmp_path / "broken_onnx", [], {})
    assert path is None
    assert why.startswith("tf2onnx failed (exit ")
    assert not (tmp_path / "broken_onnx").exists()


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_model_sources(tmp_path: Path) -> None:
    model, origin = load_keras_model("tests.tf_models:keras_mlp")
    assert origin == "tests.tf_models:keras_mlp"
    assert [t.name for t in model.inputs] == ["pixels"]
    path = tmp_path / "m.keras"
    model.save(path)
    loaded, origin = load_keras_model(path)
    assert origin == str(path)
    x = tf_models.random_pixels(2)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    for bad, message in [
        (tmp_path / "missing.keras", "does not exist"),
        ("no_colon_here", "neither a keras.Model"),
        ("tests.tf_models:nothing", "cannot import"),
        ("tests.tf_models:MLP_INPUT", "not a keras.Model"),
        ("tests.tf_models:random_pixels", "calling 'tests.tf_models:random_pixels' failed: TypeError"),
    ]:
        with pytest.raises(ExportError, match=message):
            load_keras_model(bad)


def test_free_dims_need_input_shapes() -> None:
    import keras

    inputs = keras.Input((None, 3), name="seq")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ExportError, match="input_shapes"):
        sample_inputs(model, 1)
    samples = sample_inputs(model, 2, {"seq": [5, 3]})
    assert [s["seq"].shape for s in samples] == [(1, 5, 3), (2, 5, 3)]
    with pytest.raises(ExportError, match="not inputs of the model"):
        sample_inputs(model, 1, {"other": [1]})
