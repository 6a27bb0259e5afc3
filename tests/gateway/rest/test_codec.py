"""V2 REST codec: JSON and binary-extension requests, compression, parameters, and response encoding."""

from __future__ import annotations

import gzip
import struct
import time
import zlib
from typing import Any

import ml_dtypes
import numpy as np
import orjson
import pytest

from gateway.core.errors import InvalidInput, PayloadTooLarge
from gateway.core.raw import to_raw as pack_bytes
from gateway.core.types import DATATYPES, InferResponse, RequestedOutput, Tensor
from gateway.rest.codec import compress, decode_request, decompress, encode_response

JSON_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"]
LIMIT = 1 << 20


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def one_input(data: Any, datatype: str = "FP32", shape: list[Any] | None = None, **extra: Any) -> bytes:
    item = {"name": "x", "datatype": datatype, "shape": shape if shape is not None else [2, 2], "data": data}
    return body({"inputs": [item], **extra})


def binary(inputs: list[tuple[str, str, list[int], bytes]], **extra: Any) -> tuple[bytes, str]:
    """A binary-extension body: JSON header, then the raw chunks in input order; returns (body, header)."""
    doc = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}}
            for n, d, s, raw in inputs
        ],
        **extra,
    }
    head = orjson.dumps(doc)
    return head + b"".join(raw for *_, raw in inputs), str(len(head))


def sample(datatype: str) -> np.ndarray:
    values = {
        "BOOL": [True, False, False, True],
        "FP32": [1.5, -2.25, 3e10, 0.0],
        "FP64": [1e300, -2.5, 0.1, 7.0],
        "FP16": [1.5, -2.0, 65504.0, 0.0],
        "BF16": [1.0, -2.5, 3.140625, 256.0],
    }
    dtype = DATATYPES[datatype].numpy
    if datatype in values:
        return np.array(values[datatype], dtype=dtype).reshape(2, 2)
    info = np.iinfo(dtype)
    return np.array([info.min, info.max, 0, 1], dtype=dtype).reshape(2, 2)


# -- JSON -------------------------------------------------------------------------------------------------------
def test_flat_and_nested_json_decode_alike() -> None:
    flat = decode_request(one_input([1, 2, 3, 4]), None, "m", None)
    nested = decode_request(one_input([[1, 2], [3, 4]]), None, "m", "3")
    for req in (flat, nested):
        (tensor,) = req.inputs
        assert tensor.name == "x" and tensor.datatype == "FP32" and tensor.shape == [2, 2]
        assert tensor.data.tolist() == [[1, 2], [3, 4]]
    assert (flat.model, flat.version, nested.version) == ("m", None, "3")


@pytest.mark.parametrize("datatype", JSON_TYPES)
def test_every_json_datatype(datatype: str) -> None:
    expected = sample(datatype)
    req = decode_request(one_input(expected.tolist(), datatype), None, "m", None)
    (tensor,) = req.inputs
    assert tensor.datatype == datatype
    assert tensor.data.dtype == DATATYPES[datatype].numpy
    np.testing.assert_array_equal(tensor.data, expected)


def test_bytes_json_are_utf8_strings() -> None:
    req = decode_request(one_input(["a", "ß", "", "x y"], "BYTES"), None, "m", None)
    data = req.inputs[0].data
    assert data.dtype == np.object_ and data.shape == (2, 2)
    assert data.tolist() == [[b"a", "ß".encode()], [b"", b"x y"]]
    with pytest.raises(InvalidInput, match="BYTES data must be strings"):
        decode_request(one_input([1, 2, 3, 4], "BYTES"), None, "m", None)


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_fp16_and_bf16_are_rejected_in_json(datatype: str) -> None:
    with pytest.raises(InvalidInput, match=f"{datatype} cannot be sent as JSON"):
        decode_request(one_input([1.0, 2.0, 3.0, 4.0], datatype), None, "m", None)


