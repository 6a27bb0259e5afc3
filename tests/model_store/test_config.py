"""ModelConfig parsing: defaults, version policies, labels, and errors that name the offending field."""

from __future__ import annotations

import pytest

from model_store import ConfigError, ModelConfig
from model_store.config import VersionPolicy


@pytest.mark.parametrize("text", [None, "", "# only a comment\n", "{}"])
def test_defaults(text: str | None) -> None:
    config = ModelConfig.parse(text)
    assert config == ModelConfig()
    assert config.runtime is None
    assert config.version_policy.latest == 1
    assert config.version_policy.select([3, 1, 2]) == [3]
    assert config.version_labels == {}
    assert config.instances == 2
    assert config.max_queue_size == 256
    assert config.batching is None
    assert config.sla.targets() == {}
    assert config.warmup.enabled and config.warmup.requests == 2
    assert config.verify.on_load and config.verify.atol == 1e-4
    assert config.labels == {}
    assert config.dump() == "{}\n"


def test_a_full_config() -> None:
    config = ModelConfig.parse(
        """
runtime: onnx
version_policy: {latest: 2}
version_labels: {stable: 1, canary: 2}
options: {intra_op_num_threads: 1}
batching: {max_batch_size: 16, max_queue_delay_ms: 2}
instances: 4
timeout_ms: 500
sla: {p50_ms: 5, p99_ms: 250}
warmup: {requests: 0}
verify: {atol: 0.001, on_load: false}
inputs: [{name: x, datatype: FP32, shape: [-1, 4]}]
labels: {team: vision, tier: gold}
"""
    )
    assert config.runtime == "onnx"
    assert config.version_labels == {"stable": 1, "canary": 2}
    assert config.options == {"intra_op_num_threads": 1}
    assert config.batching is not None and config.batching.max_batch_size == 16
    assert config.batching.max_queue_delay_ms == 2.0
    assert config.sla.targets() == {"p50": 0.005, "p99": 0.25}
    assert config.warmup.requests == 0
    assert config.inputs is not None and config.inputs[0].shape == [-1, 4]
    assert config.labels == {"team": "vision", "tier": "gold"}
    assert ModelConfig.parse(config.dump()) == config


def test_json_is_accepted() -> None:
    config = ModelConfig.parse(b'{"runtime": "tf_savedmodel", "version_policy": {"all": true}}')
    assert config.runtime == "tf_savedmodel"
    assert config.version_policy.all


@pytest.mark.parametrize(
    ("policy", "versions", "selected", "triton"),
    [
        ({}, [1, 5, 3], [5], {"latest": {"num_versions": 1}}),
        ({"latest": 2}, [10, 1, 5, 3], [5, 10], {"latest": {"num_versions": 2}}),
        ({"latest": 9}, [2, 1], [1, 2], {"latest": {"num_versions": 9}}),
        ({"all": True}, [3, 1, 2], [1, 2, 3], {"all": {}}),
        ({"specific": [1, 3, 7]}, [1, 2, 3], [1, 3], {"specific": {"versions": ["1", "3", "7"]}}),
        ({"specific": [4]}, [1, 2], [], {"specific": {"versions": ["4"]}}),
        ({"latest": 1}, [], [], {"latest": {"num_versions": 1}}),
    ],
)
def test_version_policy_select(
    policy: dict[str, object], versions: list[int], selected: list[int], triton: dict[str, object]
) -> None:
    parsed = ModelConfig.from_dict({"version_policy": policy}).version_policy
    assert parsed.select(versions) == selected
    assert parsed.to_triton() == triton


def test_version_policy_takes_one_choice() -> None:
    with pytest.raises(ValueError, match="one of latest, all, specific"):
        VersionPolicy(latest=2, all=True)


@pytest.mark.parametrize(
    ("text", "field", "detail"),
    [
        ("version_policy: {latest: 1, all: true}", "version_policy", "one of latest, all, specific"),
        ("version_policy: {latest: 0}", "version_policy", "latest must be >= 1"),
        ("version_policy: {newest: 1}", "version_policy.newest", "Extra inputs"),
        ("version_labels: {'7': 1}", "version_labels", "non-numeric"),
        ("version_labels: {'a/b': 1}", "version_labels", "without '/'"),
        ("version_labels: {'a:b': 1}", "version_labels", "':'"),
        ("version_labels: {stable: one}", "version_labels.stable", "integer"),
        ("runtime: caffe", "runtime", "onnx"),
        ("instances: 0", "instances", "greater than or equal to 1"),
        ("batching: {max_batch_size: 0}", "batching.max_batch_size", "greater than or equal to 1"),
        ("sla: {p99_ms: -5}", "sla.p99_ms", "greater than 0"),
        ("timeout_ms: 0", "timeout_ms", "greater than 0"),
        ("inputs: [{name: x, shape: [1]}]", "inputs.0.datatype", "Field required"),
        ("labels: {team: [a]}", "labels.team", "string"),
        ("colour: blue", "colour", "Extra inputs"),
    ],
)
def test_errors_name_the_field(text: str, field: str, detail: str) -> None:
    with pytest.raises(ConfigError) as info:
        ModelConfig.parse(text, where="store/affine/config.yaml")
    message = str(info.value)
    assert message.startswith("store/affine/config.yaml: ")
    assert f"{field}: " in message
    assert detail in message


@pytest.mark.parametrize(
    ("text", "detail"),
    [("runtime: [onnx\n", "not valid YAML"), ("- a\n- b\n", "expected a mapping at the top level, got list")],
)
def test_malformed_documents(text: str, detail: str) -> None:
    with pytest.raises(ConfigError, match=detail):
        ModelConfig.parse(text)
