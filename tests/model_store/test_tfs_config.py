"""TfsConfigStore: TF Serving's ModelServerConfig file as a model store — entries become models (each from its own
base path, local or S3) with their platform, policy and labels as config; bad files are clear errors at open and
ignored (last good kept) when rewritten; re-read only as often as asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_store import ModelConfig
from model_store.base import StoreError
from model_store.config import ConfigError
from model_store.tfs_config import TfsConfigStore, parse_model_server_config
from tests.model_store.conftest import OnnxModel
from tests.model_store.s3server import S3Server


def _config(store: TfsConfigStore, model: str) -> ModelConfig:
    return ModelConfig.from_file(store.read_config(model), model)


def entry(name: str, base_path: Path | str, extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base_path}" {extra} }}\n'


def config_file(path: Path, *entries: str) -> Path:
    path.write_text("model_config_list {\n" + "".join(entries) + "}\n")
    return path


@pytest.fixture
def base_paths(tmp_path: Path, onnx_model: OnnxModel) -> dict[str, Path]:
    """Two models in folders of their own, outside any common store root: a/ has versions 1-3, b/ version 7."""
    out = {"a": tmp_path / "team1" / "alpha", "b": tmp_path / "elsewhere" / "deep" / "beta"}
    for v in (1, 2, 3):
        shutil.copytree(onnx_model.folder, out["a"] / str(v))
    shutil.copytree(onnx_model.folder, out["b"] / "7")
    return out


def test_entries_become_models_with_their_policy_labels_and_runtime(tmp_path: Path, base_paths: dict) -> None:
    path = config_file(
        tmp_path / "models.config",
        entry(
            "m",
            base_paths["a"],
            'model_platform: "onnx" model_version_policy { specific { versions: 3 versions: 1 } }'
            ' version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 3 }',
        ),
        entry("n", base_paths["b"], "model_version_policy { all {} }"),
        entry("k", base_paths["a"], "model_version_policy { latest { num_versions: 2 } }"),
    )
    store = TfsConfigStore(path)
    assert store.list_models() == ["k", "m", "n"]
    assert store.list_versions("m") == [1, 2, 3]
    assert store.list_versions("n") == [7]
    m = _config(store, "m")
    assert m.runtime == "onnx"
    assert m.version_policy.select([1, 2, 3]) == [1, 3]
    assert m.version_labels == {"canary": 3, "stable": 1}
    assert _config(store, "n").version_policy.select([1, 7]) == [1, 7]
    assert _config(store, "k").version_policy.select([1, 2, 3]) == [2, 3]
    fetched = store.fetch("n", 7)
    assert fetched == base_paths["b"] / "7" and (fetched / "model.onnx").is_file()
    store.release("n", 7, fetched)
    with pytest.raises(Exception, match="not in the model config file"):
        store.list_versions("other")


def test_tensorflow_platform_and_defaults(tmp_path: Path, base_paths: dict) -> None:
    models = parse_model_server_config(
        "model_config_list { "
        + entry("tf", base_paths["a"], 'model_platform: "tensorflow"')
        + entry("legacy", base_paths["a"], "model_type: TENSORFLOW")
        + entry("plain", base_paths["a"], "model_version_policy { latest { } }")
        + "}"
    )
    settings = {m.name: m.settings for m in models}
    assert settings == {
        "tf": {"runtime": "tf_savedmodel"},
        "legacy": {"runtime": "tf_savedmodel"},
        "plain": {"version_policy": {"latest": 1}},  # num_versions 0 means 1, as in TF Serving
    }


def test_config_yaml_in_a_base_path_is_kept_under_the_files_fields(tmp_path: Path, base_paths: dict) -> None:
    (base_paths["a"] / "config.yaml").write_text(
        "instances: 3\nversion_policy: {all: true}\nversion_labels: {old: 1}\nsla: {p99_ms: 9}\n"
    )
    path = config_file(
        tmp_path / "models.config",
        entry(
            "m",
            base_paths["a"],
            'model_version_policy { specific { versions: 2 } } version_labels { key: "x" value: 2 }',
        ),
        entry("keeps", base_paths["a"]),
    )
    store = TfsConfigStore(path)
    m = _config(store, "m")
    assert (m.instances, m.sla.p99_ms) == (3, 9)
    assert m.version_policy.specific == [2] and m.version_labels == {"x": 2}  # replaced, not merged
    kept = _config(store, "keeps")
    assert kept.version_policy.all and kept.version_labels == {"old": 1}


def test_a_triton_config_pbtxt_in_a_base_path_is_kept_under_the_files_fields(tmp_path: Path, base_paths: dict) -> None:
    (base_paths["a"] / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\ninstance_group [{ count: 3 kind: KIND_CPU }]\nversion_policy: { all: {} }\n'
    )
    path = config_file(
        tmp_path / "models.config",
        entry(
            "m",
            base_paths["a"],
            'model_version_policy { specific { versions: 2 } } version_labels { key: "x" value: 2 }',
        ),
    )
    m = _config(TfsConfigStore(path), "m")
    assert (m.runtime, m.instances) == ("onnx", 3)
    assert m.version_policy.specific == [2] and m.version_labels == {"x": 2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'm' base_path: '/x' ", r"not a ModelServerConfig in text format: 1:"),
        ("model_config_list { config { name: '../m' base_path: '/x/m' } }", r"config 1 \('../m'\): name: invalid"),
        ("model_config_list { config { name: 'm' } }", r"config 1 \('m'\): base_path is required"),
        (
            "model_config_list { config { name: 'm' base_path: '/x/m' } config { name: 'm' base_path: '/y/m' } }",
            "model 'm' is named twice",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/x/m' model_platform: 'tensorrt' } }",
            "model_platform 'tensorrt' is not served; expected one of: .*tensorflow",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/x/m' model_version_policy { specific { } } } }",
            "specific lists no versions",
        ),
        (
            "model_config_list { config { name: 'm' base_path: '/x/m' version_labels { key: '7' value: 1 } } }",
            "version_labels: .*must be a non-numeric name",
        ),
        ("model_config_list { config { name: 'm' base_path: 'gs://b/m' } }", "only local folders and s3://"),
        ("model_config_list { config { name: 'm' base_path: 's3://bucket' } }", "must name a folder inside the bucket"),
        ("custom_model_config { }", "custom_model_config is not supported"),
        ("model_config_list { config { name: 'm' base_path: '/x/m' bogus: 1 } }", 'has no field named "bogus"'),
    ],
)
def test_invalid_files_are_clear_errors_at_open(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        TfsConfigStore(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        TfsConfigStore(tmp_path / "nope.config")


def test_rewrites_apply_when_due_and_invalid_ones_keep_the_last_good(tmp_path: Path, base_paths: dict) -> None:
    path = config_file(tmp_path / "models.config", entry("m", base_paths["a"]))
    store = TfsConfigStore(path, poll_wait_seconds=3600)
    config_file(path, entry("m", base_paths["a"]), entry("n", base_paths["b"]))
    assert store.list_models() == ["m"]  # not due yet
    assert store.reload(force=True) is True
    assert store.list_models() == ["m", "n"]
    path.write_text("model_config_list { config { name: 'broken'")
    assert store.reload(force=True) is False
    assert store.list_models() == ["m", "n"] and "not a ModelServerConfig" in store.reload_error
    path.unlink()
    assert store.reload(force=True) is False and "cannot be read" in store.reload_error
    config_file(path, entry("n", base_paths["b"], 'version_labels { key: "stable" value: 7 }'))
    assert store.reload(force=True) is True and store.reload_error == ""
    assert store.list_models() == ["n"]
    assert _config(store, "n").version_labels == {"stable": 7}


def test_a_model_asked_for_before_the_next_read_is_due_reads_the_file(tmp_path: Path, base_paths: dict) -> None:
    """A worker's copy of the store is told to load a model its supervisor's copy has just read from the file."""
    path = config_file(tmp_path / "models.config", entry("m", base_paths["a"]))
    store = TfsConfigStore(path, poll_wait_seconds=3600)
    config_file(path, entry("m", base_paths["a"]), entry("n", base_paths["b"]))
    assert store.list_versions("n") == [7]
    assert store.list_models() == ["m", "n"]
    with pytest.raises(StoreError, match="'x' is not in the model config file"):
        store.list_versions("x")


def test_poll_wait_zero_reads_the_file_once(tmp_path: Path, base_paths: dict) -> None:
    path = config_file(tmp_path / "models.config", entry("m", base_paths["a"]))
    store = TfsConfigStore(path, poll_wait_seconds=0)
    config_file(path, entry("n", base_paths["b"]))
    assert store.list_models() == ["m"]
    assert store.reload() is False and store.list_models() == ["m"]


def test_a_base_path_that_does_not_exist_yet_has_no_versions(tmp_path: Path, base_paths: dict) -> None:
    later = tmp_path / "later" / "gamma"
    store = TfsConfigStore(config_file(tmp_path / "models.config", entry("g", later)))
    assert store.list_versions("g") == []
    shutil.copytree(base_paths["b"] / "7", later / "4")
    assert store.list_versions("g") == [4]


def test_s3_base_paths(
    s3_env: S3Server, s3_prefix: str, tmp_path: Path, onnx_model: OnnxModel, base_paths: dict
) -> None:
    s3_env.upload_version(onnx_model.folder, "remote", 5, prefix=s3_prefix, marker="_COMPLETE")
    path = config_file(
        tmp_path / "models.config",
        entry("r", s3_env.uri(f"{s3_prefix}/remote") + "/", 'version_labels { key: "stable" value: 5 }'),
        entry("local", base_paths["b"]),
    )
    store = TfsConfigStore(path, cache_dir=tmp_path / "cache")
    assert store.list_models() == ["local", "r"]
    assert store.list_versions("r") == [5]
    fetched = store.fetch("r", 5)
    assert (fetched / "model.onnx").read_bytes() == (onnx_model.folder / "model.onnx").read_bytes()
    assert tmp_path / "cache" in fetched.parents
    store.release("r", 5, fetched)
    assert _config(store, "r").version_labels == {"stable": 5}
