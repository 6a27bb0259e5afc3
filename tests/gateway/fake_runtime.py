"""FakeRuntime: a real Runtime subclass computing ``y = scale * x`` in numpy, for data-plane unit tests.

The version folder's ``model.onnx`` holds the behaviour as text: a number (the scale), ``wide:<scale>`` (the
input is [-1, 4]: a different signature) or ``fail`` (load raises RuntimeLoadError). ``failing = True`` makes
every call fail (a crashing runtime). Inputs steer inference: ``x[0, 0] == -1`` raises RuntimeInputError, ``-2`` crashes with
ZeroDivisionError. ``gate`` (a threading.Event) makes ``infer`` block until it is set.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from runtimes.base import Runtime, RuntimeInputError, RuntimeLoadError, Signature, TensorSpec

SIGNATURE = Signature(
    inputs=(TensorSpec("x", "FP32", (-1, 3)),),
    outputs=(TensorSpec("y", "FP32", (-1, 3)), TensorSpec("total", "FP32", (-1, 1))),
)


class FakeRuntime(Runtime):
    format = "onnx"
    platform = "fake_numpy"
    artifact = "model.onnx"

    #: (event, version) in the order they happened, shared by every instance of one subclass
    events: ClassVar[list[tuple[str, int]]] = []
    #: when set, ``load`` announces itself on ``load_started`` and waits for ``load_gate``
    load_gate: ClassVar[threading.Event | None] = None
    load_started: ClassVar[threading.Event | None] = None

    def __init__(self) -> None:
        self.version = -1
        self.scale = 1.0
        self.calls = 0
        self.unloaded = False
        self.gate: threading.Event | None = None
        self.failing = False
        self.own_signature = SIGNATURE
        self.entered = threading.Semaphore(0)

    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        self.version = int(Path(path).name)
        text = (Path(path) / self.artifact).read_text().strip()
        self.events.append(("load", self.version))
        if self.load_started is not None and self.load_gate is not None:
            self.load_started.set()
            self.load_gate.wait(10)
        if text == "fail":
            raise RuntimeLoadError(f"artefact of v{self.version} is marked to fail")
        if text.startswith("wide:"):
            text = text[len("wide:") :]
            self.own_signature = Signature(inputs=(TensorSpec("x", "FP32", (-1, 4)),), outputs=SIGNATURE.outputs)
        self.scale = float(text)

    def signatures(self) -> Mapping[str, Signature]:
        return {self.own_signature.name: self.own_signature}

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        self.entered.release()
        if self.gate is not None and not self.gate.wait(10):
            raise TimeoutError("test gate was never opened")
        if self.failing:
            raise RuntimeError("this runtime was made to fail")
        x = inputs["x"]
        if x.size and x.flat[0] == -1:
            raise RuntimeInputError("x must not start with -1")
        if x.size and x.flat[0] == -2:
            raise ZeroDivisionError("the fake runtime crashed")
        y = (x * self.scale).astype(np.float32)
        result = {"y": y, "total": y.sum(axis=1, keepdims=True)}
        return {name: result[name] for name in (outputs or result)}

    def unload(self) -> None:
        self.unloaded = True
        self.events.append(("unload", self.version))


def runtime_class() -> type[FakeRuntime]:
    """A fresh subclass, so that class-level events and gates never leak between tests."""
    return type("FakeRuntimeForTest", (FakeRuntime,), {"events": [], "load_gate": None, "load_started": None})
