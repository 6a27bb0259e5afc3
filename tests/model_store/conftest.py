"""Fixtures for the model store tests: a moto S3 server, AWS_* pointing at it, and a tiny ONNX model."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_store.s3 import S3Store
from tests.model_store.s3server import S3Server


@dataclass(frozen=True)
class OnnxModel:
    """A folder holding ``model.onnx`` computing ``y = x @ weight + bias`` for x of shape [N, 4]."""

    folder: Path
    weight: np.ndarray
    bias: np.ndarray

    def expected(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight + self.bias


def build_onnx_model(folder: Path, seed: int = 0) -> OnnxModel:
    """Write a MatMul+Add graph with random float32 weights to ``folder/model.onnx``."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((4, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    return OnnxModel(folder=folder, weight=weight, bias=bias)


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    return build_onnx_model(tmp_path_factory.mktemp("onnx") / "v", seed=0)


@pytest.fixture(scope="session")
def onnx_model_b(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """Same graph, other weights: a new version of the same model."""
    return build_onnx_model(tmp_path_factory.mktemp("onnx-b") / "v", seed=1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto server for the session; a page size of 3 keys makes every listing paginate."""
    server = S3Server(max_keys=3)
    server.start()
    yield server
    server.stop()


def point_env_at(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace every AWS_* variable of this process with the server's."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    point_env_at(s3_server, monkeypatch)
    return s3_server


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test uses, so tests share the server without seeing each other's objects."""
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', request.node.name)[:40]}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_store(s3_env: S3Server, s3_prefix: str, tmp_path: Path) -> Callable[..., S3Store]:
    """S3Store over this test's prefix, configured from the environment, caching under tmp_path."""

    def make(**options: Any) -> S3Store:
        options.setdefault("cache_dir", tmp_path / "cache")
        return S3Store(s3_env.uri(s3_prefix), **options)

    return make
