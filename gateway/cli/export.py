"""``tensorgate export``: a framework model -> one store model per format, each with config.yaml and golden samples.

PyTorch writes ``<name>_onnx``, ``<name>_torch_export`` and ``<name>_torch_aoti`` (``runtimes.export.torch_exporter``);
``--framework keras`` hands over to ``runtimes.export.keras_exporter``. Frameworks are imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.status import Status
from rich.table import Table

from model_store.base import CONFIG_FILE, StoreError, check_model_name
from model_store.config import ModelConfig, Verify
from model_store.golden import write_golden
from runtimes import runtime_class
from runtimes.export.inputs import ExportInput

Progress = Callable[[str], None]
Golden = list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]

TORCH_FORMATS = ("onnx", "torch_export", "torch_aoti")
# Golden-check tolerances per format, written to each config's ``verify`` block: torch_export runs the same
# eager kernels as the reference; AOTInductor and ONNX Runtime fuse and reorder float arithmetic.
TOLERANCES: dict[str, tuple[float, float]] = {
    "torch_export": (1e-5, 1e-4),
    "torch_aoti": (1e-4, 1e-3),
    "onnx": (1e-4, 1e-3),
}
GOLDEN_BATCHES = (1, 3, 8, 2, 5, 16)
_STEP_TEXT = {
    "onnx": "writing ONNX (dynamo exporter)",
    "torch_export": "saving the torch.export archive",
    "torch_aoti": "compiling AOTInductor package (tens of seconds)",
}


class ExportError(RuntimeError):
    """The model could not be built, exported, or its artefact disagreed with the eager model."""


def resolve_factory(spec: str) -> Any:
    """``module:attr`` -> the object, called when callable (a factory returning a model)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ExportError(f"factory {spec!r} is not of the form module:function")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ExportError(f"cannot import factory {spec!r}: {exc}") from exc
    if isinstance(target, type) or (callable(target) and not hasattr(target, "state_dict")):
        return target()
    return target  # already a model instance


