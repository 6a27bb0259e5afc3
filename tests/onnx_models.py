"""Small ONNX models built with onnx.helper (no torch needed): a dense layer, identities per datatype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17

_ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
    "BF16": TensorProto.BFLOAT16,
}


def dense_weights(n_in: int = 16, n_out: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n_in, n_out)).astype(np.float32), rng.standard_normal(n_out).astype(np.float32)


def dense_model(path: Path, n_in: int = 16, n_out: int = 4, seed: int = 0, perturb: float = 0.0) -> Path:
    """y = x @ W + b on x [batch, n_in] FP32, batch dynamic; input "x", output "y". ``perturb`` adds that much
    noise to W (a converted model that drifted)."""
    w, b = dense_weights(n_in, n_out, seed)
    if perturb:
        w = (w + np.random.default_rng(seed + 1).standard_normal(w.shape) * perturb).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["y"])],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    return _save(graph, path)


def two_io_model(path: Path) -> Path:
    """Two inputs a, b [batch, 4] FP32 -> sum [batch, 4] FP32 and prod [batch, 4] FP32."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        "two_io",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("sum", "prod")],
    )
    return _save(graph, path)


def identity_model(path: Path, datatype: str) -> Path:
    """input [batch, -1] of ``datatype`` -> output, unchanged."""
    kind = _ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("input", kind, ["batch", "n"])],
        [helper.make_tensor_value_info("output", kind, ["batch", "n"])],
    )
    return _save(graph, path)