BAD_JSON: list[tuple[bytes, str | None]] = [
    (one_input([1, 2, 3]), "3 values given, shape [2, 2] needs 4"),
    (one_input([[1, 2, 3], [4, 5, 6]], shape=[3, 2]), "nested data has shape [2, 3], declared shape [3, 2]"),
    (one_input([[1, 2, 3], [4, 5, 6]], shape=[3, 2, 1]), "nested data has shape [2, 3]"),
    (one_input([[1, 2], [3]]), "not a valid FP32 array"),
    (one_input(["a", "b", "c", "d"]), "not a valid FP32 array"),
    (one_input([1, 0, 1, 0], "BOOL"), "BOOL data must be true/false"),
    (one_input([1, 2, 3, 4], "FLOAT"), "datatype 'FLOAT' is not one of"),
    (one_input([1, 2, 3, 4], shape=[-1, 4]), "'shape' must be a list of non-negative integers"),
    (one_input([1, 2, 3, 4], shape=[2.0, 2]), "'shape' must be a list of non-negative integers"),
    (one_input([1, 2, 3, 4], "INT8", shape=[4]), None),
    (body({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}), "neither 'data' nor"),
    (body({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}), "'name' must be a non-empty"),
    (body({"inputs": []}), "'inputs' must be a non-empty list"),
    (body({"inputs": {"x": 1}}), "'inputs' must be a non-empty list"),
    (body({"inputs": [3]}), "inputs[0] must be an object"),
    (body({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}]}), "not a valid INT8"),
    (one_input([1, 2, 3, 4], outputs={"name": "y"}), "'outputs' must be a list"),
    (one_input([1, 2, 3, 4], outputs=[{"name": 5}]), "outputs[0] must be an object"),
    (one_input([1, 2, 3, 4], parameters=[1]), "'parameters' must be an object"),
    (one_input([1, 2, 3, 4], parameters={"timeout": "soon"}), "parameters.timeout"),
    (one_input([1, 2, 3, 4], parameters={"timeout": -5}), "parameters.timeout"),
]


@pytest.mark.parametrize(("payload", "needle"), BAD_JSON, ids=[needle or "valid" for _, needle in BAD_JSON])
def test_bad_json_requests_are_invalid_input(payload: bytes, needle: str | None) -> None:
    if needle is None:  # a valid control case in the table keeps the table honest
        assert decode_request(payload, None, "m", None).inputs[0].data.tolist() == [1, 2, 3, 4]
        return
    with pytest.raises(InvalidInput) as caught:
        decode_request(payload, None, "m", None)
    assert needle in caught.value.message


@pytest.mark.parametrize("payload", [b"{", b"", b"not json", b'{"inputs": [1,]}'])
def test_malformed_json(payload: bytes) -> None:
    with pytest.raises(InvalidInput, match="malformed JSON"):
        decode_request(payload, None, "m", None)


@pytest.mark.parametrize("payload", [b"[]", b"3", b'"inputs"', b"null"])
def test_body_must_be_an_object(payload: bytes) -> None:
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        decode_request(payload, None, "m", None)


def test_shared_memory_input_is_left_to_the_dataplane() -> None:
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 8, "shared_memory_offset": 4}
    item = {"name": "x", "datatype": "FP32", "shape": [2], "parameters": params}
    req = decode_request(body({"inputs": [item]}), None, "m", None)
    assert req.inputs == []
    [shared] = req.shared_inputs
    assert (shared.name, shared.datatype, shared.shape) == ("x", "FP32", [2])
    assert (shared.where.region, shared.where.offset, shared.where.byte_size) == ("r", 4, 8)


@pytest.mark.parametrize(
    ("extra", "params", "message"),
    [
        ({}, {"shared_memory_region": "r"}, "needs shared_memory_byte_size"),
        ({"data": [1.0]}, {"shared_memory_region": "r", "shared_memory_byte_size": 4}, "exactly one of"),
        ({}, {"shared_memory_region": "r", "shared_memory_byte_size": -1}, "non-negative integer"),
        ({}, {"shared_memory_region": 7, "shared_memory_byte_size": 4}, "non-empty string"),
        ({"data": [1.0]}, {"shared_memory_byte_size": 4}, "without shared_memory_region"),
    ],
)
def test_shared_memory_parameters_are_checked(extra: dict, params: dict, message: str) -> None:
    item = {"name": "x", "datatype": "FP32", "shape": [1], "parameters": params, **extra}
    with pytest.raises(InvalidInput, match=message):
        decode_request(body({"inputs": [item]}), None, "m", None)


