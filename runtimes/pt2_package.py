"""What an AOTInductor package records about its own signature, for packages without ``signature.json``: the
device, the call spec (input/output counts, keyword input names, dict output keys) and, when the generated wrapper
source is packaged (the default), each input's dtype and the shape checks AOTInductor compiled in.

An AOTInductor package (``torch._inductor.aoti_compile_and_package``) holds, under ``<archive>/data/aotinductor/
<model>/``, the compiled ``*.wrapper.so``, its ``*.wrapper_metadata.json`` (``AOTI_DEVICE_KEY`` and the build
platform) and usually the ``*.wrapper.cpp`` it was built from. The loader answers ``get_call_spec()`` (the input
and output pytree specs) and ``get_metadata()``; neither records input names, dtypes or shapes, and nothing records
the outputs' dtypes or shapes. So:

- input names: keyword names from the input spec, ``input_<i>`` for positional inputs;
- input dtypes and dims: parsed from the wrapper source's ``check_input_<i>`` functions (dtype, fixed sizes and
  the bounds of dynamic sizes); without the source, ``config.yaml`` ``inputs`` must declare them;
- outputs: names from the output spec (dict keys, ``output_<i>``), dtypes and dims observed by running the model
  once (twice when it has a dynamic dim, to tell which output dims follow it) on zeros.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from runtimes.base import RuntimeLoadError
from runtimes.datatype import numpy_dtype
from runtimes.pt2_signature import Dim, PT2Signature, PT2Tensor, apply_override, output_names
from runtimes.torch_tensor import v2_datatype

MODEL = "model"  # load_package's default model name inside the archive

_CHECK_FN = re.compile(r"static void check_input_(\d+)\(.*?\n\}\n", re.S)
_DTYPE = re.compile(r"_expected_dtype = aoti_torch_dtype_(\w+)\(\);")
_FIXED = re.compile(r"if \((\d+) != \w+_size\[(\d+)\]\)")
_LOW = re.compile(r"if \(\w+_size\[(\d+)\] < (\d+)\)")
_HIGH = re.compile(r"if \(\w+_size\[(\d+)\] > (\d+)\)")
_AXIS = re.compile(r"\w+_(?:size|stride)\[(\d+)\]")


@dataclass(frozen=True)
class PackageRecord:
    """What the archive itself says, read without loading it: device and, when recorded, the inputs."""

    device: str
    inputs: tuple[PT2Tensor, ...] | None
    ranges: Mapping[str, tuple[int, int | None]]


def read_package(file: Path) -> PackageRecord:
    """The device and (from the packaged wrapper source, when present) the inputs of ``file``."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            folder = next((n.split("/data/aotinductor/")[0] for n in names if "/data/aotinductor/" in n), None)
            if folder is None:
                raise RuntimeLoadError(f"{file} is not an AOTInductor package (no data/aotinductor/ entries)")
            prefix = f"{folder}/data/aotinductor/{MODEL}/"
            metas = [n for n in names if n.startswith(prefix) and n.endswith(".wrapper_metadata.json")]
            sources = [n for n in names if n.startswith(prefix) and n.endswith(".wrapper.cpp")]
            meta = json.loads(archive.read(metas[0])) if len(metas) == 1 else {}
            source = archive.read(sources[0]).decode("utf-8", "replace") if len(sources) == 1 else None
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise RuntimeLoadError(f"{file}: not a readable AOTInductor package: {exc}") from exc
    device = str(meta.get("AOTI_DEVICE_KEY") or "cpu") if isinstance(meta, dict) else "cpu"
    inputs, ranges = _recorded_inputs(source) if source is not None else (None, {})
    return PackageRecord(device, inputs, ranges)