def fixed_model(path: Path) -> Path:
    """No batch dimension: x [3] FP32 -> y = 2x [3]."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )
    return _save(graph, path)


def simple_model(path: Path, datatype: str = "INT32") -> Path:
    """Triton's example ``simple``: INPUT0, INPUT1 [batch, 16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    kind = _ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "simple",
        [helper.make_tensor_value_info(n, kind, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, kind, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )  # fmt: skip
    return _save(graph, path)


def simple_string_model(path: Path) -> Path:
    """Triton's example ``simple_string``: two [batch, 16] string inputs holding integers, Cast to INT32; outputs
    their sum and difference as strings. A Cast node refuses strings that are not numbers (empty ones too)."""
    nodes = [
        helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
        helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["diff"]),
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
        helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=TensorProto.STRING),
    ]
    graph = helper.make_graph(
        nodes,
        "simple_string",
        [helper.make_tensor_value_info(n, TensorProto.STRING, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.STRING, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )
    return _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


IDENTITY_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                  "FP32", "FP64", "BYTES", "BF16"]  # fmt: skip


def build_store(root: Path) -> Path:
    """The ONNX test store: dense (v1, v2 with other weights), two_io, fixed, identity_<type> for each type."""
    dense_model(root / "dense" / "1" / "model.onnx", seed=0)
    dense_model(root / "dense" / "2" / "model.onnx", seed=1)
    (root / "dense" / "config.yaml").write_text("version_policy: {all: true}\nsla: {p99_ms: 20, p50_ms: 5}\n")
    two_io_model(root / "two_io" / "1" / "model.onnx")
    fixed_model(root / "fixed" / "1" / "model.onnx")
    for dt in IDENTITY_TYPES:
        identity_model(root / f"identity_{dt.lower()}" / "1" / "model.onnx", dt)
    slow_model(root / "slow" / "1" / "model.onnx", width=512, layers=4)
    broken = root / "broken" / "1"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx file")
    return root


def slow_weights(width: int = 1024, layers: int = 6, seed: int = 0) -> list[np.ndarray]:
    """The weights of ``slow_model``, one [width, width] matrix per layer (to compute its outputs with numpy)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32) for _ in range(layers)]


def slow_outputs(x: np.ndarray, width: int = 1024, layers: int = 6, seed: int = 0) -> np.ndarray:
    """What ``slow_model`` answers for ``x``, computed with numpy."""
    y = x.astype(np.float32)
    for w in slow_weights(width, layers, seed):
        y = np.tanh(y @ w)
    return y


def slow_model(path: Path, width: int = 1024, layers: int = 6, seed: int = 0) -> Path:
    """x [batch, width] FP32 -> y: a chain of ``layers`` dense layers with tanh (a few ms per row on one core)."""
    nodes, inits, current = [], [], "x"
    for i, w in enumerate(slow_weights(width, layers, seed)):
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    return _save(graph, path)


def spin_model(path: Path, n_in: int = 16, n_out: int = 4, seed: int = 0, size: int = 256) -> Path:
    """A dense layer whose duration the client chooses: y = x @ W + b (``dense_weights(n_in, n_out, seed)``) on
    x [batch, n_in] FP32, after max(spins) rounds of busy work (a [size, size] matmul + tanh each, in an ONNX Loop)
    where spins [batch, 1] INT64 is the second input. The busy work adds exactly 0 to y; zeros (the synthetic
    warm-up) spin 0 rounds. Lets a test hold a request in flight for as long as it needs."""
    w, b = dense_weights(n_in, n_out, seed)
    rng = np.random.default_rng(1000 + seed)
    k = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    a0 = rng.standard_normal((1, size)).astype(np.float32).repeat(size, axis=0)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["a_in", "K"], ["ak"]),
            helper.make_node("Tanh", ["ak"], ["a_out"]),
        ],
        "spin_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("a_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("a_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["spins"], ["rounds"], keepdims=0),
            helper.make_node("Loop", ["rounds", "go", "A0"], ["a_final"], body=body),
            helper.make_node("ReduceSum", ["a_final"], ["busy"], keepdims=0),
            helper.make_node("Mul", ["busy", "zero"], ["nothing"]),
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["xwb"]),
            helper.make_node("Add", ["xwb", "nothing"], ["y"]),
        ],
        "spin",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in]),
            helper.make_tensor_value_info("spins", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(k, "K"),
            numpy_helper.from_array(a0, "A0"),
            numpy_helper.from_array(np.array(True), "go"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
    )
    return _save(graph, path)


def reshape_model(path: Path, n_in: int = 16, n_out: int = 4, seed: int = 0) -> Path:
    """y = reshape(x, [-1, n_in]) @ W + b on x [batch, n] FP32 with n free: a request with n = n_in answers like
    ``dense_model(seed)``, but the synthetic warm-up (free dims set to 1) cannot be reshaped and fails."""
    w, b = dense_weights(n_in, n_out, seed)
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["x", "rows"], ["xr"]),
            helper.make_node("MatMul", ["xr", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        [
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
            numpy_helper.from_array(np.array([-1, n_in], dtype=np.int64), "rows"),
        ],
    )
    return _save(graph, path)


def heavy_model(path: Path, width: int = 16, hidden: int = 1024, layers: int = 100, seed: int = 0) -> Path:
    """x [batch, width] FP32 -> y [batch, width]: up to ``hidden``, ``layers`` times through one shared
    [hidden, hidden] tanh layer, and back. The same signature at any cost: ``layers`` sets how slow it is."""
    rng = np.random.default_rng(seed)
    up = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
    mid = (rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    down = (rng.standard_normal((hidden, width)) / np.sqrt(hidden)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "UP"], ["h0"])]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "MID"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{layers}", "DOWN"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(a, n) for a, n in ((up, "UP"), (mid, "MID"), (down, "DOWN"))],
    )
    return _save(graph, path)


def dense_copies(root: Path, count: int, config: str) -> list[str]:
    """A store of ``count`` copies of ``dense_model`` (``m0000``, ``m0001`` ...), each with ``config`` as its
    config.yaml: many small models for the benchmarks that measure per-model costs."""
    names = [f"m{i:04d}" for i in range(count)]
    template = dense_model(root / "_template.onnx")
    data = template.read_bytes()
    template.unlink()
    for name in names:
        folder = root / name / "1"
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(data)
        (root / name / "config.yaml").write_text(config)
    return names
