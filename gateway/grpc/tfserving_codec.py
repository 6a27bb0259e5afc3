"""TF Serving gRPC codec: TensorProto <-> numpy, ModelSpec, SignatureDefMap metadata, classify/regress results.

Uses the generated modules of ``tensorflow-serving-api`` (which import TensorFlow). TensorProto decoding reads
``tensor_content`` (what ``tf.make_tensor_proto`` writes for numbers) and the typed ``*_val`` fields (what
perf_analyzer and TF Serving itself write), including perf_analyzer's quirks: INT64 values sent in ``bool_val``,
and INT8/INT16/FP16 values whose unused high bytes hold garbage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from gateway.core.errors import InvalidInput
from gateway.core.tfserving import classification_rows, regression_values
from gateway.core.types import DATATYPES, datatype_from_tf, datatype_of, element_count
from runtimes.base import DEFAULT_SIGNATURE, Signature, TensorSpec
from runtimes.tf_protos import meta_graph_pb2, tensor_pb2, tensor_shape_pb2

SIGNATURE_DEF_FIELD = "signature_def"
SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# V2 datatype -> the typed TensorProto field that carries it.
_VAL_FIELD: dict[str, str] = {
    "FP32": "float_val",
    "FP64": "double_val",
    "INT32": "int_val",
    "INT16": "int_val",
    "INT8": "int_val",
    "UINT8": "int_val",
    "UINT16": "int_val",
    "INT64": "int64_val",
    "BOOL": "bool_val",
    "FP16": "half_val",
    "BF16": "half_val",
    "UINT32": "uint32_val",
    "UINT64": "uint64_val",
    "BYTES": "string_val",
}
_NARROW_INTS = ("INT16", "INT8", "UINT8", "UINT16")
_STATUS_OK, _STATUS_UNKNOWN = 0, 2  # tensorflow.error.Code


# --------------------------------------------------------------------- TensorProto


#: The largest tensor TF's fill rule (fewer values than elements, the last repeating) may expand to.
MAX_BROADCAST_BYTES = 1 << 30


def _shape(proto: tensor_pb2.TensorProto, name: str) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise InvalidInput(f"tensor {name!r} has an unknown rank; a request tensor needs a full shape")
    dims = tuple(int(d.size) for d in shape.dim)
    if any(d < 0 for d in dims):
        raise InvalidInput(f"tensor {name!r} has a negative dimension in shape {list(dims)}")
    return dims


def tensor_to_numpy(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode a TensorProto: ``tensor_content`` (zero-copy, read-only) or the typed ``*_val`` field.

    Typed values follow TensorFlow's rules: as many values as elements, or fewer, the last one repeating
    (a single value broadcasts over the shape); none at all gives zeros.
    """
    dt = datatype_from_tf(int(proto.dtype))
    if dt is None:
        raise InvalidInput(f"tensor {name!r} has unsupported dtype {proto.dtype}")
    shape = _shape(proto, name)
    count = element_count(shape)
    if proto.tensor_content:
        if dt.name == "BYTES":
            raise InvalidInput(f"tensor {name!r}: DT_STRING values go in string_val, not tensor_content")
        content = proto.tensor_content
        if len(content) != count * dt.size:
            raise InvalidInput(
                f"tensor {name!r}: tensor_content holds {len(content)} bytes, shape {list(shape)} of "
                f"{dt.tf_name} needs {count * dt.size}"
            )
        return np.frombuffer(content, dtype=dt.numpy).reshape(shape)
    field = _VAL_FIELD[dt.name]
    values = getattr(proto, field)
    if dt.name == "INT64" and not values and proto.bool_val:
        values = proto.bool_val  # perf_analyzer's tfserving client writes INT64 into bool_val
    n = len(values)
    if n > count:
        raise InvalidInput(f"tensor {name!r}: {n} values in {field} for shape {list(shape)} ({count} elements)")
    if n < count and count * max(dt.size, 8) > MAX_BROADCAST_BYTES:  # checked before anything is allocated
        raise InvalidInput(
            f"tensor {name!r}: shape {list(shape)} ({count} elements) is too large to fill from {n} values "
            f"(at most {MAX_BROADCAST_BYTES} bytes)"
        )
    if dt.name == "BYTES":
        flat = np.empty(n, dtype=object)
        flat[:] = list(values)
    elif dt.name in ("FP16", "BF16"):
        flat = np.fromiter(values, dtype=np.int64, count=n).astype(np.uint16).view(dt.numpy)
    elif dt.name in _NARROW_INTS:
        flat = np.fromiter(values, dtype=np.int64, count=n).astype(dt.numpy)  # keep the low bytes, as TF does
    else:
        flat = np.fromiter(values, dtype=dt.numpy, count=n)
    if n == count:
        return flat.reshape(shape)
    if n == 0:
        if dt.name == "BYTES":
            empty = np.empty(count, dtype=object)
            empty[:] = [b""] * count
            return empty.reshape(shape)
        return np.zeros(shape, dtype=dt.numpy)
    filled = np.empty(count, dtype=flat.dtype)
    filled[:n] = flat
    filled[n:] = flat[-1]
    return filled.reshape(shape)