def _recorded_inputs(source: str) -> tuple[tuple[PT2Tensor, ...] | None, dict[str, tuple[int, int | None]]]:
    """Inputs from the wrapper's ``check_input_<i>`` functions; None when they cannot all be read.

    The compiled code reads a dynamic size shared by several inputs from the first of them only, so sizes that
    disagree would run out of bounds. The checks do not say which dims are shared: dynamic leading dims with the
    same bounds are taken to be one batch dim (``batch``), checked equal across inputs before the call; any other
    dynamic dim gets a name of its own (``input_<i>.<axis>``). Each is bounded by the compiled checks, except that a
    lower bound of 2 becomes 1: AOTInductor writes ``>= 2`` for a dynamic size whose export range starts at 0 or 1
    (its 0/1 specialisation), and the code runs for 1 where the export allowed it. (An export range starting at 2
    reads the same; only ``tensorgate export``'s sidecar keeps such a lower bound.)
    """
    found: dict[int, tuple[str, tuple[Dim, ...]]] = {}
    ranges: dict[str, tuple[int, int | None]] = {}
    batches: dict[tuple[int, int | None], str] = {}
    for match in _CHECK_FN.finditer(source):
        index, body = int(match.group(1)), match.group(0)
        dtype_match = _DTYPE.search(body)
        dtype = getattr(torch, dtype_match.group(1), None) if dtype_match else None
        if not isinstance(dtype, torch.dtype):
            return None, {}
        try:
            datatype = v2_datatype(dtype)
        except ValueError:
            return None, {}
        rank = max((int(a) for a in _AXIS.findall(body)), default=-1) + 1
        fixed = {int(axis): int(size) for size, axis in _FIXED.findall(body)}
        lows = {int(axis): int(v) for axis, v in _LOW.findall(body)}
        highs = {int(axis): int(v) for axis, v in _HIGH.findall(body)}
        dims: list[Dim] = []
        for axis in range(rank):
            if axis in fixed:
                dims.append(fixed[axis])
                continue
            low = lows.get(axis, 1)
            low = 1 if low == 2 else low  # inductor's 0/1 specialisation writes 2 for an export range from 1
            bounds = (low, highs.get(axis))
            if axis == 0:  # leading dims with the same bounds: one batch dim, whose sizes must agree
                name = batches.setdefault(bounds, "batch" if not batches else f"batch_{len(batches)}")
            else:
                name = f"input_{index}.{axis}"
            ranges[name] = bounds
            dims.append(name)
        found[index] = (datatype, tuple(dims))
    if not found or sorted(found) != list(range(len(found))):
        return None, {}
    return tuple(PT2Tensor(f"input_{i}", *found[i]) for i in range(len(found))), ranges


def input_names(in_spec: pytree.TreeSpec) -> list[str]:
    """Keyword inputs by their names, positional ones ``input_<i>`` (the flat order the loader takes)."""
    tree = pytree.tree_unflatten(list(range(in_spec.num_leaves)), in_spec)
    paths, _ = pytree.tree_flatten_with_path(tree)
    names = []
    for position, (path, _leaf) in enumerate(paths):
        keys = [k for k in path if isinstance(k, pytree.MappingKey)]
        names.append(".".join(str(k.key) for k in keys) if keys else f"input_{position}")
    return names


