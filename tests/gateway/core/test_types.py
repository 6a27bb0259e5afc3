"""The V2 datatype table (numpy, Triton and TensorFlow names and numbers) and Tensor's derived fields."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from gateway.core.errors import InvalidInput
from gateway.core.types import (
    BF16,
    DATATYPES,
    Tensor,
    bytes_to_numpy,
    datatype,
    datatype_from_tf,
    datatype_from_tf_name,
    datatype_from_triton,
    datatype_of,
    element_count,
)

Row = tuple[str, int, Any, str, int, str, int]

# protocols.md §1: V2 name, bytes per element, numpy dtype, Triton TYPE_ enum and number, TF DataType and number
REFERENCE: list[Row] = [
    ("BOOL", 1, np.bool_, "TYPE_BOOL", 1, "DT_BOOL", 10),
    ("UINT8", 1, np.uint8, "TYPE_UINT8", 2, "DT_UINT8", 4),
    ("UINT16", 2, np.uint16, "TYPE_UINT16", 3, "DT_UINT16", 17),
    ("UINT32", 4, np.uint32, "TYPE_UINT32", 4, "DT_UINT32", 22),
    ("UINT64", 8, np.uint64, "TYPE_UINT64", 5, "DT_UINT64", 23),
    ("INT8", 1, np.int8, "TYPE_INT8", 6, "DT_INT8", 6),
    ("INT16", 2, np.int16, "TYPE_INT16", 7, "DT_INT16", 5),
    ("INT32", 4, np.int32, "TYPE_INT32", 8, "DT_INT32", 3),
    ("INT64", 8, np.int64, "TYPE_INT64", 9, "DT_INT64", 9),
    ("FP16", 2, np.float16, "TYPE_FP16", 10, "DT_HALF", 19),
    ("FP32", 4, np.float32, "TYPE_FP32", 11, "DT_FLOAT", 1),
    ("FP64", 8, np.float64, "TYPE_FP64", 12, "DT_DOUBLE", 2),
    ("BYTES", 0, np.object_, "TYPE_STRING", 13, "DT_STRING", 7),
    ("BF16", 2, ml_dtypes.bfloat16, "TYPE_BF16", 14, "DT_BFLOAT16", 14),
]


def test_table_has_all_fourteen_v2_types() -> None:
    assert list(DATATYPES) == [row[0] for row in REFERENCE]
    assert len(DATATYPES) == 14


@pytest.mark.parametrize("row", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_row_matches_the_protocol_reference(row: Row) -> None:
    name, size, numpy_type, triton, _triton_number, tf_name, tf_number = row
    entry = DATATYPES[name]
    assert entry.size == size
    assert entry.numpy == np.dtype(numpy_type)
    if size:
        assert entry.numpy.itemsize == size
    assert entry.triton == triton
    assert (entry.tf_name, entry.tf) == (tf_name, tf_number)
    assert datatype(name) is entry
    assert datatype_from_tf(tf_number) is entry
    assert datatype_from_tf_name(tf_name) is entry
    assert datatype_from_triton(triton) is entry


def test_triton_enum_numbers_match_the_generated_protos() -> None:
    from tritonclient.grpc import model_config_pb2

    for name, _size, _np, triton, number, _tf_name, _tf in REFERENCE:
        assert model_config_pb2.DataType.Value(triton) == number, name


@pytest.mark.parametrize("row", [r for r in REFERENCE if r[0] != "BYTES"], ids=lambda r: r[0])
def test_numpy_to_v2_and_back(row: Row) -> None:
    name, _size, numpy_type = row[:3]
    array = np.zeros((2, 3), dtype=numpy_type)
    assert datatype_of(array).name == name
    assert DATATYPES[name].numpy == array.dtype
    assert Tensor("t", array).datatype == name


@pytest.mark.parametrize(
    "array",
    [
        np.array([b"a", b"bc"], dtype=np.object_),
        np.array([b"a", b"bc"], dtype="S2"),
        np.array(["a", "bc"], dtype="U2"),
        bytes_to_numpy([b"x", b"", b"yz", b"\x00"], [2, 2]),
    ],
    ids=["object", "S", "U", "bytes_to_numpy"],
)
def test_string_arrays_are_bytes(array: np.ndarray) -> None:
    assert datatype_of(array).name == "BYTES"
    assert DATATYPES["BYTES"].numpy == np.dtype(np.object_)


def test_bytes_to_numpy_keeps_elements_and_shape() -> None:
    array = bytes_to_numpy([b"x", b"", b"yz", b"\x00"], [2, 2])
    assert array.dtype == np.object_
    assert array.tolist() == [[b"x", b""], [b"yz", b"\x00"]]


def test_bf16_is_ml_dtypes_bfloat16() -> None:
    assert np.dtype(ml_dtypes.bfloat16) == BF16
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bf16 = values.astype(BF16)
    assert datatype_of(bf16).name == "BF16"
    np.testing.assert_array_equal(bf16.astype(np.float32), values)  # exactly representable
    # protocols.md §1: BF16 bytes are the high 16 bits of the little-endian float32
    high = (values.view(np.uint32) >> 16).astype("<u2")
    assert bf16.tobytes() == high.tobytes()


@pytest.mark.parametrize("dtype", [np.complex64, np.float128 if hasattr(np, "float128") else np.complex128])
def test_dtypes_without_a_v2_type_are_rejected(dtype: type) -> None:
    with pytest.raises(InvalidInput, match="has no V2 datatype"):
        datatype_of(np.zeros(2, dtype=dtype))


def test_unknown_names_are_rejected_or_none() -> None:
    with pytest.raises(InvalidInput, match="unknown datatype 'FLOAT32'"):
        datatype("FLOAT32")
    assert datatype_from_tf(999) is None
    assert datatype_from_tf_name("DT_VARIANT") is None
    assert datatype_from_triton("TYPE_INVALID") is None


def test_tensor_derives_datatype_and_shape_from_data() -> None:
    tensor = Tensor("x", np.zeros((4, 2, 3), dtype=np.int16))
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", "INT16", [4, 2, 3])
    tensor.data = np.ones(5, dtype=np.float64)  # the fields follow the data, never disagree
    assert (tensor.datatype, tensor.shape) == ("FP64", [5])
    assert repr(tensor) == "Tensor('x', FP64, [5])"
    scalar = Tensor("s", np.array(True))
    assert (scalar.datatype, scalar.shape) == ("BOOL", [])


def test_element_count() -> None:
    assert element_count([]) == 1
    assert element_count([2, 3, 4]) == 24
    assert element_count([5, 0]) == 0
