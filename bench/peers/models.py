"""The comparison's models (MLP, CNN, TransformerEncoder) as ONNX files with a dynamic batch, in a model store.

Layout (readable by tensorgate directly; the peers' adapters are pointed at the same ``model.onnx`` files):
``<store>/<name>/1/model.onnx`` and ``<store>/<name>/config.yaml``. Every model takes one FP32 input named
``input`` and gives one FP32 output named ``output``. Variants: ``<model>_batched`` (dynamic batching on) for the
CNN and the transformer, and ``<model>_q8`` (a queue of 8) for the overload run.

    .venv/bin/python bench/peers/models.py --store bench/results/peers-store
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

#: Bumped whenever a model's definition changes, so a cached store is rebuilt.
STORE_FORMAT = 1


@dataclass(frozen=True)
class ModelSpec:
    """One model of the comparison: its per-request input shape (no batch dim) and how to build it."""

    name: str
    item_shape: tuple[int, ...]
    build: Callable[[], Any]
    #: Batching settings of the ``<name>_batched`` variant (tensorgate config and MLServer adaptive batching).
    batching: dict[str, Any] | None = None
    description: str = ""


def _mlp() -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def _cnn() -> Any:
    import torch

    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def _transformer() -> Any:
    import torch

    layer = torch.nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=512, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", (784,), _mlp, description="MLP 784-128-10"),
    "cnn": ModelSpec(
        "cnn",
        (3, 64, 64),
        _cnn,
        batching={"max_batch_size": 8, "max_queue_delay_ms": 2.0},
        description="CNN 5 conv layers on [3,64,64]",
    ),
    "transformer": ModelSpec(
        "transformer",
        (128, 128),
        _transformer,
        batching={"max_batch_size": 8, "max_queue_delay_ms": 2.0},
        description="TransformerEncoder 2 layers, d_model 128, on [128,128]",
    ),
}

#: Queue bound of the ``<model>_q8`` variants used by the overload run.
OVERLOAD_QUEUE = 8
#: Instances (ORT sessions, 1 intra-op thread each) tensorgate runs per model: one per core of the 2-core box.
INSTANCES = 2


def base_name(model: str) -> str:
    """``cnn_batched`` -> ``cnn``: the spec a store entry was built from."""
    for suffix in ("_batched", "_q8"):
        if model.endswith(suffix):
            return model[: -len(suffix)]
    return model


def sample_input(model: str, batch: int = 1, seed: int = 1) -> np.ndarray:
    """A deterministic FP32 request input for a store entry."""
    spec = MODELS[base_name(model)]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *spec.item_shape)).astype(np.float32)


def _export(spec: ModelSpec, path: Path) -> None:
    import torch

    torch.manual_seed(0)
    module = spec.build().eval()
    example = torch.from_numpy(sample_input(spec.name, batch=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The fused encoder fast path (aten::_transformer_encoder_layer_fwd) has no ONNX export: trace the plain ops.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=18,
            dynamo=False,
        )
    _check(spec, module, path)


def _check(spec: ModelSpec, module: Any, path: Path) -> None:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = sample_input(spec.name, batch=batch, seed=7)
        (got,) = session.run(["output"], {"input": x})
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4, rtol=1e-3):
            raise SystemExit(f"{spec.name}: ONNX output differs from torch at batch {batch}")


def _config(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "runtime": "onnx",
        "options": {"intra_op_threads": 1, "inter_op_threads": 1, "execution_mode": "sequential"},
        "instances": INSTANCES,
    }
    config.update(extra or {})
    return config


def variants(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """Store entry name -> tensorgate config for one model."""
    out = {spec.name: _config(), f"{spec.name}_q8": _config({"max_queue_size": OVERLOAD_QUEUE})}
    if spec.batching:
        # tensorgate never waits for a fuller batch (its best setting here: ORT's cost per row is flat in the batch
        # with one intra-op thread, so waiting only idles an instance); MLServer keeps its batch time.
        out[f"{spec.name}_batched"] = _config({"batching": {**spec.batching, "max_queue_delay_ms": 0.0}})
    return out


def _fingerprint() -> str:
    source = Path(__file__).read_bytes()
    return hashlib.sha256(source + str(STORE_FORMAT).encode()).hexdigest()[:16]


def build_store(store: Path, names: list[str] | None = None, log: Callable[[str], None] = print) -> Path:
    """Export the models (all, or ``names``) with their variants into ``store``; cached by a stamp file."""
    store.mkdir(parents=True, exist_ok=True)
    stamp_path = store / ".peers-store.json"
    stamp: dict[str, str] = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
    fingerprint = _fingerprint()
    for name in names or list(MODELS):
        spec = MODELS[name]
        onnx_path = store / spec.name / "1" / "model.onnx"
        fresh = stamp.get(spec.name) != fingerprint or not onnx_path.exists()
        if fresh:
            log(f"exporting {spec.name} ({spec.description}) -> {onnx_path}")
            _export(spec, onnx_path)
        for entry, config in variants(spec).items():
            (store / entry).mkdir(parents=True, exist_ok=True)
            (store / entry / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            if entry != spec.name:
                target = store / entry / "1" / "model.onnx"
                target.parent.mkdir(parents=True, exist_ok=True)
                if fresh or not target.exists():
                    shutil.copyfile(onnx_path, target)
        stamp[spec.name] = fingerprint
        stamp_path.write_text(json.dumps(stamp, indent=1))
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("bench/results/peers-store"))
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    args = parser.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {list(MODELS)}")
    build_store(args.store, names)
    for entry in sorted(p.name for p in args.store.iterdir() if p.is_dir()):
        print(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