def numpy_to_tensor(array: np.ndarray, use_tensor_content: bool = False) -> tensor_pb2.TensorProto:
    """Encode a numpy array. Typed ``*_val`` fields by default (what TF Serving replies with);
    ``use_tensor_content`` packs numbers as raw little-endian bytes instead (faster for large tensors; what
    ``tf.make_tensor_proto`` writes). ``tf.make_ndarray`` reads both. Strings always go in ``string_val``."""
    dt = datatype_of(array)
    proto = tensor_pb2.TensorProto(dtype=dt.tf)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape)
    if dt.name == "BYTES":
        proto.string_val.extend(
            x if isinstance(x, bytes) else str(x).encode("utf-8") for x in array.reshape(-1).tolist()
        )
        return proto
    if use_tensor_content:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()  # little-endian hosts (x86-64, arm64)
        return proto
    flat = array.reshape(-1)
    if dt.name in ("FP16", "BF16"):
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    else:
        getattr(proto, _VAL_FIELD[dt.name]).extend(flat.tolist())
    return proto


# ----------------------------------------------------------------------- ModelSpec


@dataclass(frozen=True)
class ModelTarget:
    """What a ModelSpec asks for: a name, then a version number, a label, or neither (latest)."""

    name: str
    version: int | None = None
    label: str | None = None
    signature: str | None = None


def model_target(spec: model_pb2.ModelSpec) -> ModelTarget:
    """Read a ModelSpec. A numeric ``version_label`` counts as a version (perf_analyzer sends ``-x`` that way);
    an empty signature name means the default signature (None)."""
    if not spec.name:
        raise InvalidInput("Missing ModelSpec name")
    choice = spec.WhichOneof("version_choice")
    version: int | None = None
    label: str | None = None
    if choice == "version":
        version = int(spec.version.value)
    elif choice == "version_label" and spec.version_label:
        if spec.version_label.isascii() and spec.version_label.isdigit():
            version = int(spec.version_label)
        else:
            label = spec.version_label
    return ModelTarget(spec.name, version, label, spec.signature_name or None)


