"""PyTorch test models and the torch test store: the demo MLP and CNN plus a two-input/two-output model with an
int64 embedding input, each exported once per test session in every PyTorch format (AOTInductor compiles are slow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gateway.cli.demo import CNN, MLP
from gateway.cli.export import export_torch

MAX_BATCH = 8
FAMILIES = ("mlp", "cnn", "multi")
MULTI_INPUTS = ("x:FP32:-1,8", "ids:INT64:-1,4:0..20")
VOCAB = 20


class TwoHeads(nn.Module):
    """x [N, 8] FP32 and ids [N, 4] INT64 (< 20) -> {"score": [N, 6], "pooled": [N, 6]}."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.embedding = nn.Embedding(VOCAB, 6)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        looked_up = self.embedding(ids)
        return {"score": self.fc(x) + looked_up.mean(1), "pooled": looked_up.sum(1)}


class Pair(nn.Module):
    """x [N, 4] -> (x * 2, x.sum(1, keepdim=True)): tuple outputs."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x.sum(1, keepdim=True)


TEXT_VOCAB = 50
TEXT_LENGTH = 128


class TextEncoder(nn.Module):
    """ids [N, 128] INT64 token ids (< 50) -> [N, 4]: an embedding (row 0 is padding, so ids are shifted by one and
    the exporter cannot bound them) and a one-layer transformer encoder. An AOTInductor build of it aborts the
    process (c10::Error inside an OpenMP region, then std::terminate) on a batch holding an id beyond the vocabulary.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(TEXT_VOCAB + 1, 32, padding_idx=0)
        layer = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(32, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embedding(ids + 1)).mean(1))


def text_encoder(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TextEncoder().eval()


_TEXT: dict[Path, Path] = {}


def shared_text_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding ``text_torch_aoti`` (``TextEncoder`` compiled by AOTInductor once per session, batch 1..8)."""
    key = tmp_path_factory.getbasetemp()
    if key not in _TEXT:
        root = tmp_path_factory.mktemp("text_store")
        inputs = [f"ids:INT64:-1,{TEXT_LENGTH}"]
        export_torch(
            "tests.torch_models:text_encoder", root, "text", inputs, max_batch=MAX_BATCH, formats=("torch_aoti",)
        )
        _TEXT[key] = root
    return _TEXT[key]


def two_heads(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TwoHeads().eval()


def mlp(seed: int = 0) -> nn.Module:
    from runtimes.export.demo_networks import mlp as build

    return build(seed)


def build_torch_store(root: Path, progress: list[str] | None = None) -> Path:
    """``mlp_*``, ``cnn_*`` and ``multi_*`` in every PyTorch format (batch 1..8, 3 golden samples each)."""
    say = progress.append if progress is not None else None
    export_torch(MLP.factory, root, "mlp", MLP.inputs, output_names=MLP.outputs, max_batch=MAX_BATCH, progress=say)
    export_torch(CNN.factory, root, "cnn", CNN.inputs, output_names=CNN.outputs, max_batch=MAX_BATCH, progress=say)
    export_torch("tests.torch_models:two_heads", root, "multi", MULTI_INPUTS, max_batch=MAX_BATCH, progress=say)
    return root


_BUILT: dict[Path, tuple[Path, list[str]]] = {}


def shared_torch_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The session's torch store (built on first use, shared by every test folder) and its progress lines."""
    key = tmp_path_factory.getbasetemp()
    if key not in _BUILT:
        lines: list[str] = []
        root = build_torch_store(tmp_path_factory.mktemp("torch_store"), lines)
        _BUILT[key] = (root, lines)
    return _BUILT[key]


def eager_model(family: str) -> nn.Module:
    """The eager module behind a store family (``mlp``, ``cnn``, ``multi``)."""
    from runtimes.export import demo_networks as torch_demo

    return {"mlp": torch_demo.mlp, "cnn": torch_demo.cnn, "multi": two_heads}[family]()


def family_inputs(family: str, batch: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Random inputs for a store family (``mlp``, ``cnn``, ``multi``) with ``batch`` rows."""
    rng = np.random.default_rng(seed)
    if family == "mlp":
        return {"x": rng.standard_normal((batch, 784)).astype(np.float32)}
    if family == "cnn":
        return {"image": rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)}
    return {
        "x": rng.standard_normal((batch, 8)).astype(np.float32),
        "ids": rng.integers(0, VOCAB, size=(batch, 4), dtype=np.int64),
    }


def eager_outputs(family: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What eager PyTorch returns for ``inputs``, named as in the store."""
    module = eager_model(family)
    with torch.inference_mode():
        if family == "multi":
            out = module(torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["ids"]))
            return {k: v.numpy() for k, v in out.items()}
        (name,) = inputs
        return {"logits": module(torch.from_numpy(inputs[name])).numpy()}


_PLAIN: dict[Path, Path] = {}


def plain_aoti_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``two_heads`` compiled the standard way, ``aoti_compile_and_package`` on a ``torch.export`` program (batch
    1..MAX_BATCH), with no tensorgate sidecar: built once per session (tens of seconds), shared by every test
    folder. Inputs positional (x, ids), outputs the dict {"score", "pooled"}."""
    key = tmp_path_factory.getbasetemp()
    if key not in _PLAIN:
        target = tmp_path_factory.mktemp("plain_aoti") / "two_heads.pt2"
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        examples = (torch.randn(2, 8), torch.randint(0, VOCAB, (2, 4)))
        program = torch.export.export(two_heads(), examples, dynamic_shapes=({0: batch}, {0: batch}))
        torch._inductor.aoti_compile_and_package(program, package_path=str(target))
        _PLAIN[key] = target
    return _PLAIN[key]


def without_wrapper_source(package: Path, target: Path) -> Path:
    """A copy of an AOTInductor package without its generated C++ (as some build pipelines ship them): the
    compiled library only, so nothing in it records the inputs' dtypes or shapes."""
    import zipfile

    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as copy:
        for entry in source.infolist():
            if not entry.filename.endswith(".cpp"):
                copy.writestr(entry, source.read(entry.filename))
    return target
