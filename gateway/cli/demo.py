"""The bundled demo store: an MNIST-style MLP and a small CNN, each in every PyTorch format, with SLAs; a
TransformerEncoder for benchmarks on request. Built once and reused while the demo and torch versions match.

The factories ``gateway.cli.demo:mlp`` / ``:cnn`` / ``:transformer`` work with ``tensorgate export --factory``.
The MLP's weights are kept at ``<store>/.sources/mlp.pt`` (a torch state dict) for other frameworks' variants.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.cli.export import TORCH_FORMATS, ConsoleProgress, Progress, export_torch

DEMO_VERSION = 2
STAMP = ".demo-stamp.json"
SOURCES = ".sources"
MLP_WEIGHTS = f"{SOURCES}/mlp.pt"


@dataclass(frozen=True)
class DemoModel:
    """One demo family: its factory, inputs (``name:DTYPE:shape``), output names, batch range and config."""

    name: str
    factory: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    max_batch: int
    config: Mapping[str, Any] = field(default_factory=dict)


MLP = DemoModel(
    "mlp",
    "gateway.cli.demo:mlp",
    ("x:FP32:-1,784",),
    ("logits",),
    64,
    {"sla": {"p50_ms": 5, "p99_ms": 25}},
)
CNN = DemoModel(
    "cnn",
    "gateway.cli.demo:cnn",
    ("image:FP32:-1,3,64,64",),
    ("logits",),
    32,
    {"sla": {"p50_ms": 25, "p99_ms": 100}, "batching": {"max_batch_size": 8, "max_queue_delay_ms": 2}},
)
TRANSFORMER = DemoModel(
    "transformer",
    "gateway.cli.demo:transformer",
    ("x:FP32:-1,128,128",),
    ("y",),
    16,
    {"sla": {"p50_ms": 50, "p99_ms": 250}},
)
DEFAULT_MODELS = (MLP, CNN)


def mlp() -> Any:
    """Linear(784,128)-ReLU-Linear(128,10), fixed seed (``runtimes.export.demo_networks.mlp``)."""
    from runtimes.export.demo_networks import mlp as build

    return build()


def cnn() -> Any:
    """Conv 3->32->64 + pool + Linear to 10 on [N,3,64,64], fixed seed (``runtimes.export.demo_networks.cnn``)."""
    from runtimes.export.demo_networks import cnn as build

    return build()


def transformer() -> Any:
    """TransformerEncoder, 2 layers, d_model 128, on [N,128,128], fixed seed (``runtimes.export.demo_networks``)."""
    from runtimes.export.demo_networks import transformer as build

    return build()


def _stamp(models: Sequence[DemoModel], formats: Sequence[str]) -> dict[str, Any]:
    return {
        "demo": DEMO_VERSION,
        "torch": importlib.metadata.version("torch"),
        "models": [m.name for m in models],
        "formats": list(formats),
    }


def build_demo_store(
    path: Path,
    progress: Progress | None = None,
    models: Sequence[DemoModel] = DEFAULT_MODELS,
    formats: Sequence[str] = TORCH_FORMATS,
    force: bool = False,
) -> list[str]:
    """Export the demo models into ``path`` (skipped when its stamp records this demo version, torch version,
    models and formats, and every model folder is there); returns the store's model names."""
    say = progress or (lambda _line: None)
    path = Path(path)
    names = [f"{m.name}_{f}" for m in models for f in formats]
    want = _stamp(models, formats)
    stamp = path / STAMP
    if not force and stamp.is_file() and all((path / n / "1").is_dir() for n in names):
        try:
            if json.loads(stamp.read_text()) == want:
                say(f"demo store {path} is up to date")
                tf_variant = f"{MLP.name}_tf_savedmodel"
                return names + ([tf_variant] if MLP in models and (path / tf_variant / "1").is_dir() else [])
        except ValueError:
            pass
    stamp.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    for model in models:

        def tagged(line: str, prefix: str = model.name) -> None:
            say(line if line.startswith(prefix) else f"{prefix}: {line}")

        export_torch(
            model.factory,
            path,
            model.name,
            model.inputs,
            output_names=model.outputs,
            max_batch=model.max_batch,
            formats=formats,
            config=model.config,
            progress=tagged,
        )
    if MLP in models:
        from runtimes.export.torch_exporter import save_state_dict

        save_state_dict(mlp(), path / MLP_WEIGHTS)
        tf_name = build_mlp_savedmodel(path, formats, say)
        if tf_name:
            names.append(tf_name)
    stamp.write_text(json.dumps(want, indent=2) + "\n")
    return names


def build_mlp_savedmodel(path: Path, formats: Sequence[str], say: Progress) -> str | None:
    """The MLP as a Keras SavedModel holding the *same weights* as the PyTorch MLP, held to the same golden
    samples (copied from a PyTorch variant), so every runtime serves one identical model."""
    if importlib.util.find_spec("tensorflow") is None:  # frameworks are imported only inside runtimes/
        say("mlp: TensorFlow is not installed: NOT building mlp_tf_savedmodel (install tensorgate[tensorflow])")
        return None
    import shutil

    import yaml

    from runtimes.export.keras_exporter import export_keras, keras_mlp_like_torch

    name = f"{MLP.name}_tf_savedmodel"
    say(f"{name}: Keras Dense(128, relu) -> Dense(10) with the PyTorch MLP's weights")
    model = keras_mlp_like_torch(mlp().state_dict(), input_name="x", output_name="logits")
    shutil.rmtree(path / name, ignore_errors=True)
    export_keras(model, path, MLP.name, progress=say, onnx=False)
    goldens = [path / f"{MLP.name}_{f}" / "golden" for f in formats]
    source = next((g for g in goldens if g.is_dir()), None)
    if source is not None:
        shutil.rmtree(path / name / "golden", ignore_errors=True)
        shutil.copytree(source, path / name / "golden")
        say(f"{name}: golden samples taken from {source.parent.name} (same weights, same expected outputs)")
    config_path = path / name / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) or {}
    config.update({k: v for k, v in MLP.config.items()})
    config.setdefault("source", {})["model"] = MLP.name
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return name


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, default=Path("demo_store"), help="where to build it (default demo_store)")
    parser.add_argument("--with-transformer", action="store_true", help="also export the TransformerEncoder")
    parser.add_argument(
        "--formats", default=",".join(TORCH_FORMATS), help=f"comma-separated (default {','.join(TORCH_FORMATS)})"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp says it is up to date")


def run_demo(args: argparse.Namespace) -> int:
    models = (*DEFAULT_MODELS, TRANSFORMER) if args.with_transformer else DEFAULT_MODELS
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    console = Console(stderr=True)
    try:
        with ConsoleProgress(console) as progress:
            names = build_demo_store(args.store, progress, models, formats, force=args.force)
    except Exception as exc:  # torch.export and the exporters raise many types; the message is what helps
        console.print(f"[red]demo build failed:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
        return 1
    table = Table(title=f"demo store {args.store}")
    table.add_column("model")
    for name in names:
        table.add_row(name)
    Console().print(table)
    return 0