def test_parameters_id_and_requested_outputs() -> None:
    payload = one_input(
        [1, 2, 3, 4],
        id="req-7",
        model_name="m",
        parameters={"binary_data_output": True, "sequence_id": 3, "priority": 1, "made_up": {"a": 1}},
        outputs=[{"name": "y", "parameters": {"binary_data": False, "classification": 2}}, {"name": "z"}],
    )
    req = decode_request(payload, None, "m", None)
    assert req.id == "req-7"
    assert req.parameters["binary_data_output"] is True and req.parameters["made_up"] == {"a": 1}
    assert req.outputs == [
        RequestedOutput("y", {"binary_data": False, "classification": 2}),
        RequestedOutput("z", {}),
    ]
    assert req.deadline is None
    numeric = decode_request(one_input([1, 2, 3, 4], id=12), None, "m", None)
    assert numeric.id == "12"


def test_timeout_parameter_sets_a_deadline_in_microseconds() -> None:
    before = time.monotonic()
    req = decode_request(one_input([1, 2, 3, 4], parameters={"timeout": 2_500_000}), None, "m", None)
    after = time.monotonic()
    assert req.deadline is not None
    assert before + 2.5 <= req.deadline <= after + 2.5
    zero = decode_request(one_input([1, 2, 3, 4], parameters={"timeout": 0}), None, "m", None)
    assert zero.deadline is None


# -- binary extension -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("datatype", [*JSON_TYPES, "FP16", "BF16"])
def test_every_binary_datatype(datatype: str) -> None:
    expected = sample(datatype)
    payload, header = binary([("x", datatype, [2, 2], expected.tobytes())])
    (tensor,) = decode_request(payload, header, "m", None).inputs
    assert tensor.datatype == datatype
    assert tensor.data.dtype == DATATYPES[datatype].numpy
    np.testing.assert_array_equal(tensor.data, expected)


def test_bf16_binary_is_the_high_half_of_float32() -> None:
    values = np.array([1.0, -2.5, 3.140625, 256.0], dtype=np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    payload, header = binary([("x", "BF16", [4], raw)])
    (tensor,) = decode_request(payload, header, "m", None).inputs
    assert tensor.data.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(tensor.data.astype(np.float32), values)


def test_binary_is_zero_copy_and_bool_takes_any_nonzero_byte() -> None:
    x = np.arange(6, dtype=np.float32)
    payload, header = binary([("x", "FP32", [2, 3], x.tobytes()), ("b", "BOOL", [3], bytes([0, 1, 7]))])
    req = decode_request(payload, header, "m", None)
    assert not req.inputs[0].data.flags.owndata
    assert req.inputs[1].data.tolist() == [False, True, True]


def test_several_binary_inputs_in_order_beside_json() -> None:
    a = np.arange(4, dtype=np.int32)
    c = np.array([9, 8], dtype=np.uint64)
    strings = pack_bytes(np.array([b"hi", b"", b"there"], dtype=np.object_))
    doc = {
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [4], "parameters": {"binary_data_size": 16}},
            {"name": "j", "datatype": "FP64", "shape": [1], "data": [0.5]},
            {"name": "s", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(strings)}},
            {"name": "c", "datatype": "UINT64", "shape": [2], "parameters": {"binary_data_size": 16}},
        ]
    }
    head = orjson.dumps(doc)
    req = decode_request(head + a.tobytes() + strings + c.tobytes(), str(len(head)), "m", None)
    assert [t.name for t in req.inputs] == ["a", "j", "s", "c"]
    assert req.inputs[0].data.tolist() == [0, 1, 2, 3]
    assert req.inputs[1].data.tolist() == [0.5]
    assert req.inputs[2].data.tolist() == [b"hi", b"", b"there"]
    assert req.inputs[3].data.tolist() == [9, 8]


def test_bytes_binary_length_prefixes() -> None:
    raw = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0) + struct.pack("<I", 1) + b"\x00"
    payload, header = binary([("s", "BYTES", [3], raw)])
    assert decode_request(payload, header, "m", None).inputs[0].data.tolist() == [b"abc", b"", b"\x00"]
    for bad, needle in [
        (raw[:-1], "past the end"),
        (raw + b"\x01", "left over"),
        (raw[:9], "ends after 1 of 3"),
    ]:
        payload, header = binary([("s", "BYTES", [3], bad)])
        with pytest.raises(InvalidInput, match=needle):
            decode_request(payload, header, "m", None)


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("-1", "outside the request body"),
        ("100000", "outside the request body"),
        ("abc", "must be an integer"),
        ("1.5", "must be an integer"),
    ],
)
def test_bad_header_length(header: str, needle: str) -> None:
    payload, _ = binary([("x", "FP32", [1], b"\x00" * 4)])
    with pytest.raises(InvalidInput, match=needle):
        decode_request(payload, header, "m", None)


