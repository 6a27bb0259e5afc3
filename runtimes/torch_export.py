"""TorchExportRuntime: serves a ``torch.export`` archive (``model.pt2``) by running its module in eager PyTorch.

Thread counts are process-wide in PyTorch, so several torch models in one process share one setting: intra-op
threads are the largest any loaded model asked for, inter-op threads the first asked for, with a warning when a
model asks for something else (``runtimes.torch_threads``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch.export.passes import move_to_device_pass

from runtimes.base import DEFAULT_SIGNATURE, Runtime, RuntimeLoadError, Signature
from runtimes.pt2_pickle import pickled_parts
from runtimes.pt2_signature import SIDECAR, PT2Signature, pt2_file
from runtimes.torch_tensor import quiet_readonly_warning, to_numpy, to_torch
from runtimes.torch_threads import apply_thread_options

log = logging.getLogger(__name__)


class TorchExportRuntime(Runtime):
    """``torch.export.load(<version>/model.pt2).module()`` run under ``torch.inference_mode()`` on ``options.device``.

    Signature: input names, V2 datatypes and shapes come from the ExportedProgram (user-input placeholders and
    their example metadata; symbolic dims become -1, bounded by ``ep.range_constraints``); outputs are the leaves
    of the output pytree, named by dict key or ``output_<i>`` for tuple positions. A ``signature.json`` sidecar
    beside ``model.pt2`` (written by the exporter) supplies the names instead.

    Options:
      ``inputs`` / ``outputs``: config overrides, lists of ``{name, datatype, shape}`` (ModelConfig.inputs /
      outputs dumped). Entries that all name existing tensors adjust those by name; otherwise the list covers
      every tensor in order and renames them. Datatypes must equal the model's; a shape keeps -1 or pins a dim.
      ``intra_op_threads`` / ``inter_op_threads``: torch thread pools (process-wide, see ``runtimes.torch_threads``).
      ``device``: ``cpu`` (default), ``cuda`` or ``cuda:<n>``: the program's weights and constants are moved
      there at load, inputs are copied there per call and outputs come back to the CPU; RuntimeLoadError when
      CUDA is asked for and torch cannot reach it.
      ``filename``: the archive's file name in the version folder (default ``model.pt2``).
      ``allow_pickle``: load archives with pickled parts (weights of tensor subclasses, custom objects); refused by
      default, since unpickling runs code from the store (``runtimes.pt2_pickle``).

    Inputs are checked against the signature and the dims' exported ranges before the module runs, so a wrong
    rank, dtype or out-of-range batch raises RuntimeInputError naming the input.
    """

    format = "torch_export"
    platform = "pytorch_torch_export"
    artifact = "model.pt2"

    def __init__(self) -> None:
        self._module: torch.nn.Module | None = None
        self._sig: PT2Signature | None = None
        self._signature: Signature | None = None
        self._kwargs_spec: pytree.TreeSpec | None = None
        self._device = "cpu"

    @property
    def device(self) -> str:
        return self._device

    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        file = pt2_file(Path(path), options)
        self.artifact = file.name
        device = _device(file, options.get("device", "cpu"))
        apply_thread_options(options, str(path))
        quiet_readonly_warning()
        try:
            pickled = pickled_parts(file)
        except Exception as exc:
            raise RuntimeLoadError(f"{file}: not a readable torch.export archive: {exc}") from exc
        if pickled and not options.get("allow_pickle", False):
            raise RuntimeLoadError(
                f"{file}: refusing to load an archive with pickled parts ({', '.join(pickled[:3])}): unpickling runs "
                "code from the store. Re-export it with plain tensors, or trust it with options.allow_pickle: true "
                "(or tensorgate serve --allow-pickle)"
            )
        if pickled:
            log.warning("%s: loading pickled parts (%s): the store is trusted to run code", file, ", ".join(pickled))
        try:
            ep = torch.export.load(file)
        except Exception as exc:
            raise RuntimeLoadError(f"{file}: torch.export.load failed with torch {torch.__version__}: {exc}") from exc
        sig = PT2Signature.from_exported_program(ep)
        sidecar = Path(path) / SIDECAR
        if sidecar.is_file():
            sig = _named_like(sig, PT2Signature.read(sidecar), sidecar)
        sig = sig.overridden(options.get("inputs"), options.get("outputs"))
        in_spec = ep.call_spec.in_spec
        if in_spec is None or in_spec.num_leaves != len(sig.inputs):
            raise RuntimeLoadError(f"{file}: the program's input spec does not match its {len(sig.inputs)} inputs")
        _args_spec, kwargs_spec = in_spec.children()
        self._kwargs_spec = in_spec if kwargs_spec.num_leaves else None
        if device != "cpu":
            try:
                ep = move_to_device_pass(ep, device)
            except Exception as exc:
                raise RuntimeLoadError(f"{file}: could not move the program to {device}: {exc}") from exc
        self._module = ep.module()
        self._device = device
        self._sig = sig
        self._signature = sig.signature()

    def signatures(self) -> Mapping[str, Signature]:
        if self._signature is None:
            raise RuntimeLoadError("model is not loaded")
        return {DEFAULT_SIGNATURE: self._signature}

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        signature: str | None = None,
    ) -> dict[str, np.ndarray]:
        module, sig = self._module, self._sig
        if module is None or sig is None:
            raise RuntimeLoadError("model is not loaded")
        sig.check(inputs)
        wanted = sig.output_index(outputs)
        flat = [to_torch(inputs[name], self._device) for name in sig.input_names]
        with torch.inference_mode():
            if self._kwargs_spec is None:
                result = module(*flat)
            else:
                args, kwargs = pytree.tree_unflatten(flat, self._kwargs_spec)
                result = module(*args, **kwargs)
        leaves = pytree.tree_leaves(result)
        return {name: to_numpy(leaves[i]) for i, name in wanted}

    def unload(self) -> None:
        self._module = None
        self._sig = None
        self._signature = None


def _device(file: Path, value: object) -> str:
    """``cpu``, ``cuda`` or ``cuda:<n>``, checked against what this torch can reach; RuntimeLoadError otherwise."""
    device = str(value)
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise RuntimeLoadError(f"{file}: options.device={device!r}: expected cpu, cuda or cuda:<n>")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeLoadError(
                f"{file}: options.device={device!r} but CUDA is not available to torch {torch.__version__} here "
                "(no GPU, or a CPU-only torch build); serve it with options.device: cpu"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise RuntimeLoadError(
                f"{file}: options.device={device!r} but torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def _named_like(derived: PT2Signature, sidecar: PT2Signature, where: Path) -> PT2Signature:
    """Take names (tensors and dynamic dims) from the exporter's sidecar; the program stays the truth for types."""
    if len(sidecar.inputs) != len(derived.inputs) or len(sidecar.outputs) != len(derived.outputs):
        raise RuntimeLoadError(
            f"{where} lists {len(sidecar.inputs)} inputs / {len(sidecar.outputs)} outputs, the program has "
            f"{len(derived.inputs)} / {len(derived.outputs)}"
        )
    dims: dict[str, str] = {}
    for ours, theirs in zip((*derived.inputs, *derived.outputs), (*sidecar.inputs, *sidecar.outputs), strict=True):
        for mine, named in zip(ours.dims, theirs.dims, strict=False):
            if isinstance(mine, str) and isinstance(named, str):
                dims.setdefault(mine, named)
    return derived.renamed(sidecar.input_names, sidecar.output_names).renamed_dims(dims)
