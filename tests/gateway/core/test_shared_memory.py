"""SharedMemoryRegistry against hostile input: keys that escape /dev/shm, links, non-files, bounds, sizes that do not
match the tensor, objects truncated after registration, double registration, unregistering a region in use."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor, serialized_byte_size

from gateway.core import shared_memory
from gateway.core.errors import AlreadyExists, InvalidInput, PermissionDenied, RegionNotFound
from gateway.core.shared_memory import SharedInput, SharedMemoryRegistry, SharedSlice, shared_slice, shm_key
from gateway.core.types import InferRequest, InferResponse, RequestedOutput, Tensor


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def registry(root: Path) -> SharedMemoryRegistry:
    return SharedMemoryRegistry(enabled=True, limit=1 << 24, root=str(root))


def _object(root: Path, name: str, data: bytes) -> str:
    (root / name).write_bytes(data)
    return "/" + name


def _read(
    registry: SharedMemoryRegistry, *inputs: SharedInput, outputs: list[RequestedOutput] | None = None
) -> InferRequest:
    request = InferRequest(model="m", inputs=[], outputs=outputs, shared_inputs=list(inputs))
    lease = registry.lease()
    try:
        asyncio.run(lease.read_inputs(request))
    finally:
        lease.release()
    return request


def _input(name: str, datatype: str, shape: list[int], region: str, byte_size: int, offset: int = 0) -> SharedInput:
    return SharedInput(name, datatype, shape, SharedSlice(region, offset, byte_size))


@pytest.mark.parametrize("key", ["/../x", "../x", "/a/b", "a/b", "//x", "/..", "/.", "", "/", "/x\x00", 7, None,
                                 "/" + "x" * 256, "/sp ace"])  # fmt: skip
def test_keys_must_be_posix_shm_names(key: object) -> None:
    with pytest.raises(InvalidInput, match="not a POSIX shared memory name"):
        shm_key(key)


@pytest.mark.parametrize(
    ("key", "name"), [("/input_simple", "input_simple"), ("psm_1a2b", "psm_1a2b"), ("/a.b-c", "a.b-c")]
)
def test_good_keys(key: str, name: str) -> None:
    assert shm_key(key) == name


@pytest.mark.parametrize("name", ["", "a/b", "x" * 129, "sp ace", "new\nline"])
def test_region_names_are_checked(registry: SharedMemoryRegistry, root: Path, name: str) -> None:
    key = _object(root, "obj", b"\0" * 16)
    with pytest.raises(InvalidInput, match="region name"):
        registry.register(name, key, 0, 16)


def test_register_refuses_what_is_not_a_whole_shared_memory_object(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", b"\0" * 16)
    os.symlink(root / "obj", root / "link")
    (root / "dir").mkdir()
    os.mkfifo(root / "fifo")
    cases = [
        ("/missing", 0, 8, "no shared memory object"),
        ("/link", 0, 8, "cannot open"),  # never followed
        ("/dir", 0, 8, "cannot open"),
        ("/fifo", 0, 8, "not a shared memory object"),
        (key, 0, 17, "runs past the end"),
        (key, 9, 8, "runs past the end"),
        (key, 2**64, 1, "runs past the end"),
        (key, 0, 0, "at least 1"),
        (key, -1, 8, "non-negative integer"),
        (key, 0, True, "non-negative integer"),
        (key, "0", 8, "non-negative integer"),
    ]
    for k, offset, size, message in cases:
        with pytest.raises(InvalidInput, match=message):
            registry.register("r", k, offset, size)
    assert registry.status() == []


def test_register_status_unregister(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", b"\0" * 64)
    registry.register("a", key, 16, 32)
    registry.register("b", key.lstrip("/"), 0, 64)
    with pytest.raises(AlreadyExists, match="'a' is already registered"):
        registry.register("a", key, 0, 8)
    assert registry.status("a") == [{"name": "a", "key": key, "offset": 16, "byte_size": 32}]
    assert registry.held("a") == (key, 16, 32) and registry.held("c") is None
    assert [r["name"] for r in registry.status()] == ["a", "b"]
    with pytest.raises(RegionNotFound, match="'c'"):
        registry.status("c")
    registry.unregister("c")  # unknown: nothing to do
    registry.unregister("a")
    assert [r["name"] for r in registry.status()] == ["b"]
    registry.unregister()
    assert registry.status() == []


def test_disabled_registry_refuses(root: Path) -> None:
    registry = SharedMemoryRegistry(enabled=False, root=str(root))
    key = _object(root, "obj", b"\0" * 8)
    with pytest.raises(PermissionDenied, match="--allow-client-shm"):
        registry.register("r", key, 0, 8)
    with pytest.raises(PermissionDenied):
        registry.unregister()
    assert registry.status() == []


def test_region_count_is_bounded(registry: SharedMemoryRegistry, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_memory, "MAX_REGIONS", 2)
    key = _object(root, "obj", b"\0" * 8)
    registry.register("a", key, 0, 8)
    registry.register("b", key, 0, 8)
    with pytest.raises(InvalidInput, match="at most 2"):
        registry.register("c", key, 0, 8)


def test_inputs_are_read_exactly(registry: SharedMemoryRegistry, root: Path) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    flags = np.array([True, False, True])
    key = _object(root, "obj", b"pad!" + x.tobytes() + flags.tobytes())
    registry.register("r", key, 4, x.nbytes + 3)
    request = _read(registry, _input("x", "FP32", [2, 3], "r", x.nbytes), _input("f", "BOOL", [3], "r", 3, x.nbytes))
    got = {t.name: t.data for t in request.inputs}
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["f"], flags)
    assert request.shared_inputs == []


def test_bytes_inputs_use_length_prefixes(registry: SharedMemoryRegistry, root: Path) -> None:
    data = np.array([b"a", b"", b"xyz"], dtype=np.object_)
    serialized = serialize_byte_tensor(data).item()
    key = _object(root, "obj", serialized + b"junk")
    registry.register("r", key, 0, len(serialized) + 4)
    request = _read(registry, _input("s", "BYTES", [3], "r", serialized_byte_size(serialize_byte_tensor(data))))
    np.testing.assert_array_equal(request.inputs[0].data, data)
    with pytest.raises(InvalidInput, match="left over"):
        _read(registry, _input("s", "BYTES", [3], "r", len(serialized) + 4))
    with pytest.raises(InvalidInput, match="ends after"):
        _read(registry, _input("s", "BYTES", [4], "r", len(serialized)))


def test_input_sizes_and_bounds(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", b"\0" * 64)
    registry.register("r", key, 32, 32)
    cases = [
        (_input("x", "FP32", [2, 4], "r", 28), "input 'x'.*is 28, but FP32 of shape \\[2, 4\\] is 32 bytes"),
        (_input("x", "FP32", [2, 4], "r", 32, offset=4), "input 'x'.*runs past the end of shared memory region 'r'"),
        (_input("x", "FP32", [2], "nope", 8), "input 'x'.*Unable to find shared memory region: 'nope'"),
    ]
    for item, message in cases:
        with pytest.raises((InvalidInput, RegionNotFound), match=message):
            _read(registry, item)
    small = SharedMemoryRegistry(enabled=True, limit=16, root=str(root))
    small.register("r", key, 0, 64)
    with pytest.raises(InvalidInput, match="exceed the limit of 16 bytes"):
        _read(small, _input("x", "FP32", [8], "r", 32))


def test_a_truncated_object_is_an_error_not_a_crash(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", b"\0" * 64)
    registry.register("r", key, 0, 64)
    os.truncate(root / "obj", 16)
    with pytest.raises(InvalidInput, match="now only 16 bytes; register it again"):
        _read(registry, _input("x", "FP32", [2], "r", 8))
    out = [RequestedOutput("y", {"shared_memory_region": "r", "shared_memory_byte_size": 8})]
    with pytest.raises(InvalidInput, match=r"output 'y'.*register it again"):
        _read(registry, outputs=out)


def _write(registry: SharedMemoryRegistry, outputs: list[RequestedOutput], *tensors: Tensor) -> InferResponse:
    async def run() -> InferResponse:
        request = InferRequest(model="m", inputs=[], outputs=outputs)
        lease = registry.lease()
        try:
            await lease.read_inputs(request)
            response = InferResponse("m", "1", list(tensors))
            await lease.write_outputs(response)
            return response
        finally:
            lease.release()

    return asyncio.run(run())


def _out(name: str, region: str, size: int, offset: int = 0, **extra: object) -> RequestedOutput:
    params = {"shared_memory_region": region, "shared_memory_byte_size": size, "shared_memory_offset": offset, **extra}
    return RequestedOutput(name, params)


def test_outputs_are_written_into_their_slices(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", b"\0" * 64)
    registry.register("r", key, 8, 56)
    y = np.arange(4, dtype=np.int32)
    s = np.array([b"ab", b"c"], dtype=np.object_)
    response = _write(registry, [_out("y", "r", 16), _out("s", "r", 32, offset=16), RequestedOutput("z")],
                      Tensor("y", y), Tensor("s", s), Tensor("z", y))  # fmt: skip
    assert response.shared_outputs == {"y", "s"}
    raw = (root / "obj").read_bytes()
    assert raw[8:24] == y.tobytes()
    serialized = serialize_byte_tensor(s).item()
    assert raw[24 : 24 + len(serialized)] == serialized
    assert raw[:8] == b"\0" * 8  # nothing outside the slices


def test_output_slice_checks(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", b"\0" * 64)
    registry.register("r", key, 0, 64)
    y = Tensor("y", np.zeros(8, dtype=np.float32))
    with pytest.raises(InvalidInput, match=r"output 'y' is 32 bytes.*needs at least 32 bytes"):
        _write(registry, [_out("y", "r", 16)], y)
    with pytest.raises(InvalidInput, match=r"output 'y'.*runs past the end"):
        _write(registry, [_out("y", "r", 32, offset=40)], y)
    with pytest.raises(InvalidInput, match="cannot be combined with classification"):
        _write(registry, [_out("y", "r", 32, classification=2)], y)
    with pytest.raises(InvalidInput, match="shared_memory_byte_size given without shared_memory_region"):
        shared_slice({"shared_memory_byte_size": 4}, "output 'y'")


def test_large_copies_run_off_the_loop(registry: SharedMemoryRegistry, root: Path) -> None:
    x = np.random.default_rng(0).standard_normal(shared_memory.INLINE_COPY).astype(np.float32)  # 4 x the inline size
    key = _object(root, "obj", x.tobytes() + b"\0" * x.nbytes)
    registry.register("r", key, 0, 2 * x.nbytes)
    request = _read(registry, _input("x", "FP32", [x.size], "r", x.nbytes))
    np.testing.assert_array_equal(request.inputs[0].data, x)
    _write(registry, [_out("y", "r", x.nbytes, offset=x.nbytes)], Tensor("y", x * 2))
    np.testing.assert_array_equal(np.frombuffer((root / "obj").read_bytes()[x.nbytes :], np.float32), x * 2)


def test_unregistering_a_region_in_use_waits_for_the_request(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", np.arange(4, dtype=np.float32).tobytes())
    registry.register("r", key, 0, 16)
    region = registry._regions["r"]
    request = InferRequest(model="m", inputs=[], shared_inputs=[_input("x", "FP32", [4], "r", 16)])
    lease = registry.lease()
    asyncio.run(lease.read_inputs(request))
    registry.unregister("r")
    assert region.fd >= 0  # still open: the request holds it
    with pytest.raises(RegionNotFound):
        _read(registry, _input("x", "FP32", [4], "r", 16))  # but no new request finds it
    lease.release()
    assert region.fd == -1


def test_close_unregisters_everything(registry: SharedMemoryRegistry, root: Path) -> None:
    key = _object(root, "obj", b"\0" * 8)
    registry.register("r", key, 0, 8)
    region = registry._regions["r"]
    registry.close()
    assert region.fd == -1 and registry.status() == []
