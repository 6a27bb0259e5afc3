"""V2 gRPC codec: raw and typed input contents, their errors, and raw output contents in order."""

from __future__ import annotations

import struct
import time
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from gateway.core.errors import InvalidInput
from gateway.core.raw import to_raw as pack
from gateway.core.raw import unpack_bytes
from gateway.core.types import DATATYPES, InferResponse, RequestedOutput, Tensor
from gateway.grpc.codec import decode_request, encode_response, param_value, set_param
from gateway.grpc.protos import service_pb2

TYPED: dict[str, tuple[str, list[Any]]] = {
    "BOOL": ("bool_contents", [True, False, True, True]),
    "UINT8": ("uint_contents", [0, 255, 7, 1]),
    "UINT16": ("uint_contents", [0, 65535, 7, 1]),
    "UINT32": ("uint_contents", [0, 2**32 - 1, 7, 1]),
    "UINT64": ("uint64_contents", [0, 2**64 - 1, 7, 1]),
    "INT8": ("int_contents", [-128, 127, 0, -1]),
    "INT16": ("int_contents", [-32768, 32767, 0, -1]),
    "INT32": ("int_contents", [-(2**31), 2**31 - 1, 0, -1]),
    "INT64": ("int64_contents", [-(2**63), 2**63 - 1, 0, -1]),
    "FP32": ("fp32_contents", [1.5, -2.25, 3e10, 0.0]),
    "FP64": ("fp64_contents", [1e300, -2.5, 0.1, 7.0]),
    "BYTES": ("bytes_contents", [b"a", b"", b"\x00\xff", "é".encode()]),
}


def infer_request(*inputs: tuple[str, str, list[int]], raw: list[bytes] | None = None, **kw: Any) -> Any:
    msg = service_pb2.ModelInferRequest(model_name="m", **kw)
    for name, datatype, shape in inputs:
        msg.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw is not None:
        msg.raw_input_contents.extend(raw)
    return msg


def root_base(array: np.ndarray) -> Any:
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base


def test_all_fourteen_datatypes_are_covered() -> None:
    assert set(TYPED) | {"FP16", "BF16"} == set(DATATYPES)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d not in ("BYTES", "BOOL")])
def test_raw_contents_are_zero_copy(datatype: str) -> None:
    expected = np.arange(6).astype(DATATYPES[datatype].numpy).reshape(2, 3)
    msg = infer_request(("x", datatype, [2, 3]), raw=[expected.tobytes()])
    (tensor,) = decode_request(msg, None).inputs
    assert tensor.datatype == datatype
    np.testing.assert_array_equal(tensor.data, expected)
    assert not tensor.data.flags.owndata
    assert not tensor.data.flags.writeable  # a view of the message bytes, not a copy
    assert isinstance(root_base(tensor.data), bytes)


def test_raw_bool_and_bytes() -> None:
    strings = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    msg = infer_request(("b", "BOOL", [3]), ("s", "BYTES", [2]), raw=[bytes([0, 1, 9]), strings])
    b, s = decode_request(msg, None).inputs
    assert b.data.dtype == np.bool_ and b.data.tolist() == [False, True, True]
    assert s.data.dtype == np.object_ and s.data.tolist() == [b"hi", b""]


def test_raw_bf16_and_fp16() -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    half = values.astype(np.float16).tobytes()
    msg = infer_request(("b", "BF16", [3]), ("h", "FP16", [3]), raw=[bf16, half])
    b, h = decode_request(msg, None).inputs
    assert b.data.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(b.data.astype(np.float32), values)
    np.testing.assert_array_equal(h.data.astype(np.float32), values)


