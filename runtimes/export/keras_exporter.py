"""Keras export: a Keras model -> a TF Serving SavedModel and a tf2onnx ONNX variant, with configs and goldens.

Layout written into the store (``name`` is the family name):
``<store>/<name>_tf_savedmodel/{config.yaml, 1/saved_model.pb, 1/variables/, 1/golden/<k>.npz}`` and, where
tf2onnx converts, ``<store>/<name>_onnx/{config.yaml, 1/model.onnx, 1/golden/<k>.npz}``.

Tensor names are the SavedModel's ``serving_default`` keys, which ``model.export`` takes from the Keras model:
inputs are named after the ``keras.Input`` layers; outputs are ``output_0``, ``output_1``... for a tensor or a
list, or the dict keys when the model returns a dict. tf2onnx keeps the same names. Golden outputs are computed
by the Keras model itself, and each artefact is checked against them before it is kept.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.config import ModelConfig
from model_store.golden import write_golden

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

TF_SUFFIX = "_tf_savedmodel"
ONNX_SUFFIX = "_onnx"
ONNX_OPSET = 17
ATOL = 1e-4
RTOL = 1e-3
TF2ONNX_TIMEOUT_S = 600

#: Names of the SavedModel that ``keras_mlp_like_torch`` builds (with the default arguments).
MLP_INPUT = "input"
MLP_OUTPUT = "output_0"


class ExportError(ValueError):
    """The Keras model could not be loaded, sampled or exported (the message says why)."""


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def load_keras_model(source: Any) -> tuple[Any, str]:
    """A keras.Model from an instance, a ``.keras``/``.h5`` file, or a ``module:factory`` import path.

    Returns the model and a short description of where it came from (recorded in config.yaml ``source``).
    """
    keras = _keras()
    if isinstance(source, keras.Model):
        return source, f"{type(source).__module__}.{type(source).__qualname__} instance"
    text = str(source)
    path = Path(text)
    if path.suffix in (".keras", ".h5"):
        if not path.is_file():
            raise ExportError(f"Keras file {path} does not exist")
        try:
            return keras.saving.load_model(str(path)), str(path)
        except Exception as exc:
            raise ExportError(f"cannot load Keras model {path}: {exc}") from exc
    module_name, sep, attr = text.partition(":")
    if not sep or not module_name or not attr:
        raise ExportError(f"{text!r} is neither a keras.Model, a .keras/.h5 file, nor a 'module:factory' import path")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"cannot import {text!r}: {exc}") from exc
    model = factory
    if callable(factory) and not isinstance(factory, keras.Model):
        try:
            model = factory()
        except Exception as exc:
            raise ExportError(f"calling {text!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, keras.Model):
        raise ExportError(f"{text!r} returned {type(model).__name__}, not a keras.Model")
    return model, text


def keras_mlp_like_torch(
    state_dict: Mapping[str, Any], input_name: str = MLP_INPUT, output_name: str | None = None
) -> Any:
    """Dense(128, relu) -> Dense(10) on a 784 input, holding the weights of the torch MLP
    Linear(784,128)-ReLU-Linear(128,10).

    ``state_dict`` maps names to arrays (numpy or torch); the two (weight [out,in], bias [out]) pairs are taken
    in order, whatever the module names are. Torch's weight is [out, in], a Keras kernel [in, out], so kernels
    are the transposes. The exported SavedModel takes ``input_name`` (default ``input``, FP32 [-1, 784]) and
    returns ``output_0`` (FP32 [-1, 10]), or ``output_name`` when given (the model then returns a one-key dict).
    """
    keras = _keras()
    arrays = [_as_numpy(value) for value in state_dict.values()]
    weights = [a for a in arrays if a.ndim == 2]
    biases = [a for a in arrays if a.ndim == 1]
    expected = [(128, 784), (10, 128)]
    if len(weights) != 2 or len(biases) != 2 or [w.shape for w in weights] != expected:
        raise ExportError(
            "expected the state_dict of Linear(784,128)-ReLU-Linear(128,10): weights [128,784] and [10,128] "
            f"with biases [128] and [10]; got {[(k, list(a.shape)) for k, a in zip(state_dict, arrays, strict=False)]}"
        )
    if [b.shape for b in biases] != [(128,), (10,)]:
        raise ExportError(f"bias shapes {[list(b.shape) for b in biases]} do not match [128] and [10]")
    inputs = keras.Input((784,), name=input_name, dtype="float32")
    hidden = keras.layers.Dense(128, activation="relu", name="fc1")(inputs)
    logits = keras.layers.Dense(10, name="fc2")(hidden)
    outputs = {output_name: logits} if output_name else logits
    model = keras.Model(inputs, outputs, name="mlp")
    model.get_layer("fc1").set_weights([weights[0].T.astype(np.float32), biases[0].astype(np.float32)])
    model.get_layer("fc2").set_weights([weights[1].T.astype(np.float32), biases[1].astype(np.float32)])
    return model


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def sample_inputs(
    model: Any, count: int, input_shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """``count`` random input sets (sample k has batch k+1) named after the model's ``keras.Input`` layers.

    ``input_shapes`` gives an input's shape without the batch dimension where the model leaves dims free.
    """
    if not getattr(model, "inputs", None):
        raise ExportError(
            "the Keras model has no symbolic inputs (a subclassed or unbuilt model); "
            "build it from keras.Input layers (functional or Sequential with an Input)"
        )
    rng = np.random.default_rng(seed)
    given = dict(input_shapes or {})
    names = [tensor.name for tensor in model.inputs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ExportError(f"input_shapes names {unknown} are not inputs of the model ({names})")
    specs: list[tuple[str, tuple[int, ...], np.dtype]] = []
    for tensor in model.inputs:
        name = tensor.name
        dims = tuple(given[name]) if name in given else tuple(tensor.shape[1:])
        if any(d is None for d in dims):
            raise ExportError(
                f"input {name!r} has free dims {list(tensor.shape)}; pass input_shapes={{{name!r}: [...]}} "
                "with its shape without the batch dimension"
            )
        specs.append((name, tuple(int(d) for d in dims), np.dtype(tensor.dtype)))
    samples = []
    for k in range(count):
        batch: dict[str, np.ndarray] = {}
        for name, dims, dtype in specs:
            shape = (k + 1, *dims)
            if dtype.kind == "f":
                batch[name] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                batch[name] = rng.integers(0, 10, size=shape).astype(dtype)
            elif dtype.kind == "b":
                batch[name] = rng.random(shape) > 0.5
            else:
                raise ExportError(f"input {name!r} has dtype {dtype}; golden samples support numbers and bool")
        samples.append(batch)
    return samples


def keras_outputs(model: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the Keras model; name its outputs the way ``model.export`` names them in the SavedModel."""
    keras = _keras()
    feed: Any = next(iter(inputs.values())) if len(inputs) == 1 else dict(inputs)
    result = model(feed, training=False)
    if isinstance(result, Mapping):
        named = dict(result.items())
    elif isinstance(result, list | tuple):
        named = {f"output_{i}": value for i, value in enumerate(result)}
    else:
        named = {"output_0": result}
    return {key: np.asarray(keras.ops.convert_to_numpy(value)) for key, value in named.items()}


