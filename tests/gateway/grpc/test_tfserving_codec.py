"""TF Serving gRPC codec: TensorProto both encodings (tf.make_tensor_proto, perf_analyzer's typed *_val), ModelSpec,
SignatureDefMap metadata, classify/regress results, model status."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
)

from gateway.core.errors import InvalidInput
from gateway.grpc import tfserving_codec as codec
from runtimes.base import PREDICT_METHOD, REGRESS_METHOD, Signature, TensorSpec

NUMERIC = [np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _sample(dtype: type) -> np.ndarray:
    values = np.array([[0, 1, 2], [3, 100, 7]])
    if np.dtype(dtype).kind == "i":
        values[1, 2] = -7
    return values.astype(dtype)


def _proto(dtype: int, dims: list[int], **fields: list) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    for field, values in fields.items():
        getattr(proto, field).extend(values)
    return proto


# ------------------------------------------------------------------------------------------- TensorProto


@pytest.mark.parametrize("dtype", [*NUMERIC, np.float16, np.bool_])
def test_make_tensor_proto_round_trip(dtype: type) -> None:
    array = _sample(dtype) if dtype is not np.bool_ else np.array([[True, False, True]])
    proto = tf.make_tensor_proto(array)
    got = codec.tensor_to_numpy(proto, "x")
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("use_tensor_content", [False, True])
@pytest.mark.parametrize("dtype", [*NUMERIC, np.float16, np.bool_])
def test_encoded_tensors_read_back_with_make_ndarray(dtype: type, use_tensor_content: bool) -> None:
    array = _sample(dtype) if dtype is not np.bool_ else np.array([[True, False, True]])
    proto = codec.numpy_to_tensor(array, use_tensor_content)
    assert bool(proto.tensor_content) == use_tensor_content
    back = tf.make_ndarray(proto)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(codec.tensor_to_numpy(proto), array)


def test_bfloat16_both_ways() -> None:
    array = np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16)
    for use_tensor_content in (False, True):
        proto = codec.numpy_to_tensor(array, use_tensor_content)
        assert proto.dtype == types_pb2.DT_BFLOAT16
        np.testing.assert_array_equal(tf.make_ndarray(proto).astype(np.float32), array.astype(np.float32))
        np.testing.assert_array_equal(codec.tensor_to_numpy(proto), array)


def test_strings_use_string_val() -> None:
    array = np.array([[b"a\x00b", b""], [b"\xff", "é"]], dtype=object)
    proto = codec.numpy_to_tensor(array, use_tensor_content=True)
    assert not proto.tensor_content
    assert list(proto.string_val) == [b"a\x00b", b"", b"\xff", "é".encode()]
    assert tf.make_ndarray(proto).tolist() == [[b"a\x00b", b""], [b"\xff", "é".encode()]]
    got = codec.tensor_to_numpy(tf.make_tensor_proto(array.astype(object)))
    assert got.dtype == object
    assert got.tolist() == [[b"a\x00b", b""], [b"\xff", "é".encode()]]


def test_typed_values_the_way_perf_analyzer_sends_them() -> None:
    """perf_analyzer's tfserving client: typed *_val fields; INT64 lands in bool_val; INT8/INT16/FP16 values are
    memcpy'd into uninitialised int32s, so their high bytes may hold garbage."""
    fp32 = codec.tensor_to_numpy(_proto(types_pb2.DT_FLOAT, [1, 3], float_val=[0.5, -1.0, 2.0]))
    assert fp32.dtype == np.float32 and fp32.tolist() == [[0.5, -1.0, 2.0]]
    int64 = codec.tensor_to_numpy(_proto(types_pb2.DT_INT64, [2], bool_val=[True, False]))
    assert int64.dtype == np.int64 and int64.tolist() == [1, 0]
    garbage = 0x5A5A0000
    int16 = codec.tensor_to_numpy(_proto(types_pb2.DT_INT16, [2], int_val=[garbage | 0xFFFF, garbage | 0x0102]))
    assert int16.dtype == np.int16 and int16.tolist() == [-1, 0x0102]
    int8 = codec.tensor_to_numpy(_proto(types_pb2.DT_INT8, [2], int_val=[0xFA7A7AFE - 2**32, 0x12345605]))
    assert int8.dtype == np.int8 and int8.tolist() == [-2, 5]
    half_bits = np.array([1.5, -0.25], np.float16).view(np.uint16).astype(np.int64)
    fp16 = codec.tensor_to_numpy(_proto(types_pb2.DT_HALF, [2], half_val=[int(b) | garbage for b in half_bits]))
    assert fp16.dtype == np.float16 and fp16.tolist() == [1.5, -0.25]
    text = codec.tensor_to_numpy(_proto(types_pb2.DT_STRING, [2], string_val=[b"x", b"yz"]))
    assert text.tolist() == [b"x", b"yz"]
    u32 = codec.tensor_to_numpy(_proto(types_pb2.DT_UINT32, [1], uint32_val=[2**32 - 1]))
    assert u32.dtype == np.uint32 and u32.tolist() == [2**32 - 1]
    flags = codec.tensor_to_numpy(_proto(types_pb2.DT_BOOL, [3], bool_val=[True, False, True]))
    assert flags.dtype == np.bool_ and flags.tolist() == [True, False, True]


