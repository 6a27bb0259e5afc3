"""TF Serving classify/regress conventions: which signatures qualify and how results become rows."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.core.errors import InvalidInput
from gateway.core.tfserving import (
    check_signature,
    classification_rows,
    regression_values,
    requested_outputs,
    version_state,
)
from runtimes.base import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD, Signature, TensorSpec

EXAMPLES = TensorSpec("inputs", "BYTES", (-1,))
CLASSES = TensorSpec("classes", "BYTES", (-1, 2))
SCORES = TensorSpec("scores", "FP32", (-1, 2))
VALUES = TensorSpec("outputs", "FP32", (-1, 1))


def sig(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], method: str) -> Signature:
    return Signature(inputs=inputs, outputs=outputs, name="s", method=method)


def test_qualifying_signatures() -> None:
    classify = sig((EXAMPLES,), (CLASSES, SCORES, TensorSpec("extra", "FP32", (-1,))), CLASSIFY_METHOD)
    assert check_signature(classify, CLASSIFY_METHOD, strict_method=True) == "inputs"
    assert requested_outputs(classify, CLASSIFY_METHOD) == ["classes", "scores"]
    # TF Serving checks structure, not the method name, unless asked to.
    predict_shaped = sig((EXAMPLES,), (VALUES,), PREDICT_METHOD)
    assert check_signature(predict_shaped, REGRESS_METHOD) == "inputs"
    assert requested_outputs(predict_shaped, REGRESS_METHOD) == ["outputs"]


@pytest.mark.parametrize(
    ("signature", "method", "strict", "message"),
    [
        (
            sig((EXAMPLES,), (VALUES,), PREDICT_METHOD),
            REGRESS_METHOD,
            True,
            "method_name to be tensorflow/serving/regress",
        ),
        (sig((EXAMPLES, EXAMPLES), (VALUES,), REGRESS_METHOD), REGRESS_METHOD, False, "Expected one input Tensor"),
        (
            sig((TensorSpec("x", "FP32", (-1,)),), (VALUES,), REGRESS_METHOD),
            REGRESS_METHOD,
            False,
            "No regression inputs",
        ),
        (sig((EXAMPLES,), (VALUES,), CLASSIFY_METHOD), CLASSIFY_METHOD, False, "at least one of"),
        (sig((EXAMPLES,), (SCORES,), REGRESS_METHOD), REGRESS_METHOD, False, "No regression outputs"),
    ],
)
def test_signatures_that_do_not_qualify(signature: Signature, method: str, strict: bool, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_signature(signature, method, strict)


def test_classification_rows() -> None:
    classes = np.array([[b"a", b"b"]], dtype=object)
    scores = np.array([[0.5, 0.25]], np.float32)
    assert classification_rows({"classes": classes, "scores": scores}, 1) == [[(b"a", 0.5), (b"b", 0.25)]]
    assert classification_rows({"classes": classes}, 1) == [[(b"a", 0.0), (b"b", 0.0)]]
    assert classification_rows({"scores": scores}, 1) == [[(b"", 0.5), (b"", 0.25)]]
    for outputs, message in [
        ({}, "Expected classification outputs"),
        ({"scores": np.zeros(2, np.float32)}, r"Expected Tensor shape: \[batch_size num_classes\]"),
        ({"classes": np.zeros((1, 2), np.float32)}, "Expected classes Tensor of DT_STRING"),
        ({"scores": np.zeros((1, 2), np.int32)}, "Expected scores Tensor of DT_FLOAT"),
        ({"classes": classes, "scores": np.zeros((1, 3), np.float32)}, r"match in dim_size\(1\). Got 2 vs. 3"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            classification_rows(outputs, 1)


def test_regression_values_and_states() -> None:
    assert regression_values({"outputs": np.array([[1.0], [2.0]], np.float32)}, 2) == [1.0, 2.0]
    assert regression_values({"outputs": np.array([3.0], np.float32)}, 1) == [3.0]
    with pytest.raises(InvalidInput, match=r"Expected output batch size of 2\. Got: 1"):
        regression_values({"outputs": np.array([3.0], np.float32)}, 2)
    with pytest.raises(InvalidInput, match="Expected output Tensor of DT_FLOAT"):
        regression_values({"outputs": np.array([3], np.int64)}, 1)
    assert [version_state(s) for s in ("READY", "LOADING", "UNLOADING", "UNAVAILABLE", "?")] == [
        "AVAILABLE",
        "LOADING",
        "UNLOADING",
        "END",
        "UNKNOWN",
    ]
