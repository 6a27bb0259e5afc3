"""The Runtime contract every framework adapter implements, and the signature types it reports."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


class RuntimeInputError(ValueError):
    """The framework refused the inputs (wrong rank, dtype, a dim outside the exported range): a client error."""


class RuntimeLoadError(RuntimeError):
    """The artefact could not be loaded (missing, corrupt, wrong framework version)."""


class RuntimeCrashed(RuntimeError):
    """The process running the runtime (an isolated runtime's child) exited: the call cannot be answered."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a signature: V2 datatype name and shape, -1 for a free dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    #: integer inputs that index a table (an embedding): the valid values [low, high), checked before the call
    values: tuple[int, int] | None = None

    @property
    def batched(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] == -1


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of one callable entry point of a model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    name: str = DEFAULT_SIGNATURE
    method: str = PREDICT_METHOD
    extra: Mapping[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> TensorSpec | None:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None

    @property
    def batched(self) -> bool:
        """True when every input and output has a free leading (batch) dimension."""
        return bool(self.inputs) and all(s.batched for s in (*self.inputs, *self.outputs))


class Runtime(abc.ABC):
    """One framework adapter: numpy in, numpy out, synchronous (frameworks release the GIL).

    ``format`` is the store's name for the artefact kind, ``platform`` the Triton platform string shown in
    metadata. ``infer`` is called from worker threads; implementations must be safe for concurrent calls
    (every framework session used here is) or serialise internally.
    """

    format: ClassVar[str]
    platform: ClassVar[str]
    artifact: str  # the artefact's name in the version folder: the class's default, or the ``filename`` option

    @abc.abstractmethod
    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        """Load the artefact in version directory ``path``; raise RuntimeLoadError on failure."""

    @abc.abstractmethod
    def signatures(self) -> Mapping[str, Signature]:
        """All signatures, keyed by name; the default one is under DEFAULT_SIGNATURE."""

    def signature(self, name: str | None = None) -> Signature:
        sigs = self.signatures()
        key = name or DEFAULT_SIGNATURE
        if key not in sigs:
            if name is None and len(sigs) == 1:
                return next(iter(sigs.values()))
            raise KeyError(key)
        return sigs[key]

    @abc.abstractmethod
    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model; return the requested outputs (all when ``outputs`` is None), keyed by name."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release framework resources."""

    @property
    def device(self) -> str:
        return "cpu"


def artifact_path(path: Path, options: Mapping[str, Any], default: str) -> Path:
    """The artefact in version folder ``path``: ``options["filename"]`` (Triton's ``default_model_filename``) or
    the runtime's usual name; a name that would leave the folder is refused."""
    name = str(options.get("filename") or default)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise RuntimeLoadError(f"option filename {name!r} must be a plain file or folder name")
    return Path(path) / name


def declare(
    signature: Signature,
    inputs: Sequence[Mapping[str, Any]] | None,
    outputs: Sequence[Mapping[str, Any]] | None,
    where: str,
) -> Signature:
    """The signature with the config's declared tensors (``{name, datatype, shape}``, shape -1 = the model's dim)
    in force: each must name a tensor of the model, with its datatype and rank; a fixed dim must agree with the
    model's, and a dim the model leaves free is pinned. RuntimeLoadError names the tensor and what differs."""

    def apply(
        specs: tuple[TensorSpec, ...], declared: Sequence[Mapping[str, Any]], kind: str
    ) -> tuple[TensorSpec, ...]:
        by_name = {s.name: i for i, s in enumerate(specs)}
        result = list(specs)
        for item in declared:
            name = str(item.get("name"))
            if name not in by_name:
                raise RuntimeLoadError(
                    f"{where}: declared {kind} {name!r} is not one of the model's {kind}s ({', '.join(by_name)})"
                )
            spec = specs[by_name[name]]
            datatype = str(item.get("datatype", spec.datatype))
            if datatype != spec.datatype:
                raise RuntimeLoadError(
                    f"{where}: {kind} {name!r} is declared {datatype} but the model's is {spec.datatype}"
                )
            shape = item.get("shape")
            if shape is None:
                continue
            if len(shape) != len(spec.shape):
                raise RuntimeLoadError(
                    f"{where}: {kind} {name!r} is declared with shape {list(shape)} (rank {len(shape)}) but the "
                    f"model's is {list(spec.shape)} (rank {len(spec.shape)})"
                )
            dims = []
            for axis, (want, have) in enumerate(zip(shape, spec.shape, strict=True)):
                want = int(want)
                if want != -1 and have != -1 and want != have:
                    raise RuntimeLoadError(
                        f"{where}: {kind} {name!r} dim {axis} is declared {want} but the model fixes it at {have} "
                        f"(declared {list(shape)}, model {list(spec.shape)})"
                    )
                dims.append(have if want == -1 else want)
            result[by_name[name]] = TensorSpec(spec.name, spec.datatype, tuple(dims), spec.values)
        return tuple(result)

    new_inputs = apply(signature.inputs, inputs or [], "input")
    new_outputs = apply(signature.outputs, outputs or [], "output")
    return Signature(new_inputs, new_outputs, signature.name, signature.method, signature.extra)
