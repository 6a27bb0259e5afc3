"""Runtime lookup by artefact format; framework modules are imported only when their format is used."""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path

from runtimes.base import Runtime, RuntimeCrashed, RuntimeInputError, RuntimeLoadError, Signature, TensorSpec

__all__ = [
    "RUNTIMES",
    "Runtime",
    "RuntimeCrashed",
    "RuntimeInputError",
    "RuntimeLoadError",
    "Signature",
    "TensorSpec",
    "detect_format",
    "runtime_class",
]

# format -> "module:Class"; imported lazily so an ONNX-only deployment never imports torch or TensorFlow.
RUNTIMES: dict[str, str] = {
    "onnx": "runtimes.onnx_runtime:OnnxRuntime",
    "torch_export": "runtimes.torch_export:TorchExportRuntime",
    "torch_aoti": "runtimes.torch_aoti:TorchAOTIRuntime",
    "tf_savedmodel": "runtimes.tf_savedmodel:TFSavedModelRuntime",
}


def runtime_class(fmt: str) -> type[Runtime]:
    """Import and return the Runtime class for ``fmt``; RuntimeLoadError names what is missing."""
    target = RUNTIMES.get(fmt)
    if target is None:
        raise RuntimeLoadError(f"unknown runtime format {fmt!r}; expected one of {sorted(RUNTIMES)}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeLoadError(
            f"runtime {fmt!r} is not installed ({exc}); install tensorgate with the matching extra"
        ) from exc
    cls: type[Runtime] = getattr(module, cls_name)
    return cls


def pt2_kind(path: Path) -> str:
    """Tell an AOTInductor package from a torch.export archive by the archive's contents."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise RuntimeLoadError(f"{path} is not a readable .pt2 archive: {exc}") from exc
    if any("/data/aotinductor/" in n for n in names):
        return "torch_aoti"
    if any(n.endswith("/models/model.json") or "/models/" in n for n in names):
        return "torch_export"
    if any("/code/__torch__" in n for n in names):
        raise RuntimeLoadError(
            f"{path} is TorchScript (torch.jit.save), which is not served: export the module with torch.export "
            "(`tensorgate export`) to a .pt2"
        )
    raise RuntimeLoadError(f"{path} is neither an AOTInductor package nor a torch.export archive")


def detect_format(version_dir: Path, filename: object = None) -> str:
    """Which runtime serves the artefact in ``version_dir`` (model.onnx, SavedModel, model.pt2), or the one named
    ``filename`` there (an .onnx file, a SavedModel folder, a .pt2 archive)."""
    if isinstance(filename, str) and filename:
        if "/" in filename or "\\" in filename or filename in (".", ".."):
            raise RuntimeLoadError(f"option filename {filename!r} must be a plain file or folder name")
        target = version_dir / filename
        if target.is_dir() and ((target / "saved_model.pb").is_file() or (target / "saved_model.pbtxt").is_file()):
            return "tf_savedmodel"
        if target.is_file() and filename.endswith(".onnx"):
            return "onnx"
        if target.is_file():
            return pt2_kind(target)
        raise RuntimeLoadError(f"no model artefact {filename!r} in {version_dir}")
    if (version_dir / "model.onnx").is_file():
        return "onnx"
    if (version_dir / "saved_model.pb").is_file() or (version_dir / "saved_model.pbtxt").is_file():
        return "tf_savedmodel"
    if (version_dir / "model.pt2").is_file():
        return pt2_kind(version_dir / "model.pt2")
    raise RuntimeLoadError(f"no model artefact in {version_dir}: expected model.onnx, saved_model.pb or model.pt2")
