"""torch.export archives with pickled parts are refused before anything is unpickled: an archive whose weight is a
pickle that writes a file fails to load and the file is not written; trusted with ``allow_pickle``, the same
archive does run the pickle (the control that shows the archive is a real exploit)."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from runtimes.base import RuntimeLoadError
from runtimes.pt2_pickle import pickled_parts
from runtimes.torch_export import TorchExportRuntime


class _WritesAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.target)!r}, 'w').write('unpickled')",)


@pytest.fixture(scope="module")
def clean_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pt2") / "1"
    folder.mkdir()
    torch.manual_seed(0)
    program = torch.export.export(torch.nn.Linear(4, 2).eval(), (torch.zeros(1, 4),))
    torch.export.save(program, folder / "model.pt2")
    return folder


def _poisoned(clean: Path, target: Path, folder: Path) -> Path:
    """The clean archive with its first weight marked pickled and replaced by a pickle that writes ``target``."""
    folder.mkdir(parents=True)
    with zipfile.ZipFile(clean / "model.pt2") as src, zipfile.ZipFile(folder / "model.pt2", "w") as dst:
        names = src.namelist()
        config_name = next(n for n in names if n.endswith("_weights_config.json"))
        config = json.loads(src.read(config_name))
        meta = next(iter(config["config"].values()))
        meta["use_pickle"] = True
        payload = config_name.rsplit("/", 1)[0] + "/" + meta["path_name"]
        for info in src.infolist():
            data = src.read(info)
            if info.filename == config_name:
                data = json.dumps(config).encode()
            elif info.filename == payload:
                data = pickle.dumps(_WritesAFile(target))
            dst.writestr(info, data)
    return folder


def test_a_clean_archive_has_no_pickled_parts_and_loads(clean_archive: Path) -> None:
    assert pickled_parts(clean_archive / "model.pt2") == []
    runtime = TorchExportRuntime()
    runtime.load(clean_archive, {})
    assert runtime.signature().inputs[0].shape[-1] == 4


def test_pickled_weights_are_refused_and_never_run(clean_archive: Path, tmp_path: Path) -> None:
    target = tmp_path / "written-by-the-archive"
    poisoned = _poisoned(clean_archive, target, tmp_path / "poisoned" / "1")
    assert [p.split(":")[-1] for p in pickled_parts(poisoned / "model.pt2")] == ["weight"]
    with pytest.raises(RuntimeLoadError, match=r"refusing to load an archive with pickled parts .*allow_pickle"):
        TorchExportRuntime().load(poisoned, {})
    assert not target.exists()

    with pytest.raises(Exception):  # noqa: B017 - trusted: torch unpickles it (and then fails on the junk weight)
        TorchExportRuntime().load(poisoned, {"allow_pickle": True})
    assert target.read_text() == "unpickled"
