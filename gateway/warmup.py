"""Warmer: runs warm-up requests on a freshly loaded version before it turns READY.

Golden samples written by ``tensorgate export`` (``<model>/golden/<k>.npz``) are used when present, and checked
against their recorded outputs when the model's ``verify.on_load`` is set; otherwise synthetic inputs shaped
from the signature are used, so the first real request is not the slow one.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import numpy as np

from runtimes import RuntimeLoadError

if TYPE_CHECKING:
    from gateway.registry import LoadedModel
    from model_store import ModelStore

log = logging.getLogger("tensorgate.warmup")
MAX_GOLDEN = 16


def load_golden(store: ModelStore, model: str) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """Golden samples of a model: (inputs, expected outputs) pairs from ``golden/<k>.npz``."""
    samples = []
    for k in range(MAX_GOLDEN):
        try:
            raw = store.read_file(model, f"golden/{k}.npz")
        except Exception:
            raw = None
        if raw is None:
            break
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            inputs = {key[3:]: npz[key] for key in npz.files if key.startswith("in.")}
            outputs = {key[4:]: npz[key] for key in npz.files if key.startswith("out.")}
        samples.append((inputs, outputs))
    return samples


class Warmer:
    """Called by the registry in the loading thread; raising marks the version UNAVAILABLE."""

    def __init__(self, store: ModelStore | None = None) -> None:
        self.store = store

    def warm(self, model: LoadedModel) -> None:
        from gateway.registry import synthetic_inputs

        runtime = model.runtime
        if runtime is None or model.signature is None:
            return
        cfg = model.config
        golden = load_golden(self.store, model.name) if self.store is not None else []
        if golden:
            for inputs, expected in golden:
                got = runtime.infer(inputs, None)
                if cfg.verify.on_load:
                    check_outputs(model.name, model.version, got, expected, cfg.verify.atol, cfg.verify.rtol)
            log.info("%s v%s: %d golden samples passed", model.name, model.version, len(golden))
        if not cfg.warmup.enabled:
            return
        for _ in range(cfg.warmup.requests):
            runtime.infer(synthetic_inputs(model.signature, cfg.warmup.batch_size), None)


def check_outputs(
    name: str,
    version: int,
    got: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    atol: float,
    rtol: float,
) -> None:
    for key, want in expected.items():
        if key not in got:
            raise RuntimeLoadError(f"golden check failed for {name} v{version}: output {key!r} is missing")
        have = np.asarray(got[key])
        if want.dtype.kind in "fc" or have.dtype.kind in "fc":
            if have.shape != want.shape:
                raise RuntimeLoadError(
                    f"golden check failed for {name} v{version}: output {key!r} has shape {list(have.shape)}, "
                    f"golden {list(want.shape)}"
                )
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            bad = diff > atol + rtol * np.abs(want.astype(np.float64))
            if bad.any():
                raise RuntimeLoadError(
                    f"golden check failed for {name} v{version}: output {key!r} max abs error "
                    f"{float(diff.max()):.3g} exceeds atol {atol} + rtol {rtol}"
                )
        elif not np.array_equal(have, want):
            raise RuntimeLoadError(f"golden check failed for {name} v{version}: output {key!r} differs")
