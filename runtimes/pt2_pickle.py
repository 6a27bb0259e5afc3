"""The parts of a PT2 archive (``torch.export.save``) that ``torch.export.load`` would unpickle — weights and
constants saved with pickle (``use_pickle`` in their payload configs, tensor subclasses), legacy ``.pt`` weight
files, custom and opaque objects. Unpickling runs arbitrary code, so the torch_export runtime refuses archives that
have any unless told to trust them. Read with the archive reader alone: nothing is unpickled to find out."""

from __future__ import annotations

import json
from pathlib import Path

from torch.export.pt2_archive._package import PT2ArchiveReader

_CONFIGS = ("data/weights/", "data/constants/")
_PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")


def pickled_parts(file: Path) -> list[str]:
    """Archive records that loading would unpickle (empty for an archive of plain tensors)."""
    found: list[str] = []
    with PT2ArchiveReader(str(file)) as reader:
        names = reader.get_file_names()
        for name in names:
            if name.startswith(_CONFIGS) and name.endswith(".pt"):
                found.append(name)  # legacy weights / constants: one torch.load of a pickle
            elif name.startswith(_CONFIGS) and name.endswith("_config.json"):
                try:
                    config = json.loads(reader.read_string(name)).get("config", {})
                except ValueError:
                    found.append(name)
                    continue
                for fqn, meta in config.items():
                    path = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or path.startswith(_PICKLED_PREFIXES):
                        found.append(f"{name}:{fqn}")
    return found
