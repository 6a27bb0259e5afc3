"""validate: a decoded request checked once against the resolved version's signature — input names, datatypes,
shapes (-1 is free), index values within the table they index, the batch dimension, requested outputs."""

from __future__ import annotations

import numpy as np

from gateway.core.errors import InvalidInput
from gateway.core.types import InferRequest
from gateway.lifecycle.model import ModelVersion


def validate(model: ModelVersion, request: InferRequest) -> tuple[dict[str, np.ndarray], list[str], int]:
    """(inputs by name, output names to return, rows in the batch: 1 for a model without a batch dimension)."""
    sig = model.signature_for(request.signature)
    free = sig.extra.get("unknown_rank", ()) if sig.extra else ()
    inputs: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = sig.input(tensor.name)
        if spec is None:
            expected = ", ".join(s.name for s in sig.inputs)
            raise InvalidInput(
                f"unexpected input {tensor.name!r} for model {model.name!r}; expected inputs: {expected}"
            )
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} is given more than once")
        data = tensor.data
        datatype = tensor.datatype
        if datatype != spec.datatype:
            raise InvalidInput(
                f"input {tensor.name!r} has datatype {datatype}, expected {spec.datatype} for model {model.name!r}"
            )
        shape = data.shape
        if tensor.name in free:
            pass  # unknown rank: any shape
        elif len(shape) != len(spec.shape) or any(e != -1 and e != d for e, d in zip(spec.shape, shape, strict=False)):
            raise InvalidInput(
                f"input {tensor.name!r} has shape {list(shape)}, expected {list(spec.shape)} "
                f"(-1 is any size) for model {model.name!r}"
            )
        if spec.values is not None and data.size:
            low, high = spec.values
            least, most = data.min(), data.max()
            if least < low or most >= high:
                raise InvalidInput(
                    f"input {tensor.name!r} holds {least if least < low else most}, outside [{low}, {high}): its "
                    f"values index a table of {high} rows in model {model.name!r}"
                )
        inputs[tensor.name] = data
    missing = [s.name for s in sig.inputs if s.name not in inputs]
    if missing:
        raise InvalidInput(f"missing input(s) {', '.join(repr(m) for m in missing)} for model {model.name!r}")
    rows = 1
    mbs = model.max_batch_size
    if mbs > 0 and inputs:
        batches = {a.shape[0] if a.ndim else 1 for a in inputs.values()}
        if len(batches) > 1:
            raise InvalidInput(f"inputs disagree on the batch dimension: {sorted(batches)}")
        rows = int(next(iter(batches)))
        if rows > mbs:
            raise InvalidInput(f"batch size {rows} exceeds max_batch_size {mbs} of model {model.name!r}")
    if request.outputs:
        names = []
        for out in request.outputs:
            if sig.output(out.name) is None:
                expected = ", ".join(s.name for s in sig.outputs)
                raise InvalidInput(
                    f"unknown output {out.name!r} requested from model {model.name!r}; expected one of: {expected}"
                )
            names.append(out.name)
    else:
        names = [s.name for s in sig.outputs]
    return inputs, names, rows
