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
    artifact: ClassVar[str]

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
