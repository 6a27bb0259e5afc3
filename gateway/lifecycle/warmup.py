"""Warmer: runs warm-up requests on a freshly loaded version before it turns READY.

Golden samples written by ``tensorgate export`` (``<model>/<version>/golden/<k>.npz``, or the model's older
``<model>/golden/``) are used when present, and checked
against their recorded outputs when the model's ``verify.on_load`` is set; otherwise synthetic inputs shaped
from the signature are used, so the first real request is not the slow one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from gateway.core.types import DATATYPES
from model_store.golden import check_golden, failures, load_golden
from runtimes import RuntimeLoadError, Signature

if TYPE_CHECKING:
    from gateway.lifecycle.model import ModelVersion
    from model_store import ModelStore

log = logging.getLogger("tensorgate.warmup")


class Warmer:
    """Called by the host in the loading thread, before the version is published; raising marks it UNAVAILABLE."""

    def __init__(self, store: ModelStore | None = None) -> None:
        self.store = store

    def warm(self, model: ModelVersion) -> None:
        runtime = model.runtime
        if runtime is None or model.signature is None:
            return
        cfg = model.config
        golden = load_golden(self.store, model.name, model.version) if self.store is not None else []
        if golden:
            results = check_golden(runtime, golden, cfg.verify)
            problem = failures(results)
            if problem and cfg.verify.on_load:
                raise RuntimeLoadError(f"golden check failed for {model.name} v{model.version}: {problem}")
            if problem:
                log.warning(
                    "%s v%s: golden check failed (verify.on_load is off): %s", model.name, model.version, problem
                )
            else:
                log.info("%s v%s: %d golden samples passed", model.name, model.version, len(golden))
        if not cfg.warmup.enabled:
            return
        for _ in range(cfg.warmup.requests):
            runtime.infer(synthetic_inputs(model.signature, cfg.warmup.batch_size), None)


def synthetic_inputs(signature: Signature, batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs shaped from the signature (free dims: batch for the leading one, 1 elsewhere) for warm-up."""
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = [batch if (i == 0 and d == -1) else (1 if d == -1 else d) for i, d in enumerate(spec.shape)]
        if spec.datatype == "BYTES":
            arr = np.empty(shape, dtype=np.object_)
            arr.fill(b"")
            out[spec.name] = arr
        else:
            out[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype].numpy)
    return out
