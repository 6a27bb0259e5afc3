"""The endpoint groups of REST paths and gRPC methods: shared-memory control is admin on both, its status read."""

from __future__ import annotations

import pytest

from gateway.grpc.auth import method_group
from gateway.rest.auth import route_group


@pytest.mark.parametrize(
    ("method", "path", "group"),
    [
        ("POST", "/v2/systemsharedmemory/region/r/register", "admin"),
        ("POST", "/v2/systemsharedmemory/region/r/unregister", "admin"),
        ("POST", "/v2/systemsharedmemory/unregister", "admin"),
        ("POST", "/v2/cudasharedmemory/region/r/register", "admin"),
        ("POST", "/v2/cudasharedmemory/unregister", "admin"),
        ("GET", "/v2/systemsharedmemory/status", "read"),
        ("GET", "/v2/systemsharedmemory/region/r/status", "read"),
        ("GET", "/v2/cudasharedmemory/status", "read"),
        ("POST", "/v2/models/m/infer", "infer"),
    ],
)
def test_rest_groups(method: str, path: str, group: str) -> None:
    assert route_group(method, path) == group


@pytest.mark.parametrize(
    ("rpc", "group"),
    [
        ("SystemSharedMemoryRegister", "admin"),
        ("SystemSharedMemoryUnregister", "admin"),
        ("CudaSharedMemoryRegister", "admin"),
        ("CudaSharedMemoryUnregister", "admin"),
        ("SystemSharedMemoryStatus", "read"),
        ("CudaSharedMemoryStatus", "read"),
    ],
)
def test_grpc_groups(rpc: str, group: str) -> None:
    assert method_group(f"/inference.GRPCInferenceService/{rpc}") == group