def test_binary_size_past_the_end_and_leftover_bytes() -> None:
    payload, header = binary([("x", "FP32", [2], b"\x00" * 8)])
    with pytest.raises(InvalidInput, match="runs past the end of the binary data"):
        decode_request(payload[:-1], header, "m", None)
    with pytest.raises(InvalidInput, match="1 bytes of binary data are not claimed"):
        decode_request(payload + b"\x00", header, "m", None)
    with pytest.raises(InvalidInput, match="runs past the end"):  # binary_data_size without a header length
        decode_request(payload[: int(header)], None, "m", None)
    wrong, header = binary([("x", "FP32", [3], b"\x00" * 8)])
    with pytest.raises(InvalidInput, match="8 bytes of FP32 data, shape \\[3\\] needs 12"):
        decode_request(wrong, header, "m", None)


@pytest.mark.parametrize("size", [-4, "8", 1.5])
def test_binary_data_size_must_be_a_non_negative_integer(size: Any) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": size}}]}
    head = orjson.dumps(doc)
    with pytest.raises(InvalidInput, match="binary_data_size must be a non-negative integer"):
        decode_request(head + b"\x00" * 8, str(len(head)), "m", None)


def test_header_length_zero_is_a_raw_single_input_request() -> None:
    x = np.arange(3, dtype=np.float32)
    req = decode_request(x.tobytes(), "0", "m", None, raw_input=("x", "FP32", [1, 3]))
    assert req.inputs[0].data.tolist() == [[0, 1, 2]]
    assert req.parameters == {"binary_data_output": True}
    with pytest.raises(InvalidInput, match="exactly one input"):
        decode_request(x.tobytes(), "0", "m", None)


# -- compression ------------------------------------------------------------------------------------------------
def test_gzip_and_deflate_bodies() -> None:
    plain = one_input([1, 2, 3, 4])
    for encoding, packed in [
        ("gzip", gzip.compress(plain)),
        ("GZip", gzip.compress(plain)),
        (" Deflate ", zlib.compress(plain)),
        ("Identity", plain),
        ("deflate", zlib.compress(plain)),
        ("identity", plain),
        (None, plain),
        ("", plain),
    ]:
        unpacked = decompress(packed, encoding, LIMIT)
        assert unpacked == plain
        assert decode_request(unpacked, None, "m", None).inputs[0].data.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("encoding", "payload", "needle"),
    [
        ("br", b"anything", "unsupported Content-Encoding 'br'"),
        ("compress", b"anything", "unsupported Content-Encoding"),
        ("gzip", b"not gzip at all", "not valid gzip data"),
        ("deflate", b"not zlib at all", "not valid deflate data"),
        ("gzip", zlib.compress(b"{}"), "not valid gzip data"),
        ("gzip", gzip.compress(b'{"inputs": []}', mtime=0)[:-8], "truncated gzip data"),
        ("gzip", gzip.compress(b'{"inputs": []}', mtime=0)[:-12], "truncated gzip data"),
        ("deflate", zlib.compress(b'{"inputs": []}')[:-4], "truncated deflate data"),
    ],
    ids=["br", "compress", "not-gzip", "not-zlib", "zlib-as-gzip", "gzip-no-trailer", "gzip-cut", "deflate-cut"],
)
def test_bad_encodings(encoding: str, payload: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        decompress(payload, encoding, LIMIT)


def test_decompressed_size_is_bounded() -> None:
    bomb = gzip.compress(b"\x00" * (LIMIT + 10))
    with pytest.raises(PayloadTooLarge) as caught:
        decompress(bomb, "gzip", LIMIT)
    assert caught.value.http_status == 413
    assert decompress(gzip.compress(b"\x00" * LIMIT), "gzip", LIMIT) == b"\x00" * LIMIT


def test_response_compression_follows_accept_encoding() -> None:
    plain = b'{"outputs": []}' * 10
    packed, encoding = compress(plain, "gzip, deflate;q=0.5")
    assert encoding == "gzip" and gzip.decompress(packed) == plain
    packed, encoding = compress(plain, "deflate")
    assert encoding == "deflate" and zlib.decompress(packed) == plain
    assert compress(plain, "br") == (plain, None)
    assert compress(plain, None) == (plain, None)


# -- responses --------------------------------------------------------------------------------------------------
def response(requested: dict[str, RequestedOutput] | None = None, **kw: Any) -> InferResponse:
    outputs = [
        Tensor("y", np.array([[1.5, 2.0]], dtype=np.float32)),
        Tensor("s", np.array([b"ab", "ç".encode()], dtype=np.object_)),
        Tensor("i", np.array([7], dtype=np.int64)),
    ]
    return InferResponse(model="m", version="2", outputs=outputs, requested=requested or {}, **kw)


def split(payload: bytes, json_length: int | None) -> tuple[dict[str, Any], bytes]:
    if json_length is None:
        return orjson.loads(payload), b""
    return orjson.loads(payload[:json_length]), payload[json_length:]


def test_json_outputs_have_no_parameters() -> None:
    payload, json_length = encode_response(response(id="r1"), binary_default=False)
    assert json_length is None
    doc, rest = split(payload, json_length)
    assert rest == b""
    assert doc == {
        "model_name": "m",
        "model_version": "2",
        "id": "r1",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["ab", "ç"]},
            {"name": "i", "datatype": "INT64", "shape": [1], "data": [7]},
        ],
    }


