"""open_store(uri): a ModelStore for a local folder or an ``s3://bucket/prefix`` URI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_store.base import ModelStore, StoreError, StoreUnavailable
from model_store.config import ConfigError, ModelConfig

__all__ = ["ConfigError", "ModelConfig", "ModelStore", "StoreError", "StoreUnavailable", "open_store"]


def open_store(uri: str | Path, **options: Any) -> ModelStore:
    """``./models`` or ``/abs/path`` → LocalStore; ``s3://bucket/prefix`` → S3Store (needs boto3)."""
    text = str(uri)
    if text.startswith("s3://"):
        from model_store.s3 import S3Store

        return S3Store(text, **options)
    from model_store.local import LocalStore

    return LocalStore(text)