def export_torch(
    factory: str | Any,
    store: Path,
    name: str,
    inputs: Sequence[ExportInput | str],
    *,
    output_names: Sequence[str] | None = None,
    max_batch: int = 64,
    formats: Sequence[str] = TORCH_FORMATS,
    state_dict: Path | None = None,
    version: int = 1,
    samples: int = 3,
    config: Mapping[str, Any] | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> list[str]:
    """Export a PyTorch model (an ``nn.Module`` or a ``module:factory`` string) into ``store``.

    Each format in ``formats`` becomes the model ``<name>_<format>`` with version folder ``version``, a
    ``config.yaml`` (runtime, source, verify tolerances, max_batch_size, plus ``config``'s fields; fields a user
    added to an existing config are kept) and ``samples`` golden samples computed by eager PyTorch on the same
    inputs for every format. Each artefact is loaded with its runtime and checked against the golden samples
    before it replaces the previous version. Returns the model names written.
    """
    say = progress or (lambda _line: None)
    unknown = [f for f in formats if f not in TORCH_FORMATS]
    if unknown or not formats:
        raise ExportError(f"formats {list(formats)}: choose from {', '.join(TORCH_FORMATS)}")
    specs = [i if isinstance(i, ExportInput) else ExportInput.parse(i) for i in inputs]
    for fmt in formats:
        try:
            check_model_name(f"{name}_{fmt}")
        except StoreError as exc:
            raise ExportError(str(exc)) from None
    from runtimes.export import torch_exporter

    say("building the model")
    module = resolve_factory(factory) if isinstance(factory, str) else factory
    if state_dict is not None:
        torch_exporter.load_state_dict(module, Path(state_dict))
    say("tracing with torch.export")
    exporter = torch_exporter.TorchExporter(module, specs, output_names, max_batch=max_batch)
    say(f"computing {samples} golden samples in eager PyTorch")
    golden: Golden = []
    for k in range(samples):
        sample = exporter.sample_inputs(min(GOLDEN_BATCHES[k % len(GOLDEN_BATCHES)], max_batch), seed=1000 + k)
        golden.append((sample, exporter.eager(sample)))
    torch_version = importlib.metadata.version("torch")
    source = {
        "model": name,
        "factory": factory if isinstance(factory, str) else f"{type(factory).__module__}.{type(factory).__qualname__}",
        "inputs": [_spec_text(s) for s in specs],
        "exported_by": f"torch {torch_version}",
    }
    if state_dict is not None:
        source["state_dict"] = str(state_dict)
    written = []
    for fmt in formats:
        model = f"{name}_{fmt}"
        model_dir = Path(store) / model
        say(f"{model}: {_STEP_TEXT[fmt]}")
        staging = model_dir / f".{version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            if fmt == "onnx":
                exporter.write_onnx(staging)
            elif fmt == "torch_export":
                exporter.write_torch_export(staging)
            else:
                exporter.write_aoti(staging, device)
            say(f"{model}: checking against the golden samples")
            _check_artefact(fmt, staging, golden, {"device": device} if fmt != "onnx" else {})
            write_golden(staging, golden)  # the samples of this version: a retrained one brings its own
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        final = model_dir / str(version)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        atol, rtol = TOLERANCES[fmt]
        settings: dict[str, Any] = {
            **dict(config or {}),
            "runtime": fmt,
            "source": {**source, "format": fmt},
            "verify": Verify(atol=atol, rtol=rtol).model_dump(),
        }
        if exporter.dynamic:
            settings["max_batch_size"] = max_batch
        if fmt != "onnx" and device != "cpu":  # torch_export: the program moves there at load
            settings["options"] = {**settings.get("options", {}), "device": device}
        write_config(model_dir, settings)
        written.append(model)
    return written


def write_config(model_dir: Path, settings: Mapping[str, Any]) -> ModelConfig:
    """Write ``config.yaml``: ``settings`` over what an existing config says (so user edits survive)."""
    path = model_dir / CONFIG_FILE
    current = (
        ModelConfig.parse(path.read_bytes(), str(path)).model_dump(exclude_defaults=True) if path.is_file() else {}
    )
    config = ModelConfig.from_dict({**current, **settings}, str(path))
    data = config.model_dump(exclude_defaults=True)
    data["verify"] = config.verify.model_dump()  # tolerances stay visible even where they equal the defaults
    model_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def _check_artefact(fmt: str, folder: Path, golden: Golden, options: Mapping[str, Any]) -> None:
    from model_store.golden import check_golden, failures

    atol, rtol = TOLERANCES[fmt]
    runtime = runtime_class(fmt)()
    runtime.load(folder, options)
    try:
        problems = failures(check_golden(runtime, golden, Verify(atol=atol, rtol=rtol)))
    finally:
        runtime.unload()
    if problems:
        raise ExportError(f"the {fmt} artefact disagrees with eager PyTorch: {problems}")


def _spec_text(spec: ExportInput) -> str:
    text = f"{spec.name}:{spec.datatype}:{','.join(str(d) for d in spec.shape)}"
    if spec.low is not None or spec.high is not None:
        text += f":{spec.low if spec.low is not None else ''}..{spec.high if spec.high is not None else ''}"
    return text


class ConsoleProgress:
    """Progress lines on stderr: a spinner on the current step, a tick and its duration when it is done."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._status: Status | None = None
        self._step: str | None = None
        self._started = 0.0

    def __call__(self, line: str) -> None:
        self._finish()
        self._step, self._started = line, time.perf_counter()
        if self.console.is_terminal:
            self._status = self.console.status(f"{line}…")
            self._status.start()
        else:
            self.console.print(f"… {line}", highlight=False, soft_wrap=True)

    def _finish(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if self._step is not None:
            elapsed = time.perf_counter() - self._started
            step = re.sub(r" \([^)]*\)$", "", self._step)  # drop a hint such as "(tens of seconds)"
            self.console.print(f"[green]✓[/] {step} [dim]({elapsed:.1f} s)[/]", highlight=False, soft_wrap=True)
            self._step = None

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self._finish()
        elif self._status is not None:
            self._status.stop()
            self._status = None


# ---------------------------------------------------------------------------------------------- command line


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framework", choices=["torch", "keras"], default="torch", help="default torch")
    parser.add_argument(
        "--factory", required=True, help="module:function returning the model (keras: also a .keras/.h5 file)"
    )
    parser.add_argument("--state-dict", type=Path, help="torch: weights saved with torch.save(model.state_dict())")
    parser.add_argument(
        "--input",
        action="append",
        dest="inputs",
        default=[],
        metavar="NAME:DTYPE:SHAPE[:LOW..HIGH]",
        help="an input, e.g. x:FP32:-1,784 (-1 first = dynamic batch; LOW..HIGH bounds random sample values, "
        "e.g. ids:INT64:-1,16:0..1000); repeat per input, in the order the model takes them",
    )
    parser.add_argument(
        "--output", action="append", dest="outputs", metavar="NAME", help="torch: name the outputs, in order"
    )
    parser.add_argument("--store", required=True, type=Path, help="store folder to write into")
    parser.add_argument("--name", required=True, help="model family name; models are <name>_<format>")
    parser.add_argument(
        "--formats", default=",".join(TORCH_FORMATS), help=f"comma-separated (default {','.join(TORCH_FORMATS)})"
    )
    parser.add_argument("--max-batch", type=int, default=64, help="largest batch the export accepts (default 64)")
    parser.add_argument("--version", type=int, default=1, help="version folder to write (default 1)")
    parser.add_argument("--samples", type=int, default=3, help="golden samples per model (default 3)")
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch_aoti: compile for cpu or cuda; torch_export: serve there (default cpu)",
    )


def run_export(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    try:
        specs = [ExportInput.parse(text) for text in args.inputs]
        with ConsoleProgress(console) as progress:
            if args.framework == "keras":
                written = _export_keras(args, specs, formats, progress)
            else:
                if not specs:
                    raise ExportError("torch export needs at least one --input NAME:DTYPE:SHAPE")
                written = export_torch(
                    args.factory,
                    args.store,
                    args.name,
                    specs,
                    output_names=args.outputs,
                    max_batch=args.max_batch,
                    formats=formats,
                    state_dict=args.state_dict,
                    version=args.version,
                    samples=args.samples,
                    device=args.device,
                    progress=progress,
                )
    except Exception as exc:  # torch.export and the exporters raise many types; the message is what helps
        console.print(f"[red]export failed:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
        return 1
    table = Table(title=f"exported into {args.store}")
    table.add_column("model")
    table.add_column("version")
    for model in written:
        table.add_row(model, str(args.version))
    Console().print(table)
    return 0


def _export_keras(
    args: argparse.Namespace, specs: Sequence[ExportInput], formats: Sequence[str], progress: Progress
) -> list[str]:
    try:
        keras_exporter = importlib.import_module("runtimes.export.keras_exporter")
    except ImportError as exc:
        raise ExportError(f"Keras export is not available here: {exc}") from exc
    shapes = {s.name: list(s.shape[1:] if s.dynamic_batch else s.shape) for s in specs}
    written: list[str] = keras_exporter.export_keras(
        args.factory,
        args.store,
        args.name,
        progress=progress,
        samples=args.samples,
        input_shapes=shapes or None,
        onnx="onnx" in formats,
    )
    return written