def package_signature(
    file: Path,
    record: PackageRecord,
    call_spec: Sequence[str],
    run: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]],
    options: Mapping[str, Any],
) -> PT2Signature:
    """The signature of a package without ``signature.json``: what it records, config.yaml's ``inputs`` /
    ``outputs`` (options) over that, outputs observed by running it; RuntimeLoadError says what to declare."""
    in_spec = pytree.treespec_loads(call_spec[0])
    out_spec = pytree.treespec_loads(call_spec[1])
    names = input_names(in_spec)
    declared_in: Sequence[Mapping[str, Any]] = options.get("inputs") or []
    declared_out: Sequence[Mapping[str, Any]] = options.get("outputs") or []
    ranges: dict[str, tuple[int, int | None]] = dict(record.ranges)
    if record.inputs is not None and len(record.inputs) == len(names):
        recorded = tuple(PT2Tensor(n, t.datatype, t.dims) for n, t in zip(names, record.inputs, strict=True))
        inputs = apply_override(recorded, declared_in, "input", ranges) if declared_in else recorded
    elif len(declared_in) == len(names):
        inputs = tuple(_declared(d, i) for i, d in enumerate(declared_in))
        for t in inputs:
            ranges.update({str(d): (1, None) for d in t.dims if isinstance(d, str)})
    else:
        outs = output_names(out_spec, out_spec.num_leaves)
        raise RuntimeLoadError(
            f"{file} is an AOTInductor package without signature.json that does not record its inputs' "
            f"datatypes and shapes: declare them in the model's config.yaml, one entry per input in the order the "
            f"model takes them ({len(names)}: {', '.join(names)}), e.g. "
            f"`inputs: [{{name: {names[0] if names else 'x'}, datatype: FP32, shape: [-1, 8]}}]` "
            f"(-1 for a dynamic dim), and optionally `outputs:` to rename its {len(outs)} outputs "
            f"({', '.join(outs)}); or export it with `tensorgate export`, which writes signature.json"
        )
    observed = _observe_outputs(file, inputs, ranges, out_spec, run)
    outputs = apply_override(observed, declared_out, "output", ranges) if declared_out else observed
    return PT2Signature(inputs, outputs, ranges, record.device, "")


def _declared(data: Mapping[str, Any], index: int) -> PT2Tensor:
    dims: tuple[Dim, ...] = tuple(
        ("batch" if axis == 0 else f"input_{index}.{axis}") if int(d) == -1 else int(d)
        for axis, d in enumerate(data["shape"])
    )
    try:
        numpy_dtype(str(data["datatype"]))
    except (KeyError, ValueError) as exc:
        raise RuntimeLoadError(f"input {data.get('name')!r}: {exc}") from exc
    return PT2Tensor(str(data["name"]), str(data["datatype"]), dims)


def _observe_outputs(
    file: Path,
    inputs: tuple[PT2Tensor, ...],
    ranges: Mapping[str, tuple[int, int | None]],
    out_spec: pytree.TreeSpec,
    run: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]],
) -> tuple[PT2Tensor, ...]:
    """Run the model on zeros at the smallest sizes, and again with every dynamic dim one larger where its range
    allows: output dtypes from the first run, output dims that changed become dynamic (None)."""
    from runtimes.torch_tensor import torch_dtype

    def zeros(extra: int) -> list[torch.Tensor]:
        tensors = []
        for spec in inputs:
            shape = []
            for d in spec.dims:
                if isinstance(d, int):
                    shape.append(d)
                    continue
                low, high = ranges.get(str(d), (1, None)) if d is not None else (1, None)
                size = max(low, 1) + extra
                shape.append(size if high is None or size <= high else max(low, 1))
            tensors.append(torch.zeros(shape, dtype=torch_dtype(spec.datatype)))
        return tensors

    try:
        first = [t.detach() for t in run(zeros(0))]
        second = (
            [t.detach() for t in run(zeros(1))]
            if any(not isinstance(d, int) for t in inputs for d in t.dims)
            else first
        )
    except Exception as exc:
        described = ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in inputs)
        raise RuntimeLoadError(
            f"{file}: running the package on zeros ({described}) to learn its outputs failed: {exc}; check the "
            "inputs declared in config.yaml"
        ) from exc
    names = output_names(out_spec, len(first))
    outputs = []
    for name, one, two in zip(names, first, second, strict=True):
        try:
            datatype = v2_datatype(one.dtype)
        except ValueError as exc:
            raise RuntimeLoadError(f"{file}: output {name!r}: {exc}") from None
        dims: tuple[Dim, ...] = tuple(
            int(a) if one.dim() == two.dim() and a == b else None for a, b in zip(one.shape, two.shape, strict=False)
        )
        outputs.append(PT2Tensor(name, datatype, dims))
    return tuple(outputs)
