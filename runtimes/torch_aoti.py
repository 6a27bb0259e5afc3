"""TorchAOTIRuntime: serves an AOTInductor package (``model.pt2``, with or without a ``signature.json`` sidecar).

Thread counts are process-wide in PyTorch; see ``runtimes.torch_threads``. A CPU package is compiled with
``-march=native``: it runs on CPUs with the compiling machine's instruction set (and the same torch build).
``python -m runtimes.torch_aoti FOLDER OPTIONS_JSON`` is the probe: it loads the package and runs it once, alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch._inductor.package import load_package

from runtimes.base import DEFAULT_SIGNATURE, Runtime, RuntimeLoadError, Signature
from runtimes.datatype import numpy_dtype
from runtimes.pt2_package import PackageRecord, package_signature, read_package
from runtimes.pt2_signature import SIDECAR, PT2Signature, pt2_file
from runtimes.torch_tensor import quiet_readonly_warning, to_numpy, to_torch
from runtimes.torch_threads import adopt_in_this_thread, apply_thread_options


class TorchAOTIRuntime(Runtime):
    """An AOTInductor package loaded with ``torch._inductor`` (``aoti_load_package``'s loader) and run directly.

    The package cannot tell its own signature reliably, so the exporter writes ``signature.json`` beside
    ``model.pt2`` (schema in ``runtimes.pt2_signature``): names, V2 datatypes, dims and the exported range of each
    dynamic dim. A package without it (``aoti_compile_and_package`` run by hand) gets its signature from what it
    records and from config.yaml's ``inputs``/``outputs`` (``runtimes.pt2_package``). Inputs are checked against
    the signature before the compiled code runs (the compiled code itself does not check the batch range),
    raising RuntimeInputError naming the input.

    Options:
      ``device``: ``cpu`` (default), ``cuda`` or ``cuda:<n>``; the package must have been compiled for that device
      kind, and CUDA must be available, else RuntimeLoadError.
      ``num_runners``: model instances in the package's container (default 1). Calls beyond it wait in Python,
      never inside the container: a caller blocked there keeps the GIL, which the running calls need to free
      their numpy-backed inputs, and the process deadlocks.
      ``inputs`` / ``outputs``: config overrides, as for ``TorchExportRuntime``; without a sidecar they also declare
      what the package does not record (see ``runtimes.pt2_package``).
      ``filename``: the package's file name in the version folder (default ``model.pt2``).
      ``intra_op_threads`` / ``inter_op_threads``: torch thread pools (process-wide).
      ``probe``: load the package and run it once in a child process first (``auto``, the default: for CUDA
      packages; ``true``; ``false``). The package's native code runs inside the server process, and a crash there
      takes every model down with it: torch 2.11's loader segfaults on CUDA packages on some machines (its own
      minimal example too). A child that dies turns into a RuntimeLoadError naming the signal. Costs a few seconds
      of load time (the child imports torch).
    """

    format = "torch_aoti"
    platform = "torch_aoti"
    artifact = "model.pt2"

    def __init__(self) -> None:
        self._loader: Any = None
        self._sig: PT2Signature | None = None
        self._signature: Signature | None = None
        self._device = "cpu"
        self._slots = threading.BoundedSemaphore(1)

    @property
    def device(self) -> str:
        return self._device

    def load(self, path: Path, options: Mapping[str, Any]) -> None:
        file = pt2_file(Path(path), options)
        self.artifact = file.name
        sidecar = Path(path) / SIDECAR
        sig: PT2Signature | None = None
        record: PackageRecord | None = None
        if sidecar.is_file():
            sig = PT2Signature.read(sidecar).overridden(options.get("inputs"), options.get("outputs"))
            compiled_for = sig.device
        else:
            record = read_package(file)
            compiled_for = record.device
        device = str(options.get("device", "cpu"))
        kind, _, index_text = device.partition(":")
        if kind not in ("cpu", "cuda") or (index_text and not index_text.isdigit()) or (kind == "cpu" and index_text):
            raise RuntimeLoadError(f"options.device={device!r}: expected cpu, cuda or cuda:<n>")
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeLoadError(
                f"{file}: options.device={device!r} but CUDA is not available to torch {torch.__version__} here"
            )
        if compiled_for != kind:
            raise RuntimeLoadError(
                f"{file} was compiled for {compiled_for!r} and cannot run on {device!r}: compile a package for "
                f"{kind} (`tensorgate export` or aoti_compile_and_package) on a machine that has it"
            )
        probe = options.get("probe", "auto")
        if probe not in ("auto", True, False):
            raise RuntimeLoadError(f"option probe must be auto, true or false, got {probe!r}")
        if probe is True or (probe == "auto" and kind == "cuda"):
            _probe(Path(path), {**options, "probe": False})
        num_runners = options.get("num_runners", 1)
        if isinstance(num_runners, bool) or not isinstance(num_runners, int) or num_runners < 1:
            raise RuntimeLoadError(f"option num_runners must be a positive integer, got {num_runners!r}")
        apply_thread_options(options, str(path))
        quiet_readonly_warning()
        try:
            compiled = load_package(
                str(file), num_runners=num_runners, device_index=int(index_text) if index_text else -1
            )
        except Exception as exc:
            built = f" (compiled by torch {sig.torch_version})" if sig is not None and sig.torch_version else ""
            raise RuntimeLoadError(
                f"{file}: AOTInductor package failed to load in torch {torch.__version__}{built}: {exc}"
            ) from exc
        in_text, out_text = compiled.loader.get_call_spec()
        if sig is None:
            assert record is not None
            device_for = device

            def run(flat: list[torch.Tensor]) -> list[torch.Tensor]:
                with torch.inference_mode():
                    result: list[torch.Tensor] = compiled.loader.boxed_run([t.to(device_for) for t in flat])
                return result

            sig = package_signature(file, record, (in_text, out_text), run, options)
        in_leaves = pytree.treespec_loads(in_text).num_leaves
        out_leaves = pytree.treespec_loads(out_text).num_leaves
        if in_leaves != len(sig.inputs) or out_leaves != len(sig.outputs):
            where = sidecar if sidecar.is_file() else file
            raise RuntimeLoadError(
                f"{where} lists {len(sig.inputs)} inputs / {len(sig.outputs)} outputs but the package takes "
                f"{in_leaves} / returns {out_leaves}"
            )
        self._loader = compiled.loader
        self._slots = threading.BoundedSemaphore(num_runners)
        self._sig = sig
        self._signature = sig.signature()
        self._device = device

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
        loader, sig = self._loader, self._sig
        if loader is None or sig is None:
            raise RuntimeLoadError("model is not loaded")
        sig.check(inputs)
        wanted = sig.output_index(outputs)
        flat = [to_torch(inputs[name], self._device) for name in sig.input_names]
        adopt_in_this_thread()
        with self._slots, torch.inference_mode():
            results = loader.boxed_run(flat)
        return {name: to_numpy(results[i]) for i, name in wanted}

    def unload(self) -> None:
        self._loader = None
        self._sig = None
        self._signature = None


PROBE_TIMEOUT_S = 600.0  # a first CUDA load can JIT kernels for minutes


def _probe(folder: Path, options: Mapping[str, Any]) -> None:
    """Load ``folder``'s package and run it once on zeros in a child process; RuntimeLoadError if that fails."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "runtimes.torch_aoti", str(folder), json.dumps(dict(options))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeLoadError(f"{folder}: the probe process did not finish within {PROBE_TIMEOUT_S:.0f} s") from None
    if done.returncode == 0:
        return
    if done.returncode < 0:
        number = -done.returncode
        name = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        reason = f"crashed with {name}"
    else:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = f"failed: {lines[-1] if lines else f'exit status {done.returncode}'}"
    raise RuntimeLoadError(
        f"{folder / TorchAOTIRuntime.artifact}: loading and running the package in a probe process {reason}; "
        f"it was not loaded into the server (torch {torch.__version__})"
    )


def _probe_main(folder: str, options_json: str) -> None:
    runtime = TorchAOTIRuntime()
    runtime.load(Path(folder), json.loads(options_json))
    sig = runtime._sig
    if sig is None:
        raise RuntimeLoadError(f"{folder}: loaded without a signature")
    zeros = {
        t.name: np.zeros(
            [d if isinstance(d, int) else sig.ranges.get(str(d), (1, None))[0] for d in t.dims],
            dtype=numpy_dtype(t.datatype),
        )
        for t in sig.inputs
    }
    runtime.infer(zeros)
    runtime.unload()


if __name__ == "__main__":
    _probe_main(*sys.argv[1:3])
