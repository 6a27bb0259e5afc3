"""V2 gRPC codec: ModelInferRequest/Response <-> InferRequest/InferResponse (zero-copy raw contents)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gateway.core.errors import InvalidInput
from gateway.core.raw import from_raw, to_raw
from gateway.core.shared_memory import REGION, SharedInput, shared_slice
from gateway.core.types import DATATYPES, InferRequest, InferResponse, RequestedOutput, Tensor, element_count
from gateway.grpc.protos import service_pb2

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def param_value(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def set_param(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def decode_request(msg: Any, deadline: float | None) -> InferRequest:
    raw = msg.raw_input_contents
    in_memory = sum(1 for inp in msg.inputs if REGION not in inp.parameters)  # shared-memory inputs have no raw entry
    if raw and len(raw) != in_memory:
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {in_memory} inputs (not counting inputs in shared "
            "memory); send all of them raw or none"
        )
    tensors: list[Tensor] = []
    shared: list[SharedInput] = []
    next_raw = 0
    for inp in msg.inputs:
        name, datatype, shape = inp.name, inp.datatype, list(inp.shape)
        if datatype not in DATATYPES:
            raise InvalidInput(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        if any(d < 0 for d in shape):
            raise InvalidInput(f"input {name!r}: shape {shape} has a negative dimension")
        if REGION in inp.parameters:
            if inp.HasField("contents"):
                raise InvalidInput(f"input {name!r}: send either contents or shared_memory_region, not both")
            params = {k: param_value(v) for k, v in inp.parameters.items()}
            where = shared_slice(params, f"input {name!r}")
            assert where is not None
            shared.append(SharedInput(name, datatype, shape, where))
            continue
        count = element_count(shape)
        if raw:
            if inp.HasField("contents"):
                raise InvalidInput(f"input {name!r}: send either contents or raw_input_contents, not both")
            array = from_raw(raw[next_raw], name, datatype, shape)
            next_raw += 1
        else:
            array = _from_contents(inp.contents, name, datatype, shape, count)
        tensors.append(Tensor(name, array))
    outputs = None
    if msg.outputs:
        outputs = [RequestedOutput(o.name, {k: param_value(v) for k, v in o.parameters.items()}) for o in msg.outputs]
        for out in outputs:
            shared_slice(out.parameters, f"output {out.name!r}")  # complete and well-typed (the DataPlane reads it)
    params = {k: param_value(v) for k, v in msg.parameters.items()}
    request = InferRequest(
        model=msg.model_name,
        version=msg.model_version or None,
        id=msg.id or None,
        inputs=tensors,
        outputs=outputs,
        parameters=params,
        deadline=deadline,
        shared_inputs=shared,
    )
    timeout = params.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0):
        raise InvalidInput("parameters.timeout must be a non-negative number of microseconds")
    if isinstance(timeout, int | float) and timeout > 0:
        own = time.monotonic() + timeout / 1e6
        request.deadline = own if deadline is None else min(deadline, own)
    return request


def _from_contents(contents: Any, name: str, datatype: str, shape: list[int], count: int) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} must be sent in raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInput(f"input {name!r}: {len(values)} values in {field}, shape {shape} needs {count}")
    if datatype == "BYTES":
        out = np.empty(count, dtype=np.object_)
        out[:] = list(values)
        return out.reshape(shape)
    try:
        array = np.asarray(values, dtype=DATATYPES[datatype].numpy)
    except OverflowError as exc:  # int_contents / uint_contents are wider than INT8/16 and UINT8/16
        raise InvalidInput(f"input {name!r}: a value in {field} does not fit {datatype}: {exc}") from None
    return array.reshape(shape)


def encode_response(response: InferResponse) -> Any:
    msg = service_pb2.ModelInferResponse(
        model_name=response.model, model_version=response.version, id=response.id or ""
    )
    for tensor in response.outputs:
        out = msg.outputs.add()
        out.name = tensor.name
        out.datatype = tensor.datatype
        out.shape.extend(tensor.data.shape)
        # an output in the client's shared memory keeps its (empty) place: clients index raw contents by output
        msg.raw_output_contents.append(b"" if tensor.name in response.shared_outputs else to_raw(tensor.data))
    for key, value in response.parameters.items():
        set_param(msg.parameters[key], value)
    return msg