@pytest.mark.parametrize("datatype", sorted(TYPED))
def test_typed_contents_for_each_datatype(datatype: str) -> None:
    field, values = TYPED[datatype]
    msg = infer_request(("x", datatype, [2, 2]))
    getattr(msg.inputs[0].contents, field).extend(values)
    (tensor,) = decode_request(msg, None).inputs
    assert tensor.datatype == datatype
    assert tensor.shape == [2, 2]
    if datatype == "BYTES":
        assert tensor.data.tolist() == [values[:2], values[2:]]
    else:
        assert tensor.data.dtype == DATATYPES[datatype].numpy
        expected = np.array(values, dtype=DATATYPES[datatype].numpy).reshape(2, 2)
        np.testing.assert_array_equal(tensor.data, expected)


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_types_in_typed_contents_are_rejected(datatype: str) -> None:
    msg = infer_request(("x", datatype, [1]))
    msg.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match=f"{datatype} must be sent in raw_input_contents"):
        decode_request(msg, None)


@pytest.mark.parametrize(
    ("datatype", "field", "value"),
    [
        ("UINT8", "uint_contents", 256),
        ("UINT16", "uint_contents", 70000),
        ("INT8", "int_contents", -129),
        ("INT16", "int_contents", 40000),
    ],
)
def test_typed_values_that_do_not_fit_are_invalid_input(datatype: str, field: str, value: int) -> None:
    msg = infer_request(("x", datatype, [1]))
    getattr(msg.inputs[0].contents, field).append(value)
    with pytest.raises(InvalidInput, match=f"does not fit {datatype}"):
        decode_request(msg, None)


def test_typed_count_mismatch() -> None:
    msg = infer_request(("x", "FP32", [2, 2]))
    msg.inputs[0].contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with pytest.raises(InvalidInput, match="3 values in fp32_contents, shape \\[2, 2\\] needs 4"):
        decode_request(msg, None)
    wrong_field = infer_request(("x", "FP32", [1]))
    wrong_field.inputs[0].contents.int_contents.append(1)
    with pytest.raises(InvalidInput, match="0 values in fp32_contents"):
        decode_request(wrong_field, None)


def test_raw_count_must_match_inputs() -> None:
    msg = infer_request(("a", "FP32", [1]), ("b", "FP32", [1]), raw=[b"\x00" * 4])
    with pytest.raises(InvalidInput, match="raw_input_contents has 1 entries for 2 inputs"):
        decode_request(msg, None)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "needle"),
    [
        ("FP32", [2], b"\x00" * 7, "7 bytes of FP32 data, shape [2] needs 8"),
        ("BYTES", [2], struct.pack("<I", 1) + b"a", "ends after 1 of 2"),
        ("BYTES", [1], struct.pack("<I", 5) + b"a", "past the end of the data"),
        ("BYTES", [1], struct.pack("<I", 1) + b"ab", "1 bytes left over"),
        ("FLOAT", [1], b"\x00" * 4, "datatype 'FLOAT' is not one of"),
        ("FP32", [-1], b"", "negative dimension"),
    ],
    ids=["short", "bytes-ends", "bytes-past-end", "bytes-leftover", "datatype", "negative-dim"],
)
def test_bad_raw_inputs(datatype: str, shape: list[int], raw: bytes, needle: str) -> None:
    msg = infer_request(("x", datatype, shape), raw=[raw])
    with pytest.raises(InvalidInput) as caught:
        decode_request(msg, None)
    assert needle in caught.value.message


def test_parameters_outputs_id_and_deadlines() -> None:
    msg = infer_request(("x", "FP32", [1]), raw=[b"\x00" * 4], model_version="3", id="r9")
    set_param(msg.parameters["sequence_id"], 5)
    set_param(msg.parameters["flag"], True)
    set_param(msg.parameters["ratio"], 0.5)
    set_param(msg.parameters["who"], "me")
    out = msg.outputs.add(name="y")
    set_param(out.parameters["classification"], 2)
    req = decode_request(msg, None)
    assert (req.model, req.version, req.id) == ("m", "3", "r9")
    assert req.parameters == {"sequence_id": 5, "flag": True, "ratio": 0.5, "who": "me"}
    assert req.outputs == [RequestedOutput("y", {"classification": 2})]
    assert req.deadline is None
    soon = time.monotonic() + 1.0
    assert decode_request(msg, soon).deadline == soon
    set_param(msg.parameters["timeout"], 100_000)  # microseconds, shorter than the call deadline
    limited = decode_request(msg, soon).deadline
    assert limited is not None and limited < soon
    bare = decode_request(infer_request(("x", "FP32", [1]), raw=[b"\x00" * 4]), None)
    assert (bare.version, bare.id, bare.outputs) == (None, None, None)


