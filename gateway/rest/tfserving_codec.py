"""TF Serving REST codec: predict/classify/regress/metadata/status JSON <-> numpy, pure (no web framework).

Follows TF Serving's ``json_tensor.cc``: row (``instances``) and columnar (``inputs``) requests,
``{"b64": ...}`` binary values, ``NaN``/``Infinity`` literals both ways, single outputs without their name, and
DT_STRING outputs whose name ends in ``_bytes`` written as base64 objects. Errors raise InvalidInput with
TF Serving's wording.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from gateway.core.errors import InvalidInput
from gateway.core.tfserving import classification_rows, regression_values
from gateway.core.types import DATATYPES
from runtimes.base import DEFAULT_SIGNATURE, Signature, TensorSpec

B64 = "b64"
BYTES_SUFFIX = "_bytes"
_TF_NAMES = {d.name: d.tf_name for d in DATATYPES.values()}
_TF_DTYPE_STRING = {  # DataTypeString() spellings used in TF Serving's type errors
    "FP32": "float", "FP64": "double", "INT32": "int32", "INT16": "int16", "INT8": "int8", "UINT8": "uint8",
    "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64", "INT64": "int64", "BOOL": "bool",
    "BYTES": "string", "FP16": "half", "BF16": "bfloat16",
}  # fmt: skip


@dataclass
class PredictRequest:
    """A decoded predict body: the signature asked for (None = default), the inputs, the request format."""

    signature_name: str | None
    inputs: dict[str, np.ndarray]
    row_format: bool


# -------------------------------------------------------------------- JSON parsing

NESTING = "JSON Parse error: the document is nested too deeply"


def loads(body: bytes | str) -> dict[str, Any]:
    """Parse a request body: orjson first, the standard library when the body holds NaN/Infinity literals."""
    if not body.strip():
        raise InvalidInput("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"JSON Parse error: {exc}") from None
        except RecursionError:
            raise InvalidInput(NESTING) from None
    if not isinstance(doc, dict):
        raise InvalidInput(f"JSON Value: {_short(doc)} Is not object")
    return doc


def signature_name(doc: Mapping[str, Any]) -> str | None:
    """The request's ``signature_name``; None when absent or empty (meaning ``serving_default``)."""
    value = doc.get("signature_name")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            f"JSON Value: {_short(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return value or None


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------- predict request


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def _b64decode(value: dict[str, str]) -> bytes:
    try:
        return base64.b64decode(value[B64], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("Unable to base64 decode") from None


def _shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _bytes_tensor(value: Any) -> np.ndarray:
    """Nested lists of strings / b64 objects -> object array of bytes, checking the nesting is rectangular."""
    shape = _shape_of(value)
    flat: list[bytes] = []

    def walk(item: Any, level: int) -> None:
        if isinstance(item, list):
            if level >= len(shape):
                raise InvalidInput(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
            if len(item) != shape[level]:
                raise InvalidInput(
                    f"Encountered list at unexpected size: {len(item)} at level: {level} expected size: {shape[level]}"
                )
            for element in item:
                walk(element, level + 1)
            return
        if level != len(shape):
            raise InvalidInput(
                f"JSON Value: {_short(item)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(shape)}"
            )
        if isinstance(item, str):
            flat.append(item.encode("utf-8"))
        elif _is_b64(item):
            flat.append(_b64decode(item))
        else:
            raise InvalidInput(f"JSON Value: {_short(item)} Type: {_json_type(item)} is not of expected type: string")

    walk(value, 0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


_NOTHING = object()


def _bad_leaf(value: Any, ok: Any) -> Any:
    """The first leaf (in document order) that ``ok`` refuses, else the first leaf."""
    first: Any = _NOTHING
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
            continue
        if first is _NOTHING:
            first = item
        if not ok(item):
            return item
    return None if first is _NOTHING else first


def _type_error(value: Any, spec: TensorSpec, ok: Any) -> InvalidInput:
    leaf = _bad_leaf(value, ok)
    return InvalidInput(
        f"JSON Value: {_short(leaf)} Type: {_json_type(leaf)} is not of expected type: "
        f"{_TF_DTYPE_STRING.get(spec.datatype, spec.datatype)}"
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _ragged(value: Any) -> InvalidInput:
    shape = _shape_of(value)
    return InvalidInput(
        f"JSON Value: {_short(value)} is not a dense tensor: every list at a level must have the size "
        f"of the first ({shape})"
    )


def tensor_from_json(value: Any, spec: TensorSpec) -> np.ndarray:
    """One JSON value (scalar or nested lists) -> numpy array of the spec's datatype."""
    if spec.datatype == "BYTES":
        return _bytes_tensor(value)
    dt = DATATYPES.get(spec.datatype)
    if dt is None:
        raise InvalidInput(f"input {spec.name!r} has datatype {spec.datatype}, which JSON cannot carry")
    try:
        array = np.array(value)
    except ValueError:
        raise _ragged(value) from None
    kind = array.dtype.kind
    target = dt.numpy
    if target.kind == "f":
        if kind not in "iuf":
            raise _type_error(value, spec, _is_number)
    elif target.kind in "iu":
        if kind not in "iu":
            raise _type_error(value, spec, _is_int)
        if array.size:
            info = np.iinfo(target)
            low, high = int(array.min()), int(array.max())
            if low < info.min or high > info.max:
                bad = low if low < info.min else high
                raise InvalidInput(
                    f"JSON Value: {bad} Type: Number is not of expected type: "
                    f"{_TF_DTYPE_STRING[spec.datatype]} (out of range)"
                )
    elif target.kind == "b" and kind != "b":
        raise _type_error(value, spec, lambda x: isinstance(x, bool))
    return array.astype(target, copy=False)


def _single_input(specs: Sequence[TensorSpec], what: str) -> TensorSpec:
    if len(specs) != 1:
        raise InvalidInput(
            f"{what} is a plain value/list, but expecting an object as multiple input tensors required as "
            f"per tensorinfo_map ({', '.join(s.name for s in specs)})"
        )
    return specs[0]


def _instances(value: Any, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, list):
        raise InvalidInput("Excepting 'instances' to be an list/array")
    if not value:
        raise InvalidInput("No values in 'instances' array")
    by_name = {s.name: s for s in specs}
    objects = isinstance(value[0], dict) and not _is_b64(value[0])
    if not objects:
        if len(specs) > 1:
            raise InvalidInput(
                "instances is a plain list, but expecting list of objects as multiple input tensors "
                "required as per tensorinfo_map"
            )
        spec = specs[0]
        for i, item in enumerate(value):
            if isinstance(item, dict) and not _is_b64(item):
                raise InvalidInput(f"Expecting value/list but got object at item {i} of input list")
        return {spec.name: _stack(value, spec, None)}
    names = sorted(by_name)
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or _is_b64(item):
            raise InvalidInput(f"Expecting object but got list at item {i} of input list")
        for key in item:
            if key not in by_name:
                raise InvalidInput(
                    f"Failed to process element: {i} key: {key} of 'instances' list. Error: "
                    f"JSON object: does not have named input: {key}"
                )
        if sorted(item) != names:
            raise InvalidInput(
                f"Failed to process element: {i} of 'instances' list. JSON object: {_short(item)} keys "
                f"must be equal to: {','.join(names)}"
            )
        for name in names:
            columns[name].append(item[name])
    return {name: _stack(columns[name], by_name[name], name) for name in names}


def _stack(items: list[Any], spec: TensorSpec, key: str | None) -> np.ndarray:
    """Batch the per-instance values of one input; every instance must have the first one's shape."""
    first = _shape_of(items[0])
    for i, item in enumerate(items[1:], start=1):
        shape = _shape_of(item)
        if shape != first:
            where = f"Failed to process element: {i}" + (f" key: {key}" if key else "")
            raise InvalidInput(
                f"{where} of 'instances' list. Error: Expecting shape "
                f"[{','.join(map(str, first))}] but got: [{','.join(map(str, shape))}]"
            )
    try:
        return tensor_from_json(items, spec)
    except InvalidInput as exc:
        where = "Failed to process element" + (f" key: {key}" if key else "")
        raise InvalidInput(f"{where} of 'instances' list. Error: {exc.message}") from None


def _columnar(value: Any, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        spec = _single_input(specs, "inputs")
        return {spec.name: tensor_from_json(value, spec)}
    out = {}
    for spec in specs:
        if spec.name not in value:
            raise InvalidInput(f"Missing named input: {spec.name} in 'inputs' object.")
        out[spec.name] = tensor_from_json(value[spec.name], spec)
    return out


def decode_predict(doc: Mapping[str, Any], inputs: Sequence[TensorSpec]) -> PredictRequest:
    """A parsed predict body -> named numpy inputs, given the chosen signature's input specs."""
    if not inputs:
        raise InvalidInput(f"Failed to get input map for signature: {signature_name(doc) or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise InvalidInput(
            f"JSON Value: {_short(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if has_instances:
        return PredictRequest(signature_name(doc), _instances(doc["instances"], inputs), True)
    if has_inputs:
        return PredictRequest(signature_name(doc), _columnar(doc["inputs"], inputs), False)
    raise InvalidInput("Missing 'inputs' or 'instances' key")


def parse_predict(body: bytes | str, signature: Signature) -> PredictRequest:
    """``loads`` + ``decode_predict`` when the signature is already known."""
    return decode_predict(loads(body), signature.inputs)


# ---------------------------------------------------------------- predict response


def _string_json(array: np.ndarray, as_b64: bool) -> Any:
    def one(item: Any) -> Any:
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if not as_b64:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                pass  # not text: fall back to base64 rather than emit invalid JSON
        return {B64: base64.b64encode(raw).decode("ascii")}

    flat = [one(x) for x in array.reshape(-1)]
    if array.ndim == 0:
        return flat[0]
    holder = np.empty(len(flat), dtype=object)
    holder[:] = flat
    return holder.reshape(array.shape).tolist()


def _is_string(array: np.ndarray) -> bool:
    return array.dtype.kind in "OSU"


def _plain(array: np.ndarray) -> np.ndarray:
    """A numpy array orjson can serialise natively (float16/bfloat16 widened, C-contiguous)."""
    if array.dtype == np.float16 or array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)  # (the latter makes 0-d 1-d)


def _has_non_finite(arrays: Mapping[str, np.ndarray]) -> bool:
    return any(
        (array.dtype.kind == "f" or array.dtype.name == "bfloat16")
        and not np.isfinite(array.astype(np.float32, copy=False)).all()
        for array in arrays.values()
    )


def _float_tree(array: np.ndarray) -> Any:
    """Python floats that print as the shortest text of the original precision (float32 0.1 -> 0.1)."""
    if array.dtype == np.float64:
        return array.tolist()
    return array.astype(np.float32).astype(str).astype(np.float64).tolist()


def _value(name: str, array: np.ndarray, non_finite: bool) -> Any:
    if _is_string(array):
        return _string_json(array, name.endswith(BYTES_SUFFIX))
    array = _plain(array)
    if array.ndim == 0:  # orjson writes a 0-d array as a list
        return float(str(array)) if array.dtype.kind == "f" else array.item()
    if non_finite and array.dtype.kind == "f":
        return _float_tree(array)
    if non_finite:
        return array.tolist()
    return array


def _dumps(doc: Any, non_finite: bool) -> bytes:
    if non_finite:
        return json.dumps(doc, allow_nan=True, separators=(",", ":")).encode("utf-8")
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """Outputs -> ``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar), as TF Serving writes."""
    if not outputs:
        raise InvalidInput("Cannot convert empty tensor map to JSON")
    non_finite = _has_non_finite(outputs)
    if not row_format:
        if len(outputs) == 1:
            name, array = next(iter(outputs.items()))
            return _dumps({"outputs": _value(name, array, non_finite)}, non_finite)
        return _dumps({"outputs": {n: _value(n, a, non_finite) for n, a in outputs.items()}}, non_finite)
    batch = -1
    for name, array in outputs.items():
        if array.ndim == 0:
            raise InvalidInput(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidInput(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    if len(outputs) == 1:
        name, array = next(iter(outputs.items()))
        return _dumps({"predictions": _value(name, array, non_finite)}, non_finite)
    values = {n: _value(n, a, non_finite) for n, a in outputs.items()}
    rows = [{n: v[i] for n, v in values.items()} for i in range(batch)]
    return _dumps({"predictions": rows}, non_finite)


# -------------------------------------------------------------- classify / regress


def _feature(name: str, value: Any, feature: Any) -> None:
    """Add one JSON value (or list of values) to a tf.train.Feature, keeping one kind per feature.

    As in TF Serving: strings and b64 objects are bytes, integers and booleans int64, decimals float. A list
    that mixes integers and decimals is taken as float (TF Serving refuses an integer after a decimal).
    """
    values = value if isinstance(value, list) else [value]
    kinds = set()
    for item in values:
        if item is None or isinstance(item, list) or (isinstance(item, dict) and not _is_b64(item)):
            raise InvalidInput(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")
        if isinstance(item, str) or _is_b64(item):
            kinds.add("bytes")
        elif isinstance(item, (bool, int)):
            kinds.add("int64")
        else:
            kinds.add("float")
    if kinds == {"int64", "float"} and not any(isinstance(v, bool) for v in values):
        kinds = {"float"}
    if len(kinds) > 1:
        raise InvalidInput(f"Unexpected element type in feature: {name} expecting type: {sorted(kinds)[0]}")
    kind = kinds.pop() if kinds else "float"
    if kind == "bytes":
        feature.bytes_list.value.extend(_b64decode(v) if isinstance(v, dict) else v.encode("utf-8") for v in values)
    elif kind == "int64":
        for v in values:
            if isinstance(v, int) and not -(2**63) <= v < 2**63:
                raise InvalidInput(f"Feature: {name} has uint64 element. Only int64 is supported.")
        feature.int64_list.value.extend(int(v) for v in values)
    else:
        for v in values:
            if math.isfinite(v) and abs(v) > np.finfo(np.float32).max:
                raise InvalidInput(f"Cannot convert JSON value: {v} to float without loss of precision.")
        feature.float_list.value.extend(float(v) for v in values)


def _example(value: Any) -> Any:
    from runtimes.tf_protos import example_pb2

    if not isinstance(value, dict):
        raise InvalidInput(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        _feature(name, content, example.features.feature[name])
    return example


def decode_examples(doc: Mapping[str, Any], method: str = "classify") -> np.ndarray:
    """``examples`` (+ optional ``context``) -> object array [n] of serialized tf.Example bytes.

    With a context, each example is serialized after it (proto merge), so an example's own features win, which
    is how TF Serving feeds ExampleListWithContext to the model.
    """
    context = b""
    if "context" in doc:
        context = _example(doc["context"]).SerializeToString()
    if "examples" not in doc:
        raise InvalidInput(
            f"JSON Value: {_short(doc)} When method is {method}, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise InvalidInput(f"JSON Value: {_short(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidInput(f"JSON Value: {_short(doc)} 'examples' value is an empty array")
    out = np.empty(len(examples), dtype=object)
    out[:] = [context + _example(item).SerializeToString() for item in examples]
    return out


def encode_classify(outputs: Mapping[str, np.ndarray], num_examples: int) -> bytes:
    """``{"results": [[[label, score], ...], ...]}``."""
    rows = classification_rows(outputs, num_examples)
    results = [[[label.decode("utf-8", "replace"), _f32(score)] for label, score in row] for row in rows]
    return _dumps_floats({"results": results}, [score for row in rows for _, score in row])


def encode_regress(outputs: Mapping[str, np.ndarray], num_examples: int) -> bytes:
    """``{"results": [value, ...]}``."""
    values = regression_values(outputs, num_examples)
    return _dumps_floats({"results": [_f32(v) for v in values]}, values)


def _f32(value: float) -> float:
    """A float32 as the double that prints as its shortest float32 text (0.1f -> 0.1, not 0.100000001)."""
    return float(str(np.float32(value)))


def _dumps_floats(doc: Any, values: Sequence[float]) -> bytes:
    if all(math.isfinite(v) for v in values):
        return orjson.dumps(doc)
    return json.dumps(doc, allow_nan=True, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------- status / metadata


def encode_status(versions: Sequence[tuple[int | str, str, str]]) -> bytes:
    """``GET /v1/models/{m}``: (version, TF Serving state name, error message or "") per version."""
    entries = []
    for version, state, error in versions:
        status = {"error_code": "UNKNOWN" if error else "OK", "error_message": error}
        entries.append({"version": str(version), "state": state, "status": status})
    return orjson.dumps({"model_version_status": entries})


def _tensor_info(spec: TensorSpec, tensor_name: str, unknown_rank: bool) -> dict[str, Any]:
    dims = [] if unknown_rank else [{"size": str(d), "name": ""} for d in spec.shape]
    return {
        "dtype": _TF_NAMES.get(spec.datatype, "DT_INVALID"),
        "tensor_shape": {"dim": dims, "unknown_rank": unknown_rank},
        "name": tensor_name,
    }


def signature_def_json(signature: Signature) -> dict[str, Any]:
    """One Signature as TF Serving prints a SignatureDef (proto3 JSON with default fields)."""
    extra = signature.extra or {}
    unknown = set(extra.get("unknown_rank", ()))
    in_names = extra.get("input_tensor_names", {})
    out_names = extra.get("output_tensor_names", {})
    return {
        "inputs": {
            s.name: _tensor_info(s, in_names.get(s.name, f"{s.name}:0"), s.name in unknown) for s in signature.inputs
        },
        "outputs": {
            s.name: _tensor_info(s, out_names.get(s.name, f"{s.name}:0"), s.name in unknown) for s in signature.outputs
        },
        "method_name": signature.method,
    }


def encode_metadata(model: str, version: int | str, signatures: Mapping[str, Signature]) -> bytes:
    """``GET /v1/models/{m}[/versions/{v}]/metadata`` with the doubled ``signature_def`` key."""
    defs = {name: signature_def_json(sig) for name, sig in signatures.items()}
    doc = {
        "model_spec": {"name": model, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": defs}},
    }
    return orjson.dumps(doc)


def encode_error(message: str) -> bytes:
    """TF Serving's error body ``{"error": message}``."""
    return orjson.dumps({"error": message})


__all__ = [
    "DEFAULT_SIGNATURE",
    "PredictRequest",
    "decode_examples",
    "decode_predict",
    "encode_classify",
    "encode_error",
    "encode_metadata",
    "encode_predict",
    "encode_regress",
    "encode_status",
    "loads",
    "parse_predict",
    "signature_def_json",
    "signature_name",
    "tensor_from_json",
]
