"""OnnxRuntime: serves ``model.onnx`` with ONNX Runtime (the only module that imports onnxruntime)."""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnxruntime as ort

from runtimes.base import Runtime, RuntimeInputError, RuntimeLoadError, Signature, TensorSpec, artifact_path, declare

log = logging.getLogger("tensorgate.runtimes.onnx")

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    """Symbolic or unknown dims (strings, None) become -1."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


class OnnxRuntime(Runtime):
    """ONNX Runtime session. Options: ``providers`` (list), ``intra_op_threads``, ``inter_op_threads``,
    ``execution_mode`` (sequential|parallel), ``graph_optimization`` (disable|basic|extended|all), ``device``,
    ``filename`` (default model.onnx), ``inputs``/``outputs`` (declared tensors, see ``runtimes.base.declare``).

    Defaults suit a small box: one intra-op thread per session, so parallelism comes from concurrent requests
    (the model's ``instances``) rather than from splitting one small request across cores.
    """

    format = "onnx"
    platform = "onnxruntime_onnx"
    artifact = "model.onnx"

    def __init__(self) -> None:
        self._session: ort.InferenceSession | None = None
        self._signature: Signature | None = None
        self._device = "cpu"
        self._string_inputs: set[str] = set()
        self._bf16 = False

    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        model_path = artifact_path(path, options, type(self).artifact)
        self.artifact = model_path.name
        if not model_path.is_file():
            raise RuntimeLoadError(f"{model_path} does not exist")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(options.get("intra_op_threads", 1))
        so.inter_op_num_threads = int(options.get("inter_op_threads", 1))
        mode = str(options.get("execution_mode", "sequential"))
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }.get(str(options.get("graph_optimization", "all")), ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        so.graph_optimization_level = level
        so.log_severity_level = 3
        available = ort.get_available_providers()
        device = str(options.get("device", "cpu"))
        kind, _, index = device.partition(":")  # cuda:<n> (Triton's instance_group gpus) picks the GPU
        providers = list(options.get("providers") or [])
        if not providers:
            providers = (
                ["CUDAExecutionProvider", "CPUExecutionProvider"] if kind == "cuda" else ["CPUExecutionProvider"]
            )
        missing = [p for p in providers if p not in available]
        if kind == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeLoadError(
                f"device cuda requested but this onnxruntime build has no CUDAExecutionProvider ({available})"
            )
        if missing:
            log.warning("ONNX Runtime providers %s are not available here (have %s)", missing, available)
            providers = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        try:
            provider_options = [
                {"device_id": index} if p == "CUDAExecutionProvider" and index.isdigit() else {} for p in providers
            ]
            session = ort.InferenceSession(
                os.fspath(model_path), sess_options=so, providers=providers, provider_options=provider_options
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(f"ONNX Runtime could not load {model_path}: {exc}") from exc
        self._device = "cuda" if "CUDAExecutionProvider" in session.get_providers() else "cpu"
        bounds = index_bounds(model_path)
        inputs = tuple(
            TensorSpec(i.name, _datatype(i.type, i.name), _dims(i.shape), bounds.get(i.name))
            for i in session.get_inputs()
        )
        outputs = tuple(TensorSpec(o.name, _datatype(o.type, o.name), _dims(o.shape)) for o in session.get_outputs())
        self._string_inputs = {s.name for s in inputs if s.datatype == "BYTES"}
        self._bf16 = any(s.datatype == "BF16" for s in (*inputs, *outputs))
        self._signature = declare(
            Signature(inputs=inputs, outputs=outputs), options.get("inputs"), options.get("outputs"), str(model_path)
        )
        self._session = session

    def signatures(self) -> Mapping[str, Signature]:
        if self._signature is None:
            raise RuntimeLoadError("model is not loaded")
        return {self._signature.name: self._signature}

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise RuntimeLoadError("model is not loaded")
        feed: dict[str, np.ndarray] = {}
        for name, array in inputs.items():
            if name in self._string_inputs:
                array = (
                    np.vectorize(
                        lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b),
                        otypes=[object],
                    )(array)
                    if array.size
                    else array
                )
            feed[name] = array
        names = list(outputs) if outputs else None
        if self._bf16:
            return self._infer_bf16(session, feed, names)
        try:
            results = session.run(names, feed)
        except Exception as exc:
            text = str(exc)
            if "INVALID_ARGUMENT" in text or "Invalid" in text or "invalid" in text:
                raise RuntimeInputError(f"ONNX Runtime rejected the inputs: {text}") from exc
            raise
        out_names = names or [o.name for o in self.signatures()["serving_default"].outputs]
        result: dict[str, np.ndarray] = {}
        for name, value in zip(out_names, results, strict=True):
            arr = np.asarray(value)
            if arr.dtype.kind in ("U", "O") and arr.size and isinstance(arr.flat[0], str):
                arr = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(arr)
            result[name] = arr
        return result

    def _infer_bf16(
        self, session: ort.InferenceSession, feed: dict[str, np.ndarray], names: list[str] | None
    ) -> dict[str, np.ndarray]:
        """numpy has no bfloat16 that ONNX Runtime's Python API accepts: go through OrtValues and raw bytes."""
        values = {}
        for name, array in feed.items():
            if array.dtype.name == "bfloat16":
                values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    np.ascontiguousarray(array).view(np.uint16), 16
                )
            else:
                values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
        out_names = names or [o.name for o in self.signatures()["serving_default"].outputs]
        try:
            results = session.run_with_ort_values(out_names, values)
        except Exception as exc:
            raise RuntimeInputError(f"ONNX Runtime rejected the inputs: {exc}") from exc
        out: dict[str, np.ndarray] = {}
        for name, value in zip(out_names, results, strict=True):
            if value.data_type() == "tensor(bfloat16)":
                count = int(np.prod(value.shape()))
                raw = (ctypes.c_uint16 * count).from_address(value.data_ptr())
                out[name] = np.array(raw, dtype=np.uint16).view(ml_dtypes.bfloat16).reshape(value.shape())
            else:
                out[name] = value.numpy()
        return out

    def unload(self) -> None:
        self._session = None

    @property
    def device(self) -> str:
        return self._device


def index_bounds(model_path: Path) -> dict[str, tuple[int, int]]:
    """Graph inputs used directly as the indices of a Gather into an initializer (an embedding table): their valid
    values, ONNX's [-rows, rows). Read with the ``onnx`` package when it is installed (else nothing is derived and
    ONNX Runtime's own bounds check answers, without naming the input)."""
    try:
        import onnx
    except ImportError:
        return {}
    try:
        graph = onnx.load(os.fspath(model_path), load_external_data=False).graph
    except Exception:  # a model ONNX Runtime loads but the onnx package cannot parse: derive nothing
        return {}
    tables = {t.name: list(t.dims) for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - set(tables)
    found: dict[str, tuple[int, int]] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        table, indices = node.input[0], node.input[1]
        if indices not in graph_inputs or table not in tables:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        dims = tables[table]
        rows = int(dims[axis]) if -len(dims) <= axis < len(dims) else 0
        if rows > 0:
            low, high = found.get(indices, (-rows, rows))
            found[indices] = (max(low, -rows), min(high, rows))
    return found


def _datatype(ort_type: str, name: str) -> str:
    try:
        return _ORT_TYPES[ort_type]
    except KeyError:
        raise RuntimeLoadError(f"tensor {name!r} has type {ort_type}, which tensorgate cannot serve") from None
