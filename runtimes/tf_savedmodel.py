"""TFSavedModelRuntime: serves every signature of a TensorFlow SavedModel (TF Serving's version-dir layout).

Thread settings (``intra_op_threads``, ``inter_op_threads``) are process-wide in TensorFlow and can only be
set before TensorFlow runs its first op: the first model loaded with them fixes them for the whole process; a
later model asking for other values gets a warning and shares the settings already in force.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from runtimes.base import (
    DEFAULT_SIGNATURE,
    PREDICT_METHOD,
    Runtime,
    RuntimeInputError,
    RuntimeLoadError,
    Signature,
    TensorSpec,
    artifact_path,
    declare,
)

log = logging.getLogger(__name__)

# TensorFlow DataType enum -> (V2 datatype, TensorFlow dtype name); here since runtimes never import gateway.
_TF_DTYPES: dict[int, tuple[str, str]] = {
    1: ("FP32", "float32"),
    2: ("FP64", "float64"),
    3: ("INT32", "int32"),
    4: ("UINT8", "uint8"),
    5: ("INT16", "int16"),
    6: ("INT8", "int8"),
    7: ("BYTES", "string"),
    9: ("INT64", "int64"),
    10: ("BOOL", "bool"),
    14: ("BF16", "bfloat16"),
    17: ("UINT16", "uint16"),
    19: ("FP16", "float16"),
    22: ("UINT32", "uint32"),
    23: ("UINT64", "uint64"),
}
_V2_TO_TF_NAME: dict[str, str] = {v2: tf_name for v2, tf_name in _TF_DTYPES.values()}
_SERVE_TAG = "serve"
_INIT_OP_KEY = "__saved_model_init_op"
_THREAD_OPTIONS = ("intra_op_threads", "inter_op_threads")
_KNOWN_OPTIONS = (*_THREAD_OPTIONS, "tags", "filename", "inputs", "outputs")

_threads_lock = threading.Lock()
_threads_applied: dict[str, int] = {}


def _import_tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeLoadError(
            f"TensorFlow is not installed ({exc}); install tensorgate with the 'tensorflow' extra"
        ) from exc
    return tf


def apply_thread_options(options: Mapping[str, Any]) -> dict[str, int]:
    """Set TensorFlow's process-wide thread pools once; return the values in force afterwards.

    TensorFlow refuses changes after its runtime has started, so a second model asking for different values
    is told (a warning) that the first settings stay.
    """
    wanted = {key: int(options[key]) for key in _THREAD_OPTIONS if options.get(key) is not None}
    for key, value in wanted.items():
        if value < 0:
            raise RuntimeLoadError(f"option {key} must be >= 0 (0 lets TensorFlow choose), got {value}")
    tf = _import_tf()
    setters = {
        "intra_op_threads": tf.config.threading.set_intra_op_parallelism_threads,
        "inter_op_threads": tf.config.threading.set_inter_op_parallelism_threads,
    }
    getters = {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads,
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads,
    }
    with _threads_lock:
        for key, value in wanted.items():
            try:
                setters[key](value)
                _threads_applied[key] = value
            except RuntimeError:
                log.warning(
                    "TensorFlow %s is process-wide and already fixed at %s; ignoring the requested %s",
                    key,
                    getters[key](),
                    value,
                )
        return {key: int(getters[key]()) for key in _THREAD_OPTIONS}


def _read_meta_graphs(version_dir: Path) -> list[Any]:
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    pb = version_dir / "saved_model.pb"
    pbtxt = version_dir / "saved_model.pbtxt"
    try:
        if pb.is_file():
            saved.ParseFromString(pb.read_bytes())
        elif pbtxt.is_file():
            text_format.Parse(pbtxt.read_text(), saved)
        else:
            raise RuntimeLoadError(f"no saved_model.pb or saved_model.pbtxt in {version_dir}")
    except RuntimeLoadError:
        raise
    except Exception as exc:
        raise RuntimeLoadError(f"{version_dir}: unreadable SavedModel proto: {exc}") from exc
    return list(saved.meta_graphs)


def _pick_meta_graph(meta_graphs: Sequence[Any], tags: Sequence[str] | None, where: Path) -> Any:
    if not meta_graphs:
        raise RuntimeLoadError(f"{where}: the SavedModel holds no MetaGraphDef")
    if tags:
        for graph in meta_graphs:
            if set(graph.meta_info_def.tags) == set(tags):
                return graph
        found = [list(g.meta_info_def.tags) for g in meta_graphs]
        raise RuntimeLoadError(f"{where}: no MetaGraphDef with tags {list(tags)}; found {found}")
    if len(meta_graphs) == 1:
        return meta_graphs[0]
    for graph in meta_graphs:
        if list(graph.meta_info_def.tags) == [_SERVE_TAG]:
            return graph
    found = [list(g.meta_info_def.tags) for g in meta_graphs]
    raise RuntimeLoadError(f"{where}: several MetaGraphDefs {found}; choose one with options.tags")


def _tensor_spec(key: str, info: Any, where: str) -> tuple[TensorSpec, bool]:
    entry = _TF_DTYPES.get(int(info.dtype))
    if entry is None:
        raise RuntimeLoadError(f"{where}: tensor {key!r} has unsupported TensorFlow dtype {info.dtype}")
    unknown_rank = bool(info.tensor_shape.unknown_rank)
    shape = (-1,) if unknown_rank else tuple(int(d.size) if d.size >= 0 else -1 for d in info.tensor_shape.dim)
    return TensorSpec(key, entry[0], shape), unknown_rank


def signatures_from_meta_graph(meta_graph: Any) -> dict[str, Signature]:
    """SignatureDefs of one MetaGraphDef -> Signature objects (sorted tensor names; init op skipped).

    ``extra`` carries ``input_tensor_names``/``output_tensor_names`` (graph tensor names such as
    ``serving_default_x:0``) and ``unknown_rank`` (names whose rank the SavedModel leaves open; their shape
    reads ``(-1,)``).
    """
    out: dict[str, Signature] = {}
    for name in sorted(meta_graph.signature_def):
        if name == _INIT_OP_KEY:
            continue
        sig_def = meta_graph.signature_def[name]
        inputs, outputs, unknown = [], [], []
        in_names, out_names = {}, {}
        for key in sorted(sig_def.inputs):
            spec, unknown_rank = _tensor_spec(key, sig_def.inputs[key], f"signature {name!r} input")
            inputs.append(spec)
            in_names[key] = sig_def.inputs[key].name
            if unknown_rank:
                unknown.append(key)
        for key in sorted(sig_def.outputs):
            spec, unknown_rank = _tensor_spec(key, sig_def.outputs[key], f"signature {name!r} output")
            outputs.append(spec)
            out_names[key] = sig_def.outputs[key].name
            if unknown_rank:
                unknown.append(key)
        out[name] = Signature(
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            name=name,
            method=sig_def.method_name or PREDICT_METHOD,
            extra={
                "input_tensor_names": in_names,
                "output_tensor_names": out_names,
                "unknown_rank": tuple(unknown),
            },
        )
    return out


def _op_error(exc: Any) -> str:
    """The useful part of a TensorFlow op error: drop the Python stack TF appends and the node markers."""
    lines = []
    for line in str(getattr(exc, "message", exc)).splitlines():
        text = line.strip()
        if not text or text.startswith(("Graph execution error", "Detected at node", "File ", "[[")):
            continue
        lines.append(text.split(" [Op:")[0])
    return "; ".join(lines) or type(exc).__name__


def _describe(spec: TensorSpec) -> str:
    return f"{spec.name} ({spec.datatype} {list(spec.shape)})"


class _Entry:
    """One callable signature: its function and the numpy dtype of each input."""

    __slots__ = ("dtypes", "function", "signature", "tf_dtypes", "unknown_rank")

    def __init__(self, signature: Signature, function: Any, tf: Any) -> None:
        self.signature = signature
        self.function = function
        self.unknown_rank = frozenset(signature.extra.get("unknown_rank", ()))
        self.dtypes: dict[str, np.dtype] = {}
        self.tf_dtypes: dict[str, Any] = {}
        for spec in signature.inputs:
            tf_dtype = tf.as_dtype(_V2_TO_TF_NAME[spec.datatype])
            self.tf_dtypes[spec.name] = tf_dtype
            self.dtypes[spec.name] = np.dtype(object) if spec.datatype == "BYTES" else tf_dtype.as_numpy_dtype


class TFSavedModelRuntime(Runtime):
    """A SavedModel loaded with ``tf.saved_model.load``; every SignatureDef is callable by name.

    Options: ``intra_op_threads`` / ``inter_op_threads`` (process-wide, see the module docstring),
    ``tags`` (the MetaGraphDef to load; default: the only one, else ``["serve"]``), ``filename`` (a SavedModel
    folder inside the version folder, Triton's ``model.savedmodel``) and ``inputs``/``outputs`` (declared tensors of
    the default signature, see ``runtimes.base.declare``). BYTES tensors are numpy
    object arrays of ``bytes`` in and out. Concurrent ``infer`` calls are safe: TensorFlow functions may be
    called from several threads at once, so no lock is taken.
    """

    format: ClassVar[str] = "tf_savedmodel"
    platform: ClassVar[str] = "tensorflow_savedmodel"
    artifact = "saved_model.pb"

    def __init__(self) -> None:
        self._tf: Any = None
        self._loaded: Any = None
        self._entries: dict[str, _Entry] = {}
        self._signatures: dict[str, Signature] = {}
        self.threads: dict[str, int] = {}
        self.tags: list[str] = []

    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        path = Path(path)
        unknown = sorted(set(options) - set(_KNOWN_OPTIONS))
        if unknown:
            log.warning("%s: ignoring options %s (known: %s)", path, unknown, list(_KNOWN_OPTIONS))
        if options.get("filename"):  # Triton's layout: <version>/model.savedmodel/saved_model.pb
            path = artifact_path(path, options, "")
            self.artifact = path.name
        if not path.is_dir():
            raise RuntimeLoadError(f"{path} is not a SavedModel directory")
        tags_option = options.get("tags")
        if isinstance(tags_option, str):
            tags_option = [tags_option]
        meta_graph = _pick_meta_graph(_read_meta_graphs(path), tags_option, path)
        signatures = signatures_from_meta_graph(meta_graph)
        if not signatures:
            raise RuntimeLoadError(f"{path}: the SavedModel has no serving signatures")
        if options.get("inputs") or options.get("outputs"):
            default = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else next(iter(signatures))
            signatures[default] = declare(signatures[default], options.get("inputs"), options.get("outputs"), str(path))
        self.threads = apply_thread_options(options)
        tf = _import_tf()
        self.tags = list(meta_graph.meta_info_def.tags)
        try:
            loaded = tf.saved_model.load(str(path), tags=self.tags or None)
        except Exception as exc:
            raise RuntimeLoadError(f"{path}: tf.saved_model.load failed: {exc}") from exc
        entries: dict[str, _Entry] = {}
        for name, signature in signatures.items():
            function = loaded.signatures.get(name)
            if function is None:
                log.warning("%s: signature %r is in saved_model.pb but not callable; skipped", path, name)
                continue
            entries[name] = _Entry(signature, function, tf)
        if not entries:
            raise RuntimeLoadError(f"{path}: none of the signatures {sorted(signatures)} can be called")
        self._tf = tf
        self._loaded = loaded
        self._entries = entries
        self._signatures = {name: entry.signature for name, entry in entries.items()}

    def signatures(self) -> Mapping[str, Signature]:
        return self._signatures

    def _entry(self, name: str | None) -> _Entry:
        if not self._entries:
            raise RuntimeError("the SavedModel is not loaded")
        try:
            return self._entries[self.signature(name).name]
        except KeyError:
            raise RuntimeInputError(
                f"signature {name!r} not found; the model has {', '.join(sorted(self._entries))}"
            ) from None

    def _check(self, entry: _Entry, inputs: Mapping[str, np.ndarray]) -> None:
        sig = entry.signature
        expected = ", ".join(_describe(s) for s in sig.inputs)
        for key in inputs:
            if sig.input(key) is None:
                raise RuntimeInputError(f"unexpected input {key!r}; signature {sig.name!r} takes {expected}")
        for spec in sig.inputs:
            if spec.name not in inputs:
                raise RuntimeInputError(f"missing input {spec.name!r}; signature {sig.name!r} takes {expected}")
            array = inputs[spec.name]
            if not isinstance(array, np.ndarray):
                raise RuntimeInputError(f"input {spec.name!r} must be a numpy array, got {type(array).__name__}")
            ok = array.dtype.kind in "OSU" if spec.datatype == "BYTES" else array.dtype == entry.dtypes[spec.name]
            if not ok:
                raise RuntimeInputError(f"input {spec.name!r} has dtype {array.dtype}; expected {_describe(spec)}")
            if spec.name in entry.unknown_rank:
                continue
            shape = array.shape
            if len(shape) != len(spec.shape) or any(
                want >= 0 and got != want for got, want in zip(shape, spec.shape, strict=True)
            ):
                raise RuntimeInputError(f"input {spec.name!r} has shape {list(shape)}; expected {_describe(spec)}")

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> dict[str, np.ndarray]:
        entry = self._entry(signature)
        self._check(entry, inputs)
        sig = entry.signature
        if outputs is not None:
            for name in outputs:
                if sig.output(name) is None:
                    raise RuntimeInputError(
                        f"unknown output {name!r}; signature {sig.name!r} has {', '.join(s.name for s in sig.outputs)}"
                    )
        tf = self._tf
        try:
            feed = {key: tf.constant(value, dtype=entry.tf_dtypes[key]) for key, value in inputs.items()}
        except (TypeError, ValueError) as exc:
            raise RuntimeInputError(f"inputs do not convert to signature {sig.name!r}: {exc}") from exc
        try:
            result = entry.function(**feed)
        except tf.errors.InvalidArgumentError as exc:
            text = _op_error(exc)
            integers = [t.name for t in sig.inputs if t.datatype.startswith(("INT", "UINT"))]
            if "indices" in text and integers:  # a gather out of its table: name the inputs that can be indices
                text += f" (integer inputs: {', '.join(repr(n) for n in integers)})"
            raise RuntimeInputError(f"signature {sig.name!r} refused the inputs: {text}") from exc
        names = list(outputs) if outputs is not None else [s.name for s in sig.outputs]
        return {name: result[name].numpy() for name in names}

    def unload(self) -> None:
        self._entries = {}
        self._signatures = {}
        self._loaded = None
