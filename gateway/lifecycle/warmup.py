"""Warmer: runs warm-up requests on a freshly loaded version before it turns READY.

Golden samples written by ``tensorgate export`` (``<model>/<version>/golden/<k>.npz``, or the model's older
``<model>/golden/``) are used when present, and checked against their recorded outputs when the model's
``verify.on_load`` is set (a failure then fails the load). Declared samples (``warmup.samples``: Triton's
``model_warmup``, zeros, random values or files in ``<model>/warmup/``) run next, and fail the load when they fail,
as in Triton. Without them, synthetic inputs shaped from the signature are used so the first real request is not
the slow one; made-up data proves nothing about the model, so a synthetic request that fails is logged and the
version serves.
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
    from model_store.config import WarmupSample

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
        if cfg.warmup.samples:
            for sample in cfg.warmup.samples:
                inputs = self.sample_inputs(model.name, sample)
                for _ in range(sample.count):
                    try:
                        runtime.infer(inputs, None)
                    except Exception as exc:
                        raise RuntimeLoadError(
                            f"warm-up sample {sample.name!r} failed for {model.name} v{model.version}: {exc}"
                        ) from exc
            log.info("%s v%s: %d warm-up samples ran", model.name, model.version, len(cfg.warmup.samples))
            return
        for _ in range(cfg.warmup.requests):
            try:
                runtime.infer(synthetic_inputs(model.signature, cfg.warmup.batch_size), None)
            except Exception as exc:  # made-up data: the model may rightly refuse it; real requests decide
                log.warning(
                    "%s v%s: synthetic warm-up failed, serving anyway (declare warm-up samples to warm it up): %s: %s",
                    model.name, model.version, type(exc).__name__, exc,
                )  # fmt: skip
                return

    def sample_inputs(self, model: str, sample: WarmupSample) -> dict[str, np.ndarray]:
        """A declared sample's inputs; RuntimeLoadError names the sample, the input and what is wrong."""
        out: dict[str, np.ndarray] = {}
        rng = np.random.default_rng(0)
        for spec in sample.inputs:
            where = f"warm-up sample {sample.name!r} input {spec.name!r}"
            dtype = DATATYPES.get(spec.datatype)
            if dtype is None:
                raise RuntimeLoadError(f"{where}: unknown datatype {spec.datatype}")
            count = _elements(spec.shape, where)
            if spec.source == "file":
                raw = self.store.read_file(model, f"warmup/{spec.file}") if self.store is not None else None
                if raw is None:
                    raise RuntimeLoadError(f"{where}: {model}/warmup/{spec.file} does not exist")
                out[spec.name] = _from_file(raw, spec.datatype, spec.shape, count, f"{where} ({spec.file})")
            elif spec.datatype == "BYTES":  # Triton: zero and random strings are both empty
                out[spec.name] = np.full(spec.shape, b"", dtype=np.object_)
            elif spec.source == "random" and spec.datatype != "BOOL":
                raw = rng.integers(0, 256, count * dtype.numpy.itemsize, dtype=np.uint8).tobytes()
                array = np.frombuffer(raw, dtype=dtype.numpy).reshape(spec.shape)
                out[spec.name] = np.nan_to_num(array) if array.dtype.kind == "f" else array.copy()
            else:
                out[spec.name] = np.zeros(spec.shape, dtype=dtype.numpy)
        return out


MAX_WARMUP_ELEMENTS = 1 << 24  # per input: what a warm-up may allocate, checked before allocating


def _elements(shape: list[int] | tuple[int, ...], where: str) -> int:
    count = 1
    for dim in shape:
        count *= max(int(dim), 0)
        if count > MAX_WARMUP_ELEMENTS:
            raise RuntimeLoadError(f"{where}: shape {list(shape)} has more than {MAX_WARMUP_ELEMENTS} elements")
    return count


def _from_file(raw: bytes, datatype: str, shape: list[int], count: int, where: str) -> np.ndarray:
    """Triton's warm-up file format: the tensor's raw bytes; strings as 4-byte little-endian length + bytes."""
    if datatype != "BYTES":
        dtype = DATATYPES[datatype].numpy
        need = count * dtype.itemsize
        if len(raw) != need:
            raise RuntimeLoadError(f"{where}: {len(raw)} bytes, expected {need} for {datatype} {shape}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    items: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(items) < count:
        if offset + 4 > len(raw):
            raise RuntimeLoadError(f"{where}: truncated length prefix at byte {offset}")
        size = int.from_bytes(raw[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(raw):
            raise RuntimeLoadError(f"{where}: element {len(items)} of {size} bytes runs past the end of the file")
        items.append(raw[offset : offset + size])
        offset += size
    if len(items) != count or offset != len(raw):
        raise RuntimeLoadError(f"{where}: expected {count} strings filling the file, found {len(items)}")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array.reshape(shape)


def synthetic_inputs(signature: Signature, batch: int = 1) -> dict[str, np.ndarray]:
    """Inputs shaped from the signature (free dims: batch for the leading one, 1 elsewhere) for warm-up."""
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = [batch if (i == 0 and d == -1) else (1 if d == -1 else d) for i, d in enumerate(spec.shape)]
        _elements(shape, f"synthetic warm-up input {spec.name!r}")
        if spec.datatype == "BYTES":
            arr = np.empty(shape, dtype=np.object_)
            arr.fill(b"")
            out[spec.name] = arr
        else:
            out[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype].numpy)
    return out