def test_param_value_of_an_empty_parameter_is_none() -> None:
    assert param_value(service_pb2.InferParameter()) is None


def test_outputs_are_always_raw_in_order() -> None:
    outputs = [
        Tensor("y", np.array([[1.5, 2.0]], dtype=np.float32)),
        Tensor("s", np.array([b"ab", b""], dtype=np.object_)),
        Tensor("b", np.array([True, False])),
        Tensor("h", np.array([0.5], dtype=np.float16)),
    ]
    msg = encode_response(InferResponse("m", "2", outputs, id="r1", parameters={"sequence_id": 4}))
    assert (msg.model_name, msg.model_version, msg.id) == ("m", "2", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in msg.outputs] == [
        ("y", "FP32", [1, 2]),
        ("s", "BYTES", [2]),
        ("b", "BOOL", [2]),
        ("h", "FP16", [1]),
    ]
    assert len(msg.raw_output_contents) == len(msg.outputs)
    assert all(not o.HasField("contents") for o in msg.outputs)
    y, s, b, h = msg.raw_output_contents
    assert np.frombuffer(y, dtype=np.float32).tolist() == [1.5, 2.0]
    assert s == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    assert b == b"\x01\x00"
    assert np.frombuffer(h, dtype=np.float16).tolist() == [0.5]
    assert param_value(msg.parameters["sequence_id"]) == 4


def test_bytes_length_prefixes_round_trip() -> None:
    array = np.array([[b"a", b""], [b"bcd", "é".encode()]], dtype=np.object_)
    packed = pack(array)
    assert packed == b"".join(struct.pack("<I", len(p)) + p for p in [b"a", b"", b"bcd", "é".encode()])
    assert unpack_bytes(packed, "s", [2, 2], 4).tolist() == array.tolist()
    assert pack(np.array(["x"], dtype="U1")) == struct.pack("<I", 1) + b"x"


def test_non_contiguous_outputs_are_packed_row_major() -> None:
    array = np.arange(6, dtype=np.int32).reshape(2, 3).T
    assert np.frombuffer(pack(array), dtype=np.int32).tolist() == [0, 3, 1, 4, 2, 5]


def _shared(tensor: Any, region: str, byte_size: int, offset: int = 0) -> None:
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = byte_size
    if offset:
        tensor.parameters["shared_memory_offset"].int64_param = offset


def test_shared_memory_inputs_take_no_raw_entry() -> None:
    msg = service_pb2.ModelInferRequest(model_name="m")
    msg.inputs.add(name="a", datatype="FP32", shape=[2])
    _shared(msg.inputs[0], "r", 8, offset=4)
    msg.inputs.add(name="b", datatype="FP32", shape=[2])
    msg.raw_input_contents.append(np.array([1, 2], np.float32).tobytes())  # b's: the only raw entry
    msg.outputs.add(name="y")
    _shared(msg.outputs[0], "out", 8)
    request = decode_request(msg, None)
    [shared] = request.shared_inputs
    assert (shared.name, shared.where.region, shared.where.offset, shared.where.byte_size) == ("a", "r", 4, 8)
    np.testing.assert_array_equal(request.inputs[0].data, [1, 2])
    assert request.outputs is not None and request.outputs[0].parameters["shared_memory_region"] == "out"
    msg.raw_input_contents.append(b"\0" * 8)  # one per input, shared ones included: one too many
    with pytest.raises(InvalidInput, match="not counting inputs in shared memory"):
        decode_request(msg, None)


def test_shared_memory_output_keeps_an_empty_raw_entry() -> None:
    response = InferResponse("m", "1", [Tensor("y", np.ones(2, np.float32)), Tensor("z", np.ones(2, np.float32))])
    response.shared_outputs.add("y")
    msg = encode_response(response)
    assert [o.name for o in msg.outputs] == ["y", "z"] and list(msg.outputs[0].shape) == [2]
    assert [len(raw) for raw in msg.raw_output_contents] == [0, 8]
