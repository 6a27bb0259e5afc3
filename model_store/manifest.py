"""MANIFEST.json, the one owner of its format — ``{"files": {"<relpath>": {"size": N, "sha256": "<hex>"}}}`` — in
a version folder: written by ``build_manifest``, and checked before a version is loaded (local folders and S3
copies alike): every listed file present with its size and SHA-256, and no file beside them, so a tampered or
planted file is refused before any runtime reads it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.base import StoreError

MANIFEST = "MANIFEST.json"
MARKERS = ("_COMPLETE", ".complete")
_CHUNK = 1 << 20


def check_relpath(relpath: str) -> str:
    """Return ``relpath``, or refuse it when empty, absolute, with ``.``/``..``/empty parts or a backslash."""
    if (
        not relpath
        or relpath.startswith("/")
        or "\\" in relpath
        or "\x00" in relpath
        or any(part in {"", ".", ".."} for part in relpath.split("/"))
    ):
        raise StoreError(f"unsafe path {relpath!r}: it must be relative, without '.', '..' or empty parts")
    return relpath


@dataclass(frozen=True)
class ManifestEntry:
    size: int
    sha256: str | None


def build_manifest(folder: str | Path) -> bytes:
    """The MANIFEST.json text for a local version folder: every file's size and sha256."""
    root = Path(folder)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST or rel in MARKERS:
            continue
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return json.dumps({"files": files}, indent=1, sort_keys=True).encode()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_manifest(data: bytes) -> dict[str, ManifestEntry]:
    try:
        doc = json.loads(data)
        files = doc["files"]
        if not isinstance(files, dict):
            raise TypeError("'files' must be a mapping of path to {size, sha256}")
        entries: dict[str, ManifestEntry] = {}
        for rel, entry in files.items():
            check_relpath(rel)
            size = entry["size"] if isinstance(entry, dict) else entry
            sha = entry.get("sha256") if isinstance(entry, dict) else None
            if not isinstance(size, int) or size < 0 or (sha is not None and not isinstance(sha, str)):
                raise TypeError(f"bad entry for {rel!r}: {entry!r}")
            entries[rel] = ManifestEntry(size=size, sha256=sha.lower() if sha else None)
    except (ValueError, KeyError, TypeError, AttributeError, StoreError) as exc:
        raise StoreError(f"{MANIFEST} is not valid: {exc}") from exc
    return entries


def verify_folder(folder: Path, where: str = "") -> None:
    """Refuse a version folder whose MANIFEST.json (if any) does not match its files: a listed file missing or of
    another size or SHA-256, or a file the manifest does not list."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return
    at = f"{where}: " if where else ""
    entries = parse_manifest(manifest.read_bytes())
    for rel, entry in entries.items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != entry.size:
            raise StoreError(f"{at}{rel} does not match {MANIFEST} (size)")
        if entry.sha256 is not None and sha256_file(path) != entry.sha256:
            raise StoreError(f"{at}{rel} is corrupt: its sha256 differs from {MANIFEST}")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST and rel not in MARKERS and rel not in entries:
            raise StoreError(f"{at}{rel} is not listed in {MANIFEST}: refusing a version with unlisted files")
