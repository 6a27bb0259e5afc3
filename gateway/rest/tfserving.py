"""TensorFlow Serving REST API (/v1/models/...): status, metadata, :predict, :classify, :regress."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.errors import GatewayError

router = APIRouter()

_TFS_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "CANCELLED": 499,
}


def status_for(exc: GatewayError) -> int:
    """TF Serving's mapping of a status code to HTTP (protocols.md §6); 413 stays 413."""
    if exc.http_status == 413:
        return 413
    return _TFS_STATUS.get(exc.code, 500)
