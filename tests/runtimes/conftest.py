"""Fixtures for the runtime tests: small ONNX models built once per session."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.onnx_models import OPSET, dense_model, fixed_model, identity_model, two_io_model


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One version folder per model: dense, two_io, fixed, identity_bytes, unknown_dims."""
    root = tmp_path_factory.mktemp("onnx_runtime")
    dense_model(root / "dense" / "model.onnx")
    two_io_model(root / "two_io" / "model.onnx")
    fixed_model(root / "fixed" / "model.onnx")
    identity_model(root / "identity_bytes" / "model.onnx", "BYTES")
    graph = helper.make_graph(  # a dim with neither value nor name, a named one and a fixed one
        [helper.make_node("Identity", ["a"], ["b"])],
        "unknown_dims",
        [helper.make_tensor_value_info("a", TensorProto.INT64, [None, "n", 2])],
        [helper.make_tensor_value_info("b", TensorProto.INT64, [None, "n", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    (root / "unknown_dims").mkdir()
    onnx.save(model, str(root / "unknown_dims" / "model.onnx"))
    return root