def test_fewer_values_repeat_the_last_and_none_give_zeros() -> None:
    single = codec.tensor_to_numpy(_proto(types_pb2.DT_FLOAT, [2, 3], float_val=[7.0]))
    np.testing.assert_array_equal(single, np.full((2, 3), 7.0, np.float32))
    partial = codec.tensor_to_numpy(_proto(types_pb2.DT_INT32, [4], int_val=[1, 2]))
    assert partial.tolist() == [1, 2, 2, 2]
    assert codec.tensor_to_numpy(_proto(types_pb2.DT_DOUBLE, [2])).tolist() == [0.0, 0.0]
    assert codec.tensor_to_numpy(_proto(types_pb2.DT_STRING, [2], string_val=[b"s"])).tolist() == [b"s", b"s"]
    scalar = codec.tensor_to_numpy(_proto(types_pb2.DT_FLOAT, [], float_val=[3.0]))
    assert scalar.shape == () and scalar.item() == 3.0
    # TensorFlow reads the same protos the same way.
    np.testing.assert_array_equal(tf.make_ndarray(_proto(types_pb2.DT_INT32, [4], int_val=[1, 2])), partial)


def test_tensor_content_is_zero_copy() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = codec.tensor_to_numpy(tf.make_tensor_proto(array))
    assert not got.flags.writeable  # a view on the request bytes
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (_proto(types_pb2.DT_FLOAT, [2], float_val=[1, 2, 3]), "3 values in float_val for shape [2]"),
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 5), "holds 5 bytes"),
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_COMPLEX64), "unsupported dtype 8"),
        (tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"ab"), "go in string_val"),
        (_proto(types_pb2.DT_FLOAT, [-1]), "negative dimension"),
    ],
)
def test_bad_tensor_protos(proto: tensor_pb2.TensorProto, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[")):
        codec.tensor_to_numpy(proto, "x")


def test_unknown_rank_is_refused() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(InvalidInput, match="unknown rank"):
        codec.tensor_to_numpy(proto, "x")


# ------------------------------------------------------------------------------------------- Predict / ModelSpec


def test_model_spec_choices() -> None:
    spec = model_pb2.ModelSpec(name="m")
    assert codec.model_target(spec) == codec.ModelTarget("m")
    spec.version.value = 3
    spec.signature_name = "sig"
    assert codec.model_target(spec) == codec.ModelTarget("m", version=3, signature="sig")
    # perf_analyzer sends -x as a version label even when it is a number.
    assert codec.model_target(model_pb2.ModelSpec(name="m", version_label="2")) == codec.ModelTarget("m", version=2)
    assert codec.model_target(model_pb2.ModelSpec(name="m", version_label="canary")).label == "canary"
    with pytest.raises(InvalidInput, match="Missing ModelSpec name"):
        codec.model_target(model_pb2.ModelSpec())


def test_predict_request_and_response() -> None:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m", version_label="1"))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((2, 3), np.float32)))
    request.inputs["t"].CopyFrom(_proto(types_pb2.DT_STRING, [1], string_val=[b"a"]))
    request.output_filter.append("y")
    target, inputs, outputs = codec.decode_predict(request)
    assert target == codec.ModelTarget("m", version=1)
    assert set(inputs) == {"x", "t"} and inputs["x"].shape == (2, 3)
    assert outputs == ["y"]
    response = codec.encode_predict({"y": np.array([[0.5, 1.5]], np.float32)}, "m", 1)
    assert response.model_spec.name == "m" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs["y"].float_val) == [0.5, 1.5]  # typed, as TF Serving replies
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [[0.5, 1.5]])
    raw = codec.encode_predict({"y": np.zeros(2, np.float32)}, "m", 1, "sig", use_tensor_content=True)
    assert raw.outputs["y"].tensor_content and raw.model_spec.signature_name == "sig"
    with pytest.raises(InvalidInput, match="no inputs"):
        codec.decode_predict(predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m")))


# ------------------------------------------------------------------------------------------- metadata / status


def test_metadata_response_packs_a_signature_def_map() -> None:
    sigs = {
        "serving_default": Signature(
            inputs=(TensorSpec("pixels", "FP32", (-1, 784)),),
            outputs=(TensorSpec("output_0", "FP32", (-1, 10)), TensorSpec("free", "INT64", (-1,))),
            extra={"input_tensor_names": {"pixels": "serving_default_pixels:0"}, "unknown_rank": ("free",)},
        ),
        "regress": Signature(
            inputs=(TensorSpec("inputs", "BYTES", (-1,)),),
            outputs=(TensorSpec("outputs", "FP32", (-1, 1)),),
            name="regress",
            method=REGRESS_METHOD,
        ),
    }
    response = codec.metadata_response("mlp", 2, sigs)
    assert response.model_spec.name == "mlp" and response.model_spec.version.value == 2
    packed = response.metadata["signature_def"]
    assert packed.type_url == codec.SIGNATURE_DEF_MAP_URL
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(defs)
    default = defs.signature_def["serving_default"]
    assert default.method_name == PREDICT_METHOD
    pixels = default.inputs["pixels"]
    assert (pixels.name, pixels.dtype) == ("serving_default_pixels:0", types_pb2.DT_FLOAT)
    assert [d.size for d in pixels.tensor_shape.dim] == [-1, 784] and not pixels.tensor_shape.unknown_rank
    assert default.outputs["output_0"].name == "output_0:0"
    assert default.outputs["free"].tensor_shape.unknown_rank
    regress = defs.signature_def["regress"]
    assert regress.method_name == REGRESS_METHOD
    assert regress.inputs["inputs"].dtype == types_pb2.DT_STRING
    codec.check_metadata_fields(["signature_def"])
    with pytest.raises(InvalidInput, match="at least one metadata_field"):
        codec.check_metadata_fields([])
    with pytest.raises(InvalidInput, match="Metadata field other is not supported"):
        codec.check_metadata_fields(["signature_def", "other"])


def test_status_response() -> None:
    response = codec.status_response([(1, "AVAILABLE", ""), (2, "END", "failed to load")])
    states = get_model_status_pb2.ModelVersionStatus.State
    first, second = response.model_version_status
    assert (first.version, first.state, first.status.error_code) == (1, states.Value("AVAILABLE"), 0)
    assert (second.state, second.status.error_code, second.status.error_message) == (
        states.Value("END"),
        2,
        "failed to load",
    )


# ------------------------------------------------------------------------------------------- classify / regress


def _example(**floats: list[float]) -> example_pb2.Example:
    example = example_pb2.Example()
    for name, values in floats.items():
        example.features.feature[name].float_list.value.extend(values)
    return example


def test_examples_from_input_merge_the_context() -> None:
    plain = input_pb2.Input()
    plain.example_list.examples.extend([_example(x=[1.0]), _example(x=[2.0])])
    serialized = codec.examples_from_input(plain)
    assert serialized.dtype == object and serialized.shape == (2,)
    assert example_pb2.Example.FromString(serialized[1]).features.feature["x"].float_list.value == [2.0]
    with_context = input_pb2.Input()
    with_context.example_list_with_context.context.CopyFrom(_example(c=[9.0], x=[0.0]))
    with_context.example_list_with_context.examples.extend([_example(x=[1.0])])
    merged = example_pb2.Example.FromString(codec.examples_from_input(with_context)[0]).features.feature
    assert list(merged["c"].float_list.value) == [9.0]
    assert list(merged["x"].float_list.value) == [1.0]
    with pytest.raises(InvalidInput, match=r"RegressionRequest::input is empty."):
        codec.examples_from_input(input_pb2.Input(), "RegressionRequest")
    empty = input_pb2.Input()
    empty.example_list.SetInParent()
    with pytest.raises(InvalidInput, match="input is empty"):
        codec.examples_from_input(empty)


def test_classification_and_regression_responses() -> None:
    outputs = {
        "classes": np.array([[b"cat", b"dog"]], dtype=object),
        "scores": np.array([[0.25, 0.75]], np.float32),
    }
    response = codec.classification_response(outputs, 1, "m", 4, "classify")
    assert response.model_spec.signature_name == "classify" and response.model_spec.version.value == 4
    classes = response.result.classifications[0].classes
    assert [(c.label, c.score) for c in classes] == [("cat", 0.25), ("dog", 0.75)]
    regression = codec.regression_response({"outputs": np.array([1.5, -2.0], np.float32)}, 2, "m", 4, None)
    assert [r.value for r in regression.result.regressions] == [1.5, -2.0]
    assert regression.model_spec.signature_name == "serving_default"
    with pytest.raises(InvalidInput, match=r"either \[batch_size\] or \[batch_size, 1\]"):
        codec.regression_result({"outputs": np.zeros((2, 2), np.float32)}, 2)
