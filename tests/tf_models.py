"""Builders of the small TensorFlow SavedModels the tests serve (TF Serving layout: ``<root>/<name>/1/``).

Plain functions, so session-scoped fixtures in any conftest or test module can call them once per run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Input/output keys of the SavedModels below, as their SignatureDefs spell them.
MLP_INPUT = "pixels"
MLP_OUTPUT = "output_0"
CLASSIFY_FEATURE = "x"
CLASSIFY_LABELS = (b"neg", b"zero", b"pos")
BYTES_INPUT = "text"


def keras_mlp(seed: int = 0, inputs: int = 16, hidden: int = 8, classes: int = 4) -> Any:
    """A tiny Keras MLP with deterministic weights and input name ``pixels``."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,), name=MLP_INPUT),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(classes),
        ]
    )


def build_keras_savedmodel(root: Path, name: str = "keras_mlp") -> tuple[Path, Any]:
    """Export ``keras_mlp()`` with ``model.export`` into ``root/name/1``; return (version dir, the model)."""
    model = keras_mlp()
    version_dir = root / name / "1"
    model.export(str(version_dir), format="tf_saved_model", verbose=False)
    return version_dir, model


def tf_example(values: list[float], feature: str = CLASSIFY_FEATURE) -> bytes:
    """A serialized tf.Example with one float feature."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature[feature].float_list.value.extend(values)
    return example.SerializeToString()


def build_classify_regress_savedmodel(root: Path, name: str = "half_plus") -> Path:
    """A TF1-style SavedModel with classify, regress and predict signatures (the standard builder route).

    Each tf.Example carries a float feature ``x`` of length 2. ``classify`` scores the labels
    CLASSIFY_LABELS by softmax of ``x @ W``, ``regress`` returns ``0.5 * sum(x) + 2`` as [batch, 1], and
    ``serving_default`` is a predict signature over the parsed ``x``.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    version_dir = root / name / "1"
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {CLASSIFY_FEATURE: tf.io.FixedLenFeature([2], tf.float32)})
        x = parsed[CLASSIFY_FEATURE]
        weights = tf.constant([[1.0, -1.0, 0.5], [2.0, 0.0, -0.5]])
        scores = tf.nn.softmax(tf.matmul(x, weights), name="scores")
        classes = tf.tile(tf.constant([list(CLASSIFY_LABELS)]), [tf.shape(x)[0], 1], name="classes")
        value = tf.add(0.5 * tf.reduce_sum(x, axis=1, keepdims=True), 2.0, name="value")
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(version_dir))
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    "classify": v1.saved_model.classification_signature_def(serialized, classes, scores),
                    "regress": v1.saved_model.regression_signature_def(serialized, value),
                    "serving_default": v1.saved_model.predict_signature_def({"x": x}, {"value": value}),
                },
            )
            builder.save()
    return version_dir


def build_bytes_savedmodel(root: Path, name: str = "text_ops") -> Path:
    """A TF2 SavedModel with a DT_STRING input ``text`` [-1] and outputs ``upper_bytes`` (DT_STRING) and
    ``length`` (INT32), saved with ``tf.saved_model.save`` (method_name ``tensorflow/serving/predict``)."""
    import tensorflow as tf

    class TextOps(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
        def serve(self, text: Any) -> dict[str, Any]:
            return {"upper_bytes": tf.strings.upper(text), "length": tf.strings.length(text)}

    module = TextOps()
    version_dir = root / name / "1"
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve})
    return version_dir


def random_pixels(batch: int, width: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, width)).astype(np.float32)
