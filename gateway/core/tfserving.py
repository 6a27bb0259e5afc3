"""TF Serving's classify/regress conventions shared by the REST and gRPC front ends: which signatures
qualify, how result tensors become (label, score) rows and regression values, version states, and TF Serving's
wording of a model that cannot be found."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gateway.core.errors import GatewayError, InvalidInput, ModelNotReady
from runtimes.base import CLASSIFY_METHOD, REGRESS_METHOD, Signature

CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"

#: ModelRegistry state -> TF Serving ModelVersionStatus.State name.
VERSION_STATES: dict[str, str] = {
    "LOADING": "LOADING",
    "READY": "AVAILABLE",
    "UNLOADING": "UNLOADING",
    "UNAVAILABLE": "END",
}


def error_message(exc: GatewayError) -> str:
    """What a TF Serving front end says: TF Serving's own text for a model or version that cannot be found
    (``Servable not found for request: Latest(m)`` / ``Specific(m, 2)``; a version that is not ready adds why),
    else the error's message."""
    if exc.servable is None:
        return exc.message
    name, version = exc.servable
    request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    text = f"Servable not found for request: {request}"
    return f"{text} ({exc.message})" if isinstance(exc, ModelNotReady) else text


def version_state(registry_state: str) -> str:
    """TF Serving's name for a registry state (UNKNOWN for anything unexpected)."""
    return VERSION_STATES.get(registry_state, "UNKNOWN")


def check_signature(signature: Signature, method: str, strict_method: bool = False) -> str:
    """Check that ``signature`` can serve ``method`` (CLASSIFY_METHOD or REGRESS_METHOD); return its input.

    Like TF Serving (whose method-name check is off by default), a signature qualifies by its structure: one
    DT_STRING input ``inputs`` and outputs ``classes``/``scores`` (classify) or ``outputs`` (regress).
    ``strict_method`` also demands the method name.
    """
    kind = "classification" if method == CLASSIFY_METHOD else "regression"
    if method not in (CLASSIFY_METHOD, REGRESS_METHOD):
        raise ValueError(f"method must be {CLASSIFY_METHOD} or {REGRESS_METHOD}, got {method!r}")
    if strict_method and signature.method != method:
        raise InvalidInput(f"Expected {kind} signature method_name to be {method}. Was: {signature.method}")
    if len(signature.inputs) != 1:
        raise InvalidInput(f"Expected one input Tensor. Signature {signature.name!r} has {len(signature.inputs)}")
    spec = signature.inputs[0]
    if spec.name != CLASSIFY_INPUTS or spec.datatype != "BYTES":
        raise InvalidInput(
            f"No {kind} inputs found in signature {signature.name!r}: expected one DT_STRING input "
            f"{CLASSIFY_INPUTS!r} of serialized tf.Example, found {spec.name!r} ({spec.datatype})"
        )
    names = {s.name for s in signature.outputs}
    if method == CLASSIFY_METHOD and not names & {CLASSIFY_CLASSES, CLASSIFY_SCORES}:
        raise InvalidInput(
            f'Expected classification signature outputs to contain at least one of "{CLASSIFY_CLASSES}" or '
            f'"{CLASSIFY_SCORES}". Signature {signature.name!r} has {sorted(names)}'
        )
    if method == REGRESS_METHOD and REGRESS_OUTPUTS not in names:
        raise InvalidInput(
            f'No regression outputs found in signature {signature.name!r}: expected "{REGRESS_OUTPUTS}", '
            f"found {sorted(names)}"
        )
    return spec.name


def requested_outputs(signature: Signature, method: str) -> list[str]:
    """The outputs a classify/regress call needs from the runtime (others are not computed for the reply)."""
    wanted = (CLASSIFY_CLASSES, CLASSIFY_SCORES) if method == CLASSIFY_METHOD else (REGRESS_OUTPUTS,)
    return [s.name for s in signature.outputs if s.name in wanted]


def _check_matrix(name: str, array: np.ndarray, num_examples: int) -> None:
    if array.ndim != 2:
        raise InvalidInput(f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)}")
    if array.shape[0] != num_examples:
        raise InvalidInput(f"Expected {name} output batch size of {num_examples}. Got: {array.shape[0]}")


def classification_rows(outputs: Mapping[str, np.ndarray], num_examples: int) -> list[list[tuple[bytes, float]]]:
    """``classes`` [batch, n] (strings) and/or ``scores`` [batch, n] (float) -> [(label, score)...] per example.

    A missing ``classes`` gives empty labels, a missing ``scores`` gives score 0, as in TF Serving.
    """
    classes = outputs.get(CLASSIFY_CLASSES)
    scores = outputs.get(CLASSIFY_SCORES)
    if classes is None and scores is None:
        raise InvalidInput(f'Expected classification outputs "{CLASSIFY_CLASSES}" or "{CLASSIFY_SCORES}"')
    if classes is not None:
        _check_matrix(CLASSIFY_CLASSES, classes, num_examples)
        if classes.dtype.kind not in "OSU":
            raise InvalidInput(f"Expected classes Tensor of DT_STRING. Got: {classes.dtype}")
    if scores is not None:
        _check_matrix(CLASSIFY_SCORES, scores, num_examples)
        if scores.dtype.kind != "f":
            raise InvalidInput(f"Expected scores Tensor of DT_FLOAT. Got: {scores.dtype}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidInput(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    rows: list[list[tuple[bytes, float]]] = []
    for i in range(num_examples):
        row = []
        for c in range(width):
            label = _label(classes[i, c]) if classes is not None else b""
            score = float(scores[i, c]) if scores is not None else 0.0
            row.append((label, score))
        rows.append(row)
    return rows


def _label(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def regression_values(outputs: Mapping[str, np.ndarray], num_examples: int) -> list[float]:
    """``outputs`` [batch] or [batch, 1] (float) -> one value per example."""
    value = outputs.get(REGRESS_OUTPUTS)
    if value is None:
        raise InvalidInput(f'Expected regression output "{REGRESS_OUTPUTS}"')
    if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)):
        raise InvalidInput(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {list(value.shape)}"
        )
    if value.shape[0] != num_examples:
        raise InvalidInput(f"Expected output batch size of {num_examples}. Got: {value.shape[0]}")
    if value.dtype.kind != "f":
        raise InvalidInput(f"Expected output Tensor of DT_FLOAT. Got: {value.dtype}")
    return [float(v) for v in value.reshape(-1)]
