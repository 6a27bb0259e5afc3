"""Triton config.pbtxt -> ModelConfig: every honoured field mapped, unsupported fields refused or warned about by
name, syntax errors located by line, hostile values (huge or negative dims, unknown types, garbage) refused."""

from __future__ import annotations

import logging

import pytest

from model_store import ConfigError, ModelConfig
from model_store.base import ConfigFile

SIMPLE = b"""
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { specific { versions: [1, 3] } }
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_STRING dims: [ -1, 16 ] format: FORMAT_NONE }
]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 2500
  default_queue_policy { max_queue_size: 32 default_timeout_microseconds: 500000 }
}
instance_group [ { count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_CPU } ]
default_model_filename: "net.onnx"
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
parameters { key: "note" value: { string_value: "hello" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 2
    count: 3
    inputs { key: "INPUT0" value: { data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } }
    inputs { key: "INPUT1" value: { data_type: TYPE_STRING dims: [ 2, 16 ] input_data_file: "strings.bin" } }
  }
]
"""


def parse(text: bytes | str, model: str = "simple") -> ModelConfig:
    data = text.encode() if isinstance(text, str) else text
    return ModelConfig.from_file(ConfigFile("config.pbtxt", data), model)


def test_every_honoured_field_is_mapped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        config = parse(SIMPLE)
    assert config.runtime == "onnx"
    assert config.max_batch_size == 8
    assert config.version_policy.specific == [1, 3]
    assert config.inputs is not None and [i.model_dump() for i in config.inputs] == [
        {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "INPUT1", "datatype": "BYTES", "shape": [-1, -1, 16]},
    ]
    assert config.outputs is not None and config.outputs[0].shape == [-1, 16]
    assert config.batching is not None
    assert config.batching.max_batch_size == 8
    assert config.batching.preferred_batch_sizes == [4, 8]
    assert config.batching.max_queue_delay_ms == 2.5
    assert config.max_queue_size == 32 and config.timeout_ms == 500.0
    assert config.instances == 3
    assert config.options == {"filename": "net.onnx", "intra_op_threads": 2}
    assert config.parameters == {"intra_op_thread_count": "2", "note": "hello"}
    [sample] = config.warmup.samples
    assert (sample.name, sample.count, sample.batch_size) == ("zeros", 3, 2)
    by_name = {i.name: i for i in sample.inputs}
    assert by_name["INPUT0"].shape == [2, 16] and by_name["INPUT0"].source == "zero"
    assert by_name["INPUT1"].shape == [2, 2, 16] and by_name["INPUT1"].file == "strings.bin"
    assert "parameters 'note'" in caplog.text  # a parameter with no meaning here is named, once


def test_warnings_are_logged_once_per_config(caplog: pytest.LogCaptureFixture) -> None:
    text = b'platform: "onnxruntime_onnx"\nresponse_cache { enable: true }\nmetric_tags { key: "a" value: "b" }\n'
    with caplog.at_level(logging.WARNING):
        config = parse(text, "cached")
        parse(text, "cached")
    assert config.runtime == "onnx"
    assert caplog.text.count("field response_cache is ignored") == 1
    assert caplog.text.count("field metric_tags is ignored") == 1


@pytest.mark.parametrize(
    ("platform", "runtime", "filename"),
    [
        ('platform: "onnxruntime_onnx"', "onnx", "model.onnx"),
        ('backend: "onnxruntime"', "onnx", "model.onnx"),
        ('platform: "tensorflow_savedmodel"', "tf_savedmodel", "model.savedmodel"),
        ('backend: "tensorflow"', "tf_savedmodel", "model.savedmodel"),
        ('platform: "pytorch_libtorch"', None, "model.pt2"),
        ('backend: "pytorch"', None, "model.pt2"),
        ("", None, None),
    ],
)
def test_platforms_and_backends(platform: str, runtime: str | None, filename: str | None) -> None:
    config = parse(platform + "\n", "m")
    assert config.runtime == runtime
    assert config.options.get("filename") == filename


