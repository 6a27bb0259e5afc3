"""Protocol-neutral data: Tensor, InferRequest/InferResponse, and the V2 datatype table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gateway.core.errors import InvalidInput
from runtimes.datatype import NUMPY_DTYPES

if TYPE_CHECKING:
    from gateway.core.shared_memory import SharedInput

BF16 = NUMPY_DTYPES["BF16"]


@dataclass(frozen=True)
class Datatype:
    """One row of the datatype table: V2 name, numpy dtype, Triton config enum, TensorFlow DataType."""

    name: str
    numpy: np.dtype
    size: int  # bytes per element; 0 for BYTES
    triton: str
    tf: int
    tf_name: str


_TABLE = [
    Datatype(name, NUMPY_DTYPES.get(name, np.dtype(np.object_)), size, triton, tf, tf_name)
    for name, size, triton, tf, tf_name in (
        ("BOOL", 1, "TYPE_BOOL", 10, "DT_BOOL"),
        ("UINT8", 1, "TYPE_UINT8", 4, "DT_UINT8"),
        ("UINT16", 2, "TYPE_UINT16", 17, "DT_UINT16"),
        ("UINT32", 4, "TYPE_UINT32", 22, "DT_UINT32"),
        ("UINT64", 8, "TYPE_UINT64", 23, "DT_UINT64"),
        ("INT8", 1, "TYPE_INT8", 6, "DT_INT8"),
        ("INT16", 2, "TYPE_INT16", 5, "DT_INT16"),
        ("INT32", 4, "TYPE_INT32", 3, "DT_INT32"),
        ("INT64", 8, "TYPE_INT64", 9, "DT_INT64"),
        ("FP16", 2, "TYPE_FP16", 19, "DT_HALF"),
        ("FP32", 4, "TYPE_FP32", 1, "DT_FLOAT"),
        ("FP64", 8, "TYPE_FP64", 2, "DT_DOUBLE"),
        ("BYTES", 0, "TYPE_STRING", 7, "DT_STRING"),  # numpy object arrays of bytes
        ("BF16", 2, "TYPE_BF16", 14, "DT_BFLOAT16"),
    )
]
DATATYPES: dict[str, Datatype] = {d.name: d for d in _TABLE}
_BY_NUMPY: dict[np.dtype, Datatype] = {d.numpy: d for d in _TABLE}
_BY_NUMPY[np.dtype("S")] = DATATYPES["BYTES"]
_BY_TF: dict[int, Datatype] = {d.tf: d for d in _TABLE}
_BY_TF_NAME: dict[str, Datatype] = {d.tf_name: d for d in _TABLE}
_BY_TRITON: dict[str, Datatype] = {d.triton: d for d in _TABLE}


def datatype(name: str) -> Datatype:
    try:
        return DATATYPES[name]
    except KeyError:
        raise InvalidInput(f"unknown datatype {name!r}; expected one of {', '.join(DATATYPES)}") from None


def datatype_of(array: np.ndarray) -> Datatype:
    kind = array.dtype
    if kind.kind in ("S", "U", "O"):
        return DATATYPES["BYTES"]
    found = _BY_NUMPY.get(kind)
    if found is None:
        raise InvalidInput(f"numpy dtype {kind} has no V2 datatype")
    return found


def datatype_from_tf(code: int) -> Datatype | None:
    return _BY_TF.get(code)


def datatype_from_tf_name(name: str) -> Datatype | None:
    return _BY_TF_NAME.get(name)


def datatype_from_triton(name: str) -> Datatype | None:
    return _BY_TRITON.get(name)


class Tensor:
    """A name and a numpy array; datatype and shape are derived from the data, so they never disagree."""

    __slots__ = ("data", "name")

    def __init__(self, name: str, data: np.ndarray) -> None:
        self.name = name
        self.data = data

    @property
    def datatype(self) -> str:
        return datatype_of(self.data).name

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)

    def __repr__(self) -> str:
        return f"Tensor({self.name!r}, {self.datatype}, {self.shape})"


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    """A protocol-neutral inference request. ``deadline`` is a time.monotonic() instant, or None."""

    model: str
    inputs: list[Tensor]
    version: str | None = None
    id: str | None = None
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None
    deadline: float | None = None
    shared_inputs: list[SharedInput] = field(default_factory=list)  # inputs in shared memory, read by the DataPlane


@dataclass
class InferResponse:
    model: str
    version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    requested: Mapping[str, RequestedOutput] = field(default_factory=dict)
    signature: str | None = None  # the signature that served it (TF Serving names it in responses)
    shared_outputs: set[str] = field(default_factory=set)  # outputs written to shared memory: header only


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: Sequence[int]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = field(default_factory=dict)


def bytes_to_numpy(elements: Sequence[bytes], shape: Sequence[int]) -> np.ndarray:
    array = np.empty(len(elements), dtype=np.object_)
    array[:] = list(elements)
    return array.reshape(shape)


def element_count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count
