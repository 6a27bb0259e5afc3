"""TorchExporter: turns an ``nn.Module`` with a dynamic batch dim into ONNX, torch.export and AOTInductor artefacts,
each with the signature sidecar the PyTorch runtimes read, and computes eager reference outputs for golden samples.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.export import Dim, ExportedProgram

from runtimes.export.inputs import ExportInput
from runtimes.pt2_signature import SIDECAR, PT2Signature
from runtimes.torch_tensor import to_numpy, to_torch

ONNX_OPSET = 18
EXAMPLE_BATCH = 2  # not 0 or 1, which torch.export would specialise on


class TorchExporter:
    """One model, exported once with ``torch.export`` (batch dim ``batch`` in [min_batch, max_batch]), written
    in any of the three formats. Output names: ``output_names`` if given, else dict keys / ``output_<i>``."""

    def __init__(
        self,
        module: nn.Module,
        inputs: Sequence[ExportInput],
        output_names: Sequence[str] | None = None,
        max_batch: int = 64,
        min_batch: int = 1,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected a torch.nn.Module, got {type(module).__name__}")
        if not inputs:
            raise ValueError("a model needs at least one input")
        self.module = module.eval()
        self.inputs = tuple(inputs)
        self.dynamic = any(i.dynamic_batch for i in self.inputs)
        if self.dynamic and (not 1 <= min_batch <= max_batch or max_batch < EXAMPLE_BATCH):
            raise ValueError(
                f"the batch range [{min_batch}, {max_batch}] must satisfy 1 <= min <= max and max >= {EXAMPLE_BATCH}"
            )
        self.min_batch, self.max_batch = min_batch, max_batch
        self.examples = self._examples(min(max(min_batch, EXAMPLE_BATCH), max_batch), seed=0)
        self.program = self._export(self.module, self.examples)
        derived = PT2Signature.from_exported_program(self.program)
        batch_symbols = {
            str(t.dims[0]): "batch"
            for t, spec in zip(derived.inputs, self.inputs, strict=True)
            if spec.dynamic_batch and isinstance(t.dims[0], str)
        }
        names = output_names if output_names is not None else derived.output_names
        self.signature = derived.renamed([i.name for i in self.inputs], list(names)).renamed_dims(batch_symbols)
        if self.dynamic and "batch" not in self.signature.ranges:
            raise ValueError("torch.export did not keep the batch dim dynamic; does the model fix the batch size?")

    # ------------------------------------------------------------------ data

    def _examples(self, batch: int, seed: int, device: str = "cpu") -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng(seed)
        return tuple(to_torch(spec.sample(batch, rng), device) for spec in self.inputs)

    def sample_inputs(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Random inputs (``ExportInput.sample``) for ``batch`` rows, reproducible from ``seed``."""
        rng = np.random.default_rng(seed)
        return {spec.name: spec.sample(batch, rng) for spec in self.inputs}

    def eager(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The eager module's outputs, named like the exported ones (the reference for golden samples)."""
        args = [to_torch(arrays[spec.name]) for spec in self.inputs]
        with torch.inference_mode():
            leaves = pytree.tree_leaves(self.module(*args))
        return {name: to_numpy(leaf).copy() for name, leaf in zip(self.signature.output_names, leaves, strict=True)}

    # ------------------------------------------------------------------ export

    def _export(self, module: nn.Module, examples: tuple[torch.Tensor, ...]) -> ExportedProgram:
        shapes = None
        if self.dynamic:
            batch = Dim("batch", min=self.min_batch, max=self.max_batch)
            shapes = tuple({0: batch} if spec.dynamic_batch else None for spec in self.inputs)
        with _quiet():
            return torch.export.export(module, examples, dynamic_shapes=shapes)

    def write_torch_export(self, folder: Path) -> Path:
        """``folder/model.pt2`` via ``torch.export.save`` plus ``signature.json``."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "model.pt2"
        torch.export.save(self.program, target)
        self.signature.write(folder / SIDECAR)
        return target

    def write_aoti(self, folder: Path, device: str = "cpu") -> Path:
        """``folder/model.pt2`` compiled by AOTInductor for ``device`` (cpu or cuda; tens of seconds) plus
        ``signature.json``. A CUDA package must be compiled on a machine with that GPU and torch build."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "model.pt2"
        program = self.program
        kind = device.partition(":")[0]
        if kind != "cpu":
            if kind != "cuda" or not torch.cuda.is_available():
                raise ValueError(f"cannot compile for device {device!r}: CUDA is not available to this torch")
            examples = tuple(t.to(device) for t in self.examples)
            program = self._export(copy.deepcopy(self.module).to(device), examples)
        with _quiet():
            torch._inductor.aoti_compile_and_package(program, package_path=str(target))
        PT2Signature(
            self.signature.inputs,
            self.signature.outputs,
            self.signature.ranges,
            device=kind,
            torch_version=self.signature.torch_version,
        ).write(folder / SIDECAR)
        return target

    def write_onnx(self, folder: Path, opset: int = ONNX_OPSET) -> Path:
        """``folder/model.onnx`` from the same program (dynamo exporter, dynamic batch kept, weights inline)."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "model.onnx"
        with _quiet():
            torch.onnx.export(
                self.program,
                self.examples,
                str(target),
                dynamo=True,
                input_names=list(self.signature.input_names),
                output_names=list(self.signature.output_names),
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
        return target


def load_state_dict(module: nn.Module, path: Path) -> nn.Module:
    """Load weights saved with ``torch.save(model.state_dict(), path)`` (tensors only) into ``module``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state dict")
    module.load_state_dict(state)
    return module


def save_state_dict(module: nn.Module, path: Path) -> Path:
    """Write ``module``'s weights for ``load_state_dict`` (and other exporters) to read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' internal chatter (optional-package notices, deprecations) off the console."""
    noisy = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "torch._inductor")]
    levels = [logger.level for logger in noisy]
    try:
        for logger in noisy:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(noisy, levels, strict=True):
            logger.setLevel(level)