def test_version_policies_and_instance_kinds() -> None:
    assert parse("version_policy: { all: {} }", "m").version_policy.all
    assert parse("version_policy: { latest: { num_versions: 3 } }", "m").version_policy.latest == 3
    assert parse("", "m").version_policy.latest == 1
    gpu = parse('instance_group [ { kind: KIND_GPU count: 2 gpus: [ 1 ] } ]\nplatform: "onnxruntime_onnx"', "m")
    assert gpu.options["device"] == "cuda:1" and gpu.instances == 2
    assert parse("instance_group [ { kind: KIND_GPU } ]", "m").options["device"] == "cuda"
    assert parse("instance_group [ { kind: KIND_CPU count: 0 } ]", "m").instances == 1  # Triton: 0 means one


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('platform: "ensemble"', "platform 'ensemble': ensembles"),
        ('backend: "python"', "backend 'python': the Python backend is not served"),
        ('platform: "tensorrt_plan"', "TensorRT plans are not served"),
        ('platform: "tensorflow_graphdef"', "GraphDef models are not served"),
        ('backend: "tensorflow"\nplatform: "tensorflow_graphdef"', "GraphDef"),
        ('backend: "mystery"', "backend 'mystery' is not served"),
        ('platform: "onnxruntime_onnx"\nbackend: "pytorch"', "disagree"),
        ("sequence_batching { max_sequence_idle_microseconds: 5000 }", "field sequence_batching: sequence batching"),
        ('ensemble_scheduling { step [ { model_name: "a" model_version: -1 } ] }', "field ensemble_scheduling"),
        ("model_transaction_policy { decoupled: true }", "field model_transaction_policy: decoupled"),
        ('model_repository_agents { agents [ { name: "checksum" } ] }', "field model_repository_agents"),
        ('runtime: "model.py"', "field runtime"),
        ('name: "other"', "name 'other' differs from the model's folder name 'm'"),
        ("max_batch_size: -1", "max_batch_size must be >= 0"),
        ("dynamic_batching { }", "dynamic_batching needs max_batch_size > 0"),
        ("max_batch_size: 4\ndynamic_batching { preferred_batch_size: [ 8 ] }", "preferred_batch_size 8"),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]', "reshape"),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] optional: true } ]', "field optional"),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] allow_ragged_batch: true } ]', "allow_ragged_batch"),
        ('output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "l.txt" } ]', "label_filename"),
        (
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] is_non_linear_format_io: true } ]',
            "field(s) is_non_linear_format_io are not supported",
        ),
        (
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]',
            "input 'x' is declared twice",
        ),
        ('input [ { name: "x" data_type: TYPE_INVALID dims: [ 4 ] } ]', "data_type TYPE_INVALID is not a tensor type"),
        ('input [ { name: "x" data_type: TYPE_FP32 } ]', "input 'x': dims are required"),
        ("input [ { data_type: TYPE_FP32 dims: [ 1 ] } ]", "a tensor needs a name"),
        ("version_policy: { latest: { num_versions: 0 } }", "num_versions must be >= 1"),
        ("version_policy: { specific: { } }", "version_policy.specific.versions"),
        ("instance_group [ { count: -2 } ]", "count must be >= 0"),
        ("instance_group [ { count: 5000 } ]", "more than 1024"),
        ('default_model_filename: "../../etc/passwd"', "default_model_filename"),
        ('default_model_filename: ".hidden"', "default_model_filename"),
        ('parameters { key: "intra_op_thread_count" value: { string_value: "many" } }', "must be an integer"),
        (
            'model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ -1 ] '
            "zero_data: true } } } ]",
            "every dim must be given",
        ),
        (
            'model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1 ] } } } ]',
            "set zero_data, random_data or input_data_file",
        ),
        (
            'model_warmup [ { name: "w" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1 ] '
            'input_data_file: "../secret" } } } ]',
            "input_data_file '../secret'",
        ),
        ('max_batch_size: 2\nmodel_warmup [ { name: "w" batch_size: 3 } ]', "batch_size 3"),
        ('model_warmup [ { name: "w" batch_size: 1 count: 2000000000 } ]', "count 2000000000 is more than 1000"),
    ],
)
def test_what_cannot_be_honoured_is_a_clear_error(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "m")
    message = str(info.value)
    assert message.startswith("m/config.pbtxt"), message
    assert words in message, message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (f'input [ {{ name: "x" data_type: TYPE_FP32 dims: [ {1 << 40} ] }} ]', f"dim {1 << 40} is larger than"),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 99999999999999999999999 ] } ]', "m/config.pbtxt:1:"),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ -5 ] } ]', "dim -5 is negative"),
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ ' + ", ".join(["1"] * 40) + " ] } ]", "40 dims"),
        ('input [ { name: "x" data_type: TYPE_FLOAT99 dims: [ 1 ] } ]', "m/config.pbtxt:1:"),
        ('input [ { name: "x" data_type: 99 dims: [ 1 ] } ]', "input 'x': data_type <enum 99> is not a tensor type"),
        ("platform: onnxruntime_onnx\n", "m/config.pbtxt:1:"),
        ('name: "m"\nmax_batch_size: 8\nbogus_field: 3\n', 'm/config.pbtxt:3:1: Message type "inference.ModelConfig"'),
        ('name: "m"\n\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ]  ]\n', "m/config.pbtxt:3:"),
        ("\x00\x01\x02garbage{{{", "m/config.pbtxt:1:"),
        ("max_batch_size: 1\nmax_batch_size: 2\n", "m/config.pbtxt:2:"),
    ],
)
def test_hostile_and_malformed_text_names_the_file_and_line(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, "m")
    assert words in str(info.value), str(info.value)


def test_binary_and_oversized_files_are_refused_before_parsing() -> None:
    with pytest.raises(ConfigError, match=r"m/config\.pbtxt: not UTF-8"):
        parse(b"\xff\xfe\xfa", "m")
    with pytest.raises(ConfigError, match="2097152 bytes, more than the 1048576 a model config may have"):
        parse(b"#" * (2 << 20), "m")


def test_an_override_merges_over_a_pbtxt() -> None:
    file = ConfigFile("config.pbtxt", b'platform: "onnxruntime_onnx"\nmax_batch_size: 4\ninstance_group [{count: 3}]')
    config = ModelConfig.from_file(file, "m", b"instances: 1\nsla: {p99_ms: 20}\n", "overrides/m.yaml")
    assert config.runtime == "onnx" and config.max_batch_size == 4
    assert config.instances == 1 and config.sla.p99_ms == 20
