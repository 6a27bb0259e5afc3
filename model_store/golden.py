"""Golden samples, the one owner of their file format — ``<model>/<version>/golden/<k>.npz`` with arrays
``in.<name>`` and ``out.<name>`` (each version its own samples, so a retrained version is checked against its own
outputs; the older per-model ``<model>/golden/<k>.npz`` is still read for versions without samples) — written by the
exporters, read by the load-time check and ``tensorgate verify``, and the check of a model's outputs against them
within the config's verify tolerances.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from model_store.base import ModelStore
from model_store.config import Verify

MAX_GOLDEN = 16

Golden = Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]


class Inferer(Protocol):
    """What the golden check needs: a Runtime, or a client for a model served elsewhere."""

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Result:
    """One output of one golden sample compared with what the model returned.

    ``max_rel`` is taken over the elements whose golden magnitude exceeds ``atol`` (near-zero references make
    relative error meaningless); an element passes when ``|got - golden| <= atol + rtol * |golden|``.
    """

    sample: int
    output: str
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    ok: bool
    problem: str | None = None

    def describe(self) -> str:
        if self.problem:
            return f"output {self.output!r} sample {self.sample}: {self.problem}"
        return (
            f"output {self.output!r} sample {self.sample}: max abs error {self.max_abs:.3g}, max rel error "
            f"{self.max_rel:.3g} beyond atol {self.atol:g} + rtol {self.rtol:g}"
        )


def check_golden(runtime: Inferer, samples: Golden, verify: Verify) -> list[Result]:
    """Run every golden sample through ``runtime``; one Result per sample and output (a failed call gives one
    Result with output ``*``). Never raises for a model's misbehaviour: the Results say what went wrong."""
    results: list[Result] = []
    for k, (inputs, expected) in enumerate(samples):
        try:
            got = runtime.infer(dict(inputs), None)
        except Exception as exc:
            results.append(_failed(k, "*", verify, f"inference failed: {type(exc).__name__}: {exc}"))
            continue
        for name, want in expected.items():
            results.append(compare(k, name, got.get(name), want, verify))
    return results


def compare(sample: int, name: str, got: np.ndarray | None, want: np.ndarray, verify: Verify) -> Result:
    """Compare one output with its golden value (floats within tolerance, other dtypes exactly)."""
    if got is None:
        return _failed(sample, name, verify, "missing from the model's outputs")
    have = np.asarray(got)
    if have.shape != want.shape:
        return _failed(sample, name, verify, f"shape {list(have.shape)}, golden {list(want.shape)}")
    if have.size == 0:
        return Result(sample, name, 0.0, 0.0, verify.atol, verify.rtol, True)
    a, b = have.astype(np.float64), want.astype(np.float64)
    diff = np.abs(a - b)
    both_nan = np.isnan(a) & np.isnan(b)
    diff[both_nan] = 0.0
    diff[np.isnan(diff)] = np.inf
    scale = np.abs(b)
    big = scale > verify.atol
    max_abs = float(diff.max())
    max_rel = float((diff[big] / scale[big]).max()) if big.any() else 0.0
    if want.dtype.kind in "fc" or have.dtype.kind in "fc":
        ok = bool((diff <= verify.atol + verify.rtol * np.nan_to_num(scale)).all())
    else:
        ok = max_abs == 0.0
    return Result(sample, name, max_abs, max_rel, verify.atol, verify.rtol, ok)


def failures(results: Sequence[Result], limit: int = 3) -> str | None:
    """A one-line reason naming the failing outputs (for a model state or an error), or None when all pass."""
    bad = [r for r in results if not r.ok]
    if not bad:
        return None
    text = "; ".join(r.describe() for r in bad[:limit])
    return text + (f" (and {len(bad) - limit} more)" if len(bad) > limit else "")


def _failed(sample: int, name: str, verify: Verify, problem: str) -> Result:
    return Result(sample, name, math.nan, math.nan, verify.atol, verify.rtol, False, problem)


def load_golden(
    store: ModelStore, model: str, version: int | None = None
) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Golden samples of a model version: (inputs, expected outputs) pairs from ``<version>/golden/<k>.npz``, or
    from the model's ``golden/<k>.npz`` when the version has none (the older layout)."""
    if version is not None:
        samples = _read_golden(store, model, f"{version}/golden")
        if samples:
            return samples
    return _read_golden(store, model, "golden")


def _read_golden(
    store: ModelStore, model: str, folder: str
) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    samples = []
    for k in range(MAX_GOLDEN):
        try:
            raw = store.read_file(model, f"{folder}/{k}.npz")
        except Exception:
            raw = None
        if raw is None:
            break
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            inputs = {key[3:]: npz[key] for key in npz.files if key.startswith("in.")}
            outputs = {key[4:]: npz[key] for key in npz.files if key.startswith("out.")}
        samples.append((inputs, outputs))
    return samples


def write_golden(version_dir: Path, golden: Golden) -> None:
    """``<version_dir>/golden/<k>.npz``, one per (inputs, outputs) pair; older samples are removed."""
    folder = version_dir / "golden"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for k, (inputs, outputs) in enumerate(golden):
        arrays = {f"in.{n}": np.asarray(a) for n, a in inputs.items()}
        arrays.update({f"out.{n}": np.asarray(a) for n, a in outputs.items()})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        (folder / f"{k}.npz").write_bytes(buffer.getvalue())