def model_spec(name: str, version: int | str, signature_name: str | None = None) -> model_pb2.ModelSpec:
    """The ModelSpec a response carries: the version served and the signature used (default filled in)."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name or DEFAULT_SIGNATURE)
    spec.version.value = int(version)
    return spec


# ------------------------------------------------------------------------- Predict


def decode_predict(
    request: predict_pb2.PredictRequest,
) -> tuple[ModelTarget, dict[str, np.ndarray], list[str] | None]:
    """PredictRequest -> (target, inputs, requested outputs or None for all)."""
    target = model_target(request.model_spec)
    inputs = {name: tensor_to_numpy(proto, name) for name, proto in request.inputs.items()}
    if not inputs:
        raise InvalidInput("PredictRequest has no inputs")
    wanted = list(request.output_filter)
    if len(set(wanted)) != len(wanted):
        raise InvalidInput(f"output_filter names an output more than once: {wanted}")
    return target, inputs, wanted or None


def encode_predict(
    outputs: Mapping[str, np.ndarray],
    name: str,
    version: int | str,
    signature_name: str | None = None,
    use_tensor_content: bool = False,
) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse(model_spec=model_spec(name, version, signature_name))
    for key, array in outputs.items():
        response.outputs[key].CopyFrom(numpy_to_tensor(array, use_tensor_content))
    return response


# ------------------------------------------------------------------------ metadata


def _tensor_info(spec: TensorSpec, tensor_name: str, unknown_rank: bool) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=tensor_name, dtype=DATATYPES[spec.datatype].tf)
    if unknown_rank:
        info.tensor_shape.unknown_rank = True
    else:
        info.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in spec.shape)
    return info


def signature_def(signature: Signature) -> meta_graph_pb2.SignatureDef:
    """A Signature as a SignatureDef (graph tensor names from ``extra`` when the runtime knows them)."""
    extra = signature.extra or {}
    unknown = set(extra.get("unknown_rank", ()))
    in_names = extra.get("input_tensor_names", {})
    out_names = extra.get("output_tensor_names", {})
    sig = meta_graph_pb2.SignatureDef(method_name=signature.method)
    for spec in signature.inputs:
        sig.inputs[spec.name].CopyFrom(
            _tensor_info(spec, in_names.get(spec.name, f"{spec.name}:0"), spec.name in unknown)
        )
    for spec in signature.outputs:
        sig.outputs[spec.name].CopyFrom(
            _tensor_info(spec, out_names.get(spec.name, f"{spec.name}:0"), spec.name in unknown)
        )
    return sig


def signature_def_map(signatures: Mapping[str, Signature]) -> get_model_metadata_pb2.SignatureDefMap:
    out = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in signatures.items():
        out.signature_def[key].CopyFrom(signature_def(signature))
    return out


def check_metadata_fields(fields: Sequence[str]) -> None:
    """GetModelMetadata supports exactly one field, ``signature_def``, as TF Serving does."""
    if not fields:
        raise InvalidInput("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise InvalidInput(f"Metadata field {field} is not supported")


def metadata_response(
    name: str, version: int | str, signatures: Mapping[str, Signature]
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """``metadata["signature_def"]`` = Any(SignatureDefMap); ``model_spec`` without a signature name."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = int(version)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_def_map(signatures))
    return response


# -------------------------------------------------------------------------- status


def status_response(
    versions: Sequence[tuple[int | str, str, str]],
) -> get_model_status_pb2.GetModelStatusResponse:
    """(version, TF Serving state name such as AVAILABLE, error message or "") per version."""
    states = get_model_status_pb2.ModelVersionStatus.State
    response = get_model_status_pb2.GetModelStatusResponse()
    for version, state, error in versions:
        entry = response.model_version_status.add()
        entry.version = int(version)
        entry.state = states.Value(state)
        entry.status.error_code = _STATUS_UNKNOWN if error else _STATUS_OK
        entry.status.error_message = error
    return response


# -------------------------------------------------------------- classify / regress


def examples_from_input(message: input_pb2.Input, what: str = "ClassificationRequest") -> np.ndarray:
    """Input -> object array [n] of serialized tf.Example bytes; with a context, each example is serialized
    after the context (proto merge: the example's own features win), as TF Serving feeds them."""
    kind = message.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in message.example_list.examples]
    elif kind == "example_list_with_context":
        context = message.example_list_with_context.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in message.example_list_with_context.examples]
    else:
        raise InvalidInput(f"{what}::input is empty.")
    if not serialized:
        raise InvalidInput(f"{what}::input is empty.")
    out = np.empty(len(serialized), dtype=object)
    out[:] = serialized
    return out


def classification_result(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> classification_pb2.ClassificationResult:
    result = classification_pb2.ClassificationResult()
    for row in classification_rows(outputs, num_examples):
        classes = result.classifications.add().classes
        for label, score in row:
            classes.add(label=label.decode("utf-8", "replace"), score=score)
    return result


def regression_result(outputs: Mapping[str, np.ndarray], num_examples: int) -> regression_pb2.RegressionResult:
    result = regression_pb2.RegressionResult()
    for value in regression_values(outputs, num_examples):
        result.regressions.add(value=value)
    return result


def classification_response(
    outputs: Mapping[str, np.ndarray], num_examples: int, name: str, version: int | str, signature: str | None
) -> classification_pb2.ClassificationResponse:
    return classification_pb2.ClassificationResponse(
        model_spec=model_spec(name, version, signature), result=classification_result(outputs, num_examples)
    )


def regression_response(
    outputs: Mapping[str, np.ndarray], num_examples: int, name: str, version: int | str, signature: str | None
) -> regression_pb2.RegressionResponse:
    return regression_pb2.RegressionResponse(
        model_spec=model_spec(name, version, signature), result=regression_result(outputs, num_examples)
    )