def _mismatch(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> str | None:
    for key, expected in want.items():
        if key not in got:
            return f"output {key!r} is missing (have {sorted(got)})"
        have = np.asarray(got[key])
        if have.shape != expected.shape:
            return f"output {key!r} has shape {list(have.shape)}, expected {list(expected.shape)}"
        if not np.allclose(have, expected, atol=ATOL, rtol=RTOL):
            err = float(np.max(np.abs(have.astype(np.float64) - expected.astype(np.float64))))
            return f"output {key!r} differs by up to {err:.3g} (atol {ATOL}, rtol {RTOL})"
    return None


def _write_config(model_dir: Path, config: ModelConfig) -> None:
    (model_dir / "config.yaml").write_text(config.dump())


def _fresh_version_dir(model_dir: Path, version: int = 1) -> Path:
    version_dir = model_dir / str(version)
    if version_dir.exists():
        shutil.rmtree(version_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    return version_dir


def export_savedmodel(
    model: Any,
    model_dir: Path,
    samples: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    source: Mapping[str, Any],
) -> Path:
    """``model.export(<model_dir>/1, format="tf_saved_model")``, checked against ``samples``; returns it."""
    from runtimes.tf_savedmodel import TFSavedModelRuntime

    keras = _keras()
    version_dir = _fresh_version_dir(model_dir)
    try:
        model.export(str(version_dir), format="tf_saved_model", verbose=False)
    except Exception as exc:
        raise ExportError(f"model.export to {version_dir} failed: {exc}") from exc
    runtime = TFSavedModelRuntime()
    runtime.load(version_dir, {})
    signature = runtime.signature()
    names = {s.name for s in signature.outputs}
    for inputs, outputs in samples:
        if set(outputs) != names:
            raise ExportError(
                f"the SavedModel outputs {sorted(names)} do not match the Keras outputs {sorted(outputs)}"
            )
        problem = _mismatch(runtime.infer(dict(inputs)), outputs)
        if problem:
            raise ExportError(f"the exported SavedModel disagrees with Keras: {problem}")
    runtime.unload()
    import tensorflow as tf

    config = ModelConfig(
        runtime="tf_savedmodel",
        source={
            **source,
            "exporter": 'keras model.export(format="tf_saved_model")',
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
    )
    _write_config(model_dir, config)
    write_golden(version_dir, samples)
    return version_dir


def convert_onnx(
    savedmodel_dir: Path,
    model_dir: Path,
    samples: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
    source: Mapping[str, Any],
    opset: int = ONNX_OPSET,
) -> tuple[Path | None, str]:
    """tf2onnx the SavedModel's ``serving_default`` into ``<model_dir>/1/model.onnx`` and check it.

    Returns (path, "converted ...") or (None, why not); a failed conversion leaves no model dir behind.
    """
    version_dir = _fresh_version_dir(model_dir)
    version_dir.mkdir(parents=True)
    target = version_dir / "model.onnx"
    command = [
        sys.executable, "-m", "tf2onnx.convert",
        "--saved-model", str(savedmodel_dir),
        "--signature_def", "serving_default",
        "--tag", "serve",
        "--output", str(target),
        "--opset", str(opset),
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def fail(why: str) -> tuple[None, str]:
        shutil.rmtree(model_dir, ignore_errors=True)
        return None, why

    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TF2ONNX_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail(f"tf2onnx did not run: {exc}")
    if done.returncode != 0 or not target.is_file():
        tail = " | ".join(line for line in done.stderr.strip().splitlines()[-5:] if line.strip())
        return fail(f"tf2onnx failed (exit {done.returncode}): {tail or 'no output'}")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return fail(f"onnxruntime is not installed, so the ONNX file cannot be checked: {exc}")
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    in_names = {i.name for i in session.get_inputs()}
    out_names = [o.name for o in session.get_outputs()]
    for inputs, outputs in samples:
        if in_names != set(inputs) or set(out_names) != set(outputs):
            return fail(
                f"tf2onnx renamed the tensors: inputs {sorted(in_names)} outputs {sorted(out_names)}, "
                f"the SavedModel has {sorted(inputs)} and {sorted(outputs)}"
            )
        got = dict(zip(out_names, session.run(out_names, dict(inputs)), strict=True))
        problem = _mismatch(got, outputs)
        if problem:
            return fail(f"the ONNX model disagrees with Keras: {problem}")
    import tf2onnx

    config = ModelConfig(
        runtime="onnx",
        source={**source, "exporter": f"tf2onnx {tf2onnx.__version__}", "opset": opset},
    )
    _write_config(model_dir, config)
    write_golden(version_dir, samples)
    return target, f"converted with tf2onnx {tf2onnx.__version__} (opset {opset})"


def export_keras(
    model_or_path_or_factory: Any,
    store: str | Path,
    name: str,
    progress: Progress | None = None,
    samples: int = 3,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    onnx: bool = True,
    opset: int = ONNX_OPSET,
) -> list[str]:
    """Export a Keras model into ``store`` as ``<name>_tf_savedmodel`` and (where tf2onnx converts)
    ``<name>_onnx``; returns the model names written.

    ``progress`` receives one line per step, including why ONNX was skipped when tf2onnx fails (also logged as
    a warning). ``samples`` golden samples are written per model.
    """
    say = progress or (lambda line: log.info("%s", line))
    store = Path(store)
    model, origin = load_keras_model(model_or_path_or_factory)
    golden = []
    for inputs in sample_inputs(model, samples, input_shapes):
        golden.append((inputs, keras_outputs(model, inputs)))
    written: list[str] = []
    tf_name = f"{name}{TF_SUFFIX}"
    source = {"framework": "keras", "from": origin}
    say(f"{tf_name}: exporting the SavedModel")
    savedmodel_dir = export_savedmodel(model, store / tf_name, golden, source)
    written.append(tf_name)
    say(f"{tf_name}: written to {savedmodel_dir} with {len(golden)} golden samples")
    if onnx:
        onnx_name = f"{name}{ONNX_SUFFIX}"
        say(f"{onnx_name}: converting the SavedModel with tf2onnx")
        onnx_source = {**source, "via": f"{tf_name}/1"}
        path, why = convert_onnx(savedmodel_dir, store / onnx_name, golden, onnx_source, opset)
        if path is None:
            log.warning("%s: not written: %s", onnx_name, why)
            say(f"{onnx_name}: NOT written: {why}")
        else:
            written.append(onnx_name)
            say(f"{onnx_name}: {why}, written to {path}")
    return written
