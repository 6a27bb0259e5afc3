"""TF Serving REST codec: predict row/columnar/b64 decoding and encoding, classify/regress, metadata, errors."""

from __future__ import annotations

import base64
import json
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from gateway.core.errors import InvalidInput
from gateway.rest import tfserving_codec as codec
from runtimes.base import CLASSIFY_METHOD, Signature, TensorSpec

X = TensorSpec("x", "FP32", (-1, 2))
IDS = TensorSpec("ids", "INT8", (-1,))
TEXT = TensorSpec("text", "BYTES", (-1,))
FLAG = TensorSpec("flag", "BOOL", (-1,))


def decode(body: Any, *specs: TensorSpec) -> codec.PredictRequest:
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    return codec.decode_predict(codec.loads(raw), specs)


def invalid(body: Any, *specs: TensorSpec) -> str:
    with pytest.raises(InvalidInput) as info:
        decode(body, *specs)
    return str(info.value)


# ------------------------------------------------------------------------------------------- predict request


def test_row_format_single_input() -> None:
    req = decode({"instances": [[1, 2], [3.5, 4]]}, X)
    assert req.row_format and req.signature_name is None
    assert req.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(req.inputs["x"], [[1, 2], [3.5, 4]])


def test_row_format_named_inputs() -> None:
    body = {"signature_name": "sig", "instances": [{"x": [1, 2], "ids": 3}, {"x": [5, 6], "ids": -4}]}
    req = decode(body, X, IDS)
    assert req.signature_name == "sig"
    assert req.inputs["ids"].dtype == np.int8
    assert req.inputs["ids"].tolist() == [3, -4]
    assert req.inputs["x"].shape == (2, 2)


def test_columnar_format() -> None:
    req = decode({"inputs": [[1, 2]]}, X)
    assert not req.row_format
    assert req.inputs["x"].shape == (1, 2)
    req = decode({"inputs": {"x": [[1, 2], [3, 4], [5, 6]], "ids": [1], "ignored": 0}}, X, IDS)
    assert req.inputs["x"].shape == (3, 2)  # columnar inputs may differ in dim 0
    assert req.inputs["ids"].shape == (1,)


def test_bytes_inputs_take_text_and_b64() -> None:
    raw = b"\x00\xffbinary"
    req = decode({"instances": [{"b64": base64.b64encode(raw).decode()}, "héllo"]}, TEXT)
    assert req.inputs["text"].dtype == object
    assert req.inputs["text"].tolist() == [raw, "héllo".encode()]
    req = decode({"inputs": {"b64": base64.b64encode(b"one").decode()}}, TEXT)
    assert req.inputs["text"].shape == ()
    assert req.inputs["text"].item() == b"one"
    nested = decode({"inputs": [["a", "b"], ["c", {"b64": "ZA=="}]]}, TensorSpec("t", "BYTES", (-1, -1)))
    assert nested.inputs["t"].tolist() == [[b"a", b"b"], [b"c", b"d"]]


def test_nan_and_infinity_literals() -> None:
    req = decode(b'{"instances": [[NaN, Infinity], [-Infinity, 1]]}', X)
    x = req.inputs["x"]
    assert np.isnan(x[0, 0]) and x[0, 1] == np.inf and x[1, 0] == -np.inf


def test_bool_input() -> None:
    assert decode({"inputs": [True, False]}, FLAG).inputs["flag"].tolist() == [True, False]