def test_binary_outputs_carry_sizes_and_the_json_length() -> None:
    payload, json_length = encode_response(response(), binary_default=True)
    assert json_length is not None
    doc, rest = split(payload, json_length)
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert all("data" not in o for o in doc["outputs"])
    y = np.frombuffer(rest[: sizes[0]], dtype=np.float32).reshape(1, 2)
    assert y.tolist() == [[1.5, 2.0]]
    strings = rest[sizes[0] : sizes[0] + sizes[1]]
    assert strings == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2) + "ç".encode()
    assert np.frombuffer(rest[sizes[0] + sizes[1] :], dtype=np.int64).tolist() == [7]
    assert sum(sizes) == len(rest)


def test_per_output_binary_data_overrides_the_request_default() -> None:
    requested = {"y": RequestedOutput("y", {"binary_data": True}), "i": RequestedOutput("i", {"binary_data": False})}
    payload, json_length = encode_response(response(requested), binary_default=False)
    doc, rest = split(payload, json_length)
    by_name = {o["name"]: o for o in doc["outputs"]}
    assert by_name["y"]["parameters"] == {"binary_data_size": 8} and "data" not in by_name["y"]
    assert "parameters" not in by_name["s"] and by_name["s"]["data"] == ["ab", "ç"]
    assert "parameters" not in by_name["i"]
    assert rest == np.array([1.5, 2.0], dtype=np.float32).tobytes()
    payload, json_length = encode_response(response(requested), binary_default=True)
    doc, rest = split(payload, json_length)
    assert [("parameters" in o) for o in doc["outputs"]] == [True, True, False]


def test_fp16_output_is_binary_or_widened_in_json() -> None:
    half = InferResponse("m", "1", [Tensor("h", np.array([0.5, 2.0], dtype=np.float16))])
    doc, _ = split(*encode_response(half, binary_default=False))
    assert doc["outputs"][0] == {"name": "h", "datatype": "FP16", "shape": [2], "data": [0.5, 2.0]}
    payload, json_length = encode_response(half, binary_default=True)
    _, rest = split(payload, json_length)
    assert np.frombuffer(rest, dtype=np.float16).tolist() == [0.5, 2.0]


def test_response_parameters_are_kept() -> None:
    payload, json_length = encode_response(response(parameters={"sequence_id": 4}), binary_default=False)
    assert split(payload, json_length)[0]["parameters"] == {"sequence_id": 4}


def test_pack_bytes() -> None:
    array = np.array([[b"a", b""], [b"bcd", "é"]], dtype=np.object_)
    assert pack_bytes(array) == b"".join(struct.pack("<I", len(p)) + p for p in [b"a", b"", b"bcd", "é".encode()])