@pytest.mark.parametrize(
    ("body", "specs", "message"),
    [
        ({"instances": [[1, 2]], "inputs": [[1, 2]]}, (X,), "expecting only one of 'inputs' or 'instances' keys"),
        ({"signature_name": "s"}, (X,), "Missing 'inputs' or 'instances' key"),
        ({"instances": []}, (X,), "No values in 'instances' array"),
        ({"instances": {"x": 1}}, (X,), "Excepting 'instances' to be an list/array"),
        ({"instances": [[1, 2], [3]]}, (X,), "Expecting shape [2] but got: [1]"),
        ({"instances": [[1, 2]]}, (X, IDS), "instances is a plain list, but expecting list of objects"),
        ({"instances": [{"x": [1, 2]}]}, (X, IDS), "keys must be equal to: ids,x"),
        ({"instances": [{"x": [1, 2], "ids": 1, "y": 0}]}, (X, IDS), "does not have named input: y"),
        ({"instances": [{"x": [1, 2], "ids": 1}, [1, 2]]}, (X, IDS), "Expecting object but got list at item 1"),
        ({"instances": [[1, 2], {"x": [1, 2]}]}, (X,), "Expecting value/list but got object at item 1"),
        ({"inputs": [[1, 2]]}, (X, IDS), "inputs is a plain value/list, but expecting an object"),
        ({"inputs": {"x": [[1, 2]]}}, (X, IDS), "Missing named input: ids in 'inputs' object."),
        ({"inputs": [["a", "b"]]}, (X,), 'JSON Value: "a" Type: String is not of expected type: float'),
        ({"inputs": [[1, None]]}, (X,), "JSON Value: null Type: Null is not of expected type: float"),
        ({"inputs": [1.5]}, (IDS,), "JSON Value: 1.5 Type: Number is not of expected type: int8"),
        ({"inputs": [300]}, (IDS,), "JSON Value: 300 Type: Number is not of expected type: int8 (out of range)"),
        ({"inputs": [1]}, (FLAG,), "is not of expected type: bool"),
        ({"inputs": [[1, 2], [3]]}, (X,), "is not a dense tensor"),
        ({"inputs": [3]}, (TEXT,), "JSON Value: 3 Type: Number is not of expected type: string"),
        ({"inputs": [{"b64": "%%%"}]}, (TEXT,), "Unable to base64 decode"),
        ({"inputs": [["a"], "b"]}, (TEXT,), "found at incorrect level: 2"),
        ({"inputs": [["a"], ["b", "c"]]}, (TEXT,), "Encountered list at unexpected size: 2 at level: 1"),
        ({"inputs": [[1, 2]], "signature_name": 3}, (X,), "'signature_name' key must be a string value."),
    ],
)
def test_predict_errors(body: Any, specs: tuple[TensorSpec, ...], message: str) -> None:
    assert message in invalid(body, *specs)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "The document is empty"),
        (b"  ", "The document is empty"),
        (b"[1]", "Is not object"),
        (b"{", "JSON Parse error"),
    ],
)
def test_body_errors(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codec.loads(raw)


def test_parse_predict_with_known_signature() -> None:
    sig = Signature(inputs=(X,), outputs=(TensorSpec("y", "FP32", (-1,)),))
    req = codec.parse_predict(b'{"instances": [[1, 2]]}', sig)
    assert req.inputs["x"].tolist() == [[1.0, 2.0]]


# ------------------------------------------------------------------------------------------- predict response


def loads(raw: bytes) -> Any:
    return json.loads(raw)


def test_row_response_single_output_omits_its_name() -> None:
    out = codec.encode_predict({"y": np.array([[0.1, 2.0], [3.0, 4.5]], np.float32)}, row_format=True)
    assert loads(out) == {"predictions": [[0.1, 2.0], [3.0, 4.5]]}
    assert b"0.1," in out  # float32 0.1 is written as 0.1, not 0.10000000149011612


def test_row_response_several_outputs_gives_objects() -> None:
    outputs = {"y": np.array([1.5, 2.5], np.float32), "label_bytes": np.array([b"\x01", b"b"], dtype=object)}
    assert loads(codec.encode_predict(outputs, row_format=True)) == {
        "predictions": [{"y": 1.5, "label_bytes": {"b64": "AQ=="}}, {"y": 2.5, "label_bytes": {"b64": "Yg=="}}]
    }


def test_columnar_response() -> None:
    single = codec.encode_predict({"y": np.array([[1, 2]], np.int64)}, row_format=False)
    assert loads(single) == {"outputs": [[1, 2]]}
    several = codec.encode_predict({"a": np.array(3, np.int32), "b": np.array([True])}, row_format=False)
    assert loads(several) == {"outputs": {"a": 3, "b": [True]}}
    scalar = codec.encode_predict({"s": np.array(0.1, np.float32)}, row_format=False)
    assert scalar == b'{"outputs":0.1}'


def test_string_outputs_are_text_unless_named_bytes() -> None:
    outputs = {"word": np.array([b"caf\xc3\xa9", b"\xff"], dtype=object)}
    # Text when it is UTF-8; undecodable bytes fall back to a b64 object rather than invalid JSON.
    assert loads(codec.encode_predict(outputs, row_format=False)) == {"outputs": ["café", {"b64": "/w=="}]}
    named = {"word_bytes": np.array([b"caf\xc3\xa9"], dtype=object)}
    assert loads(codec.encode_predict(named, row_format=False)) == {"outputs": [{"b64": "Y2Fmw6k="}]}


def test_non_finite_outputs_use_tf_serving_literals() -> None:
    out = codec.encode_predict({"y": np.array([np.nan, np.inf, -np.inf, 0.1], np.float32)}, row_format=False)
    assert out == b'{"outputs":[NaN,Infinity,-Infinity,0.1]}'


def test_half_precision_outputs_are_widened() -> None:
    out = codec.encode_predict(
        {"h": np.array([0.5], np.float16), "b": np.array([1.5], ml_dtypes.bfloat16)}, row_format=False
    )
    assert loads(out) == {"outputs": {"h": [0.5], "b": [1.5]}}


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"s": np.array(1.0)}, "Tensor name: s has no shape information"),
        ({"a": np.zeros(2), "b": np.zeros(3)}, "Tensor name: b has inconsistent batch size: 3 expecting: 2"),
        ({}, "Cannot convert empty tensor map to JSON"),
    ],
)
def test_row_response_errors(outputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codec.encode_predict(outputs, row_format=True)


# ------------------------------------------------------------------------------------------- classify / regress


def _parse_examples(serialized: np.ndarray) -> list[Any]:
    from tensorflow.core.example import example_pb2

    out = []
    for raw in serialized:
        example = example_pb2.Example()
        example.ParseFromString(raw)
        out.append(example)
    return out


def test_examples_become_tf_examples_with_context() -> None:
    doc = codec.loads(
        json.dumps(
            {
                "signature_name": "classify",
                "context": {"lang": "en", "weight": 0.5},
                "examples": [
                    {"x": [1.0, 2], "n": 3, "flag": True, "raw": {"b64": "AAE="}},
                    {"x": 4.5, "lang": "fr", "tags": ["a", "b"]},
                ],
            }
        )
    )
    serialized = codec.decode_examples(doc)
    assert serialized.dtype == object and serialized.shape == (2,)
    first, second = _parse_examples(serialized)
    f1 = first.features.feature
    assert list(f1["x"].float_list.value) == [1.0, 2.0]  # an integer in a decimal list is taken as float
    assert list(f1["n"].int64_list.value) == [3]
    assert list(f1["flag"].int64_list.value) == [1]
    assert list(f1["raw"].bytes_list.value) == [b"\x00\x01"]
    assert list(f1["lang"].bytes_list.value) == [b"en"]  # from the context
    assert list(f1["weight"].float_list.value) == [0.5]
    f2 = second.features.feature
    assert list(f2["lang"].bytes_list.value) == [b"fr"]  # the example's own feature wins over the context
    assert list(f2["tags"].bytes_list.value) == [b"a", b"b"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "key 'examples' is expected and was not found"),
        ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": [[1]]}, "Example must be JSON object but got JSON Array"),
        ({"examples": [{"x": [[1]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": [1, "a"]}]}, "Unexpected element type in feature: x"),
        ({"examples": [{"x": 2**64}]}, "Only int64 is supported"),
        ({"examples": [{"x": 1.0}], "context": 3}, "Example must be JSON object"),
    ],
)
def test_example_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("(", r"\(")):
        codec.decode_examples(doc)


def test_classify_and_regress_results() -> None:
    outputs = {
        "classes": np.array([[b"a", b"b"], [b"a", b"b"]], dtype=object),
        "scores": np.array([[0.9, 0.1], [0.3, 0.7]], np.float32),
    }
    assert loads(codec.encode_classify(outputs, 2)) == {"results": [[["a", 0.9], ["b", 0.1]], [["a", 0.3], ["b", 0.7]]]}
    scores_only = loads(codec.encode_classify({"scores": outputs["scores"]}, 2))
    assert scores_only["results"][0] == [["", 0.9], ["", 0.1]]
    assert loads(codec.encode_regress({"outputs": np.array([[1.5], [0.1]], np.float32)}, 2)) == {"results": [1.5, 0.1]}
    assert codec.encode_regress({"outputs": np.array([np.nan], np.float32)}, 1) == b'{"results":[NaN]}'
    with pytest.raises(InvalidInput, match=r"Expected classes output batch size of 3\. Got: 2"):
        codec.encode_classify(outputs, 3)


# ------------------------------------------------------------------------------------------- metadata / status


def test_metadata_has_the_doubled_signature_def_key() -> None:
    sig = Signature(
        inputs=(TensorSpec("inputs", "BYTES", (-1,)),),
        outputs=(TensorSpec("scores", "FP32", (-1, 3)), TensorSpec("any", "FP32", (-1,))),
        name="classify",
        method=CLASSIFY_METHOD,
        extra={"input_tensor_names": {"inputs": "tf_example:0"}, "unknown_rank": ("any",)},
    )
    doc = loads(codec.encode_metadata("m", 3, {"classify": sig}))
    assert doc["model_spec"] == {"name": "m", "signature_name": "", "version": "3"}
    entry = doc["metadata"]["signature_def"]["signature_def"]["classify"]
    assert entry["method_name"] == "tensorflow/serving/classify"
    assert entry["inputs"]["inputs"] == {
        "dtype": "DT_STRING",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": "tf_example:0",
    }
    assert entry["outputs"]["scores"]["name"] == "scores:0"
    assert entry["outputs"]["scores"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}, {"size": "3", "name": ""}]
    assert entry["outputs"]["any"]["tensor_shape"] == {"dim": [], "unknown_rank": True}


def test_status_and_error_bodies() -> None:
    doc = loads(codec.encode_status([(2, "AVAILABLE", ""), (1, "END", "boom")]))
    assert doc == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "END", "status": {"error_code": "UNKNOWN", "error_message": "boom"}},
        ]
    }
    assert loads(codec.encode_error("Servable not found for request: Latest(x)")) == {
        "error": "Servable not found for request: Latest(x)"
    }
