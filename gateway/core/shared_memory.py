"""SharedMemoryRegistry: Triton's system shared-memory extension, protocol-neutral — the regions clients registered
(named slices of POSIX shared-memory objects in /dev/shm), and the per-request Lease that reads inputs from them
and writes outputs into them, every bound checked at registration and again at each use.

Regions are held as open file descriptors and accessed with ``pread``/``pwrite``, never mapped: a client that
shrinks its object after registering it gets a clear error, where a mapping would kill the server with SIGBUS.
Large copies run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.core.errors import (
    AlreadyExists,
    GatewayError,
    InvalidInput,
    PermissionDenied,
    RegionNotFound,
    Unsupported,
)
from gateway.core.raw import from_raw, to_raw
from gateway.core.types import DATATYPES, InferRequest, InferResponse, Tensor, element_count

REGION = "shared_memory_region"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"

#: Copies up to this size run on the event loop (a syscall on tmpfs); larger ones in a worker thread.
INLINE_COPY = 256 * 1024
#: At most this many regions at once (each holds a file descriptor).
MAX_REGIONS = 256
#: The threads that copy large tensors in and out of regions.
_COPIER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tg-shm")

_NAME = re.compile(r"[A-Za-z0-9_.:@+=-]{1,128}")
_KEY = re.compile(r"/?([A-Za-z0-9_.:@+=-]{1,255})")
DISABLED = (
    "client shared memory is disabled on this server: start it with --allow-client-shm "
    "(env TENSORGATE_ALLOW_CLIENT_SHM=true) to register regions"
)
CUDA_UNSUPPORTED = (
    "CUDA shared memory is not supported by this server; use system shared memory (/v2/systemsharedmemory, "
    "tritonclient.utils.shared_memory) instead"
)


@dataclass(frozen=True)
class SharedSlice:
    """Where a tensor lives: ``byte_size`` bytes at ``offset`` within the registered region ``region``."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class SharedInput:
    """An input whose data is in shared memory: its header as the request declared it, and where the data is."""

    name: str
    datatype: str
    shape: list[int]
    where: SharedSlice


def shared_slice(params: Mapping[str, Any], what: str) -> SharedSlice | None:
    """The shared-memory parameters of an input or requested output (None when it has none); InvalidInput naming
    ``what`` (e.g. ``input 'x'``) when they are incomplete or not the right types."""
    if REGION not in params:
        stray = [k for k in (BYTE_SIZE, OFFSET) if k in params]
        if stray:
            raise InvalidInput(f"{what}: {' and '.join(stray)} given without {REGION}")
        return None
    region = params[REGION]
    if not isinstance(region, str) or not region:
        raise InvalidInput(f"{what}: {REGION} must be a non-empty string, got {region!r}")
    if BYTE_SIZE not in params:
        raise InvalidInput(f"{what}: {REGION} needs {BYTE_SIZE} (the tensor's size in bytes)")
    return SharedSlice(region, _count(params.get(OFFSET, 0), OFFSET, what), _count(params[BYTE_SIZE], BYTE_SIZE, what))


def _count(value: Any, field: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{what}: {field} must be a non-negative integer, got {value!r}")
    return value


def region_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(f"shared memory region name {name!r} is not valid: use 1 to 128 letters, digits and _.:@+=-")
    return name


def shm_key(key: Any) -> str:
    """The object name within /dev/shm of a POSIX shared-memory key (``/name`` or ``name``; no other slash)."""
    match = _KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None or match.group(1) in (".", ".."):
        raise InvalidInput(
            f"shared memory key {key!r} is not a POSIX shared memory name: '/name' with 1 to 255 letters, digits "
            "and _.:@+=- after the one leading slash"
        )
    return match.group(1)


class Region:
    """One registered region: an open descriptor on its object, the slice registered, and the requests using it
    (its descriptor is closed once it is unregistered and the last of them is done)."""

    __slots__ = ("byte_size", "fd", "key", "name", "offset", "retired", "users")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, fd: int) -> None:
        self.name, self.key, self.offset, self.byte_size, self.fd = name, key, offset, byte_size, fd
        self.users = 0
        self.retired = False

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def locate(self, where: SharedSlice, what: str) -> int:
        """The file position of ``where`` after checking it lies within the region and the region still lies
        within its object."""
        if where.offset + where.byte_size > self.byte_size:
            raise InvalidInput(
                f"{what}: {OFFSET} {where.offset} + {BYTE_SIZE} {where.byte_size} runs past the end of shared "
                f"memory region {self.name!r} ({self.byte_size} bytes)"
            )
        size = os.fstat(self.fd).st_size
        if self.offset + self.byte_size > size:
            raise InvalidInput(
                f"{what}: shared memory region {self.name!r} was registered as {self.byte_size} bytes at offset "
                f"{self.offset} of {self.key!r}, which is now only {size} bytes; register it again"
            )
        return self.offset + where.offset

    def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            self._close()

    def retire(self) -> None:
        self.retired = True
        if self.users == 0:
            self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SharedMemoryRegistry:
    """The system shared-memory regions of this server process, by name. ``enabled`` False refuses registration
    (the server's ``--allow-client-shm``); ``limit`` bounds the input bytes one request may read."""

    def __init__(self, enabled: bool = False, limit: int = 256 * 1024 * 1024, root: str = "/dev/shm") -> None:
        self.enabled = enabled
        self.limit = limit
        self.root = root
        self._regions: dict[str, Region] = {}

    # -- control -------------------------------------------------------------------------------------------------
    def register(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        if not self.enabled:
            raise PermissionDenied(DISABLED)
        region_name(name)
        what = f"shared memory region {name!r}"
        offset = _count(offset, "offset", what)
        byte_size = _count(byte_size, "byte_size", what)
        if byte_size == 0:
            raise InvalidInput(f"{what}: byte_size must be at least 1")
        object_name = shm_key(key)
        if name in self._regions:
            raise AlreadyExists(f"shared memory region {name!r} is already registered; unregister it first")
        if len(self._regions) >= MAX_REGIONS:
            raise InvalidInput(f"at most {MAX_REGIONS} shared memory regions may be registered; unregister some first")
        fd = self._open(object_name, key, what)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"{what}: {key!r} is not a shared memory object (not a regular file in {self.root})")
            if offset + byte_size > info.st_size:
                raise InvalidInput(
                    f"{what}: offset {offset} + byte_size {byte_size} runs past the end of {key!r} "
                    f"({info.st_size} bytes)"
                )
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = Region(name, key, offset, byte_size, fd)

    def _open(self, object_name: str, key: str, what: str) -> int:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
        try:
            root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise Unsupported(f"system shared memory is not available on this host ({self.root}: {exc})") from None
        try:
            return os.open(object_name, flags, dir_fd=root)
        except FileNotFoundError:
            raise InvalidInput(f"{what}: no shared memory object {key!r} (create it before registering)") from None
        except PermissionError:
            raise InvalidInput(f"{what}: the server may not open {key!r} for reading and writing") from None
        except OSError as exc:
            raise InvalidInput(f"{what}: cannot open {key!r}: {exc.strerror}") from None
        finally:
            os.close(root)

    def unregister(self, name: str = "") -> None:
        """Unregister ``name`` (every region when empty); an unknown name is not an error (as in Triton). A region
        in use by a request is closed when that request is done."""
        if not self.enabled:
            raise PermissionDenied(DISABLED)
        names = list(self._regions) if not name else [name]
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                region.retire()

    def held(self, name: str) -> tuple[str, int, int] | None:
        """The (key, offset, byte_size) registered as ``name``, or None."""
        region = self._regions.get(name)
        return None if region is None else (region.key, region.offset, region.byte_size)

    def status(self, name: str = "") -> list[dict[str, Any]]:
        if not name:
            return [r.status() for r in self._regions.values()]
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find system shared memory region: {name!r}")
        return [region.status()]

    def close(self) -> None:
        """Unregister everything (the server is stopping)."""
        for region in self._regions.values():
            region.retire()
        self._regions.clear()

    # -- inference -----------------------------------------------------------------------------------------------
    def lease(self) -> Lease:
        return Lease(self)

    def _acquire(self, name: str, what: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"{what}: Unable to find shared memory region: {name!r}")
        region.users += 1
        return region


@dataclass
class _Target:
    region: Region
    position: int
    byte_size: int
    where: SharedSlice


class Lease:
    """The regions one request reads and writes, held from its decoding to its encoding: ``read_inputs`` before
    the request is validated, ``write_outputs`` before the response is encoded, ``release`` in every case."""

    def __init__(self, registry: SharedMemoryRegistry) -> None:
        self.registry = registry
        self._held: list[Region] = []
        self._targets: dict[str, _Target] = {}

    def _region(self, name: str, what: str) -> Region:
        region = self.registry._acquire(name, what)
        self._held.append(region)
        return region

    async def read_inputs(self, request: InferRequest) -> None:
        """Turn the request's shared-memory inputs into tensors and check its shared-memory outputs' slices."""
        total = 0
        for item in request.shared_inputs:
            what = f"input {item.name!r}"
            where = item.where
            if item.datatype != "BYTES":
                expected = element_count(item.shape) * DATATYPES[item.datatype].size
                if where.byte_size != expected:
                    raise InvalidInput(
                        f"{what}: {BYTE_SIZE} is {where.byte_size}, but {item.datatype} of shape {item.shape} "
                        f"is {expected} bytes"
                    )
            total += where.byte_size
            if total > self.registry.limit:
                raise InvalidInput(
                    f"{what}: the request's shared memory inputs exceed the limit of {self.registry.limit} bytes "
                    "(--max-request-bytes)"
                )
            region = self._region(where.region, what)
            position = region.locate(where, what)
            data = await _copy(_read, region, position, where.byte_size, what)
            request.inputs.append(Tensor(item.name, from_raw(memoryview(data), item.name, item.datatype, item.shape)))
        request.shared_inputs = []
        for out in request.outputs or ():
            what = f"output {out.name!r}"
            target = shared_slice(out.parameters, what)
            if target is None:
                continue
            if out.parameters.get("classification"):
                raise InvalidInput(f"{what}: {REGION} cannot be combined with classification")
            region = self._region(target.region, what)
            self._targets[out.name] = _Target(region, region.locate(target, what), target.byte_size, target)

    @property
    def writes(self) -> bool:
        return bool(self._targets)

    async def write_outputs(self, response: InferResponse) -> None:
        """Write each output that asked for shared memory into its slice; the response then carries its header
        only (``response.shared_outputs``)."""
        for tensor in response.outputs:
            target = self._targets.get(tensor.name)
            if target is None:
                continue
            what = f"output {tensor.name!r}"
            data = _raw_view(tensor.data)
            if len(data) > target.byte_size:
                raise InvalidInput(
                    f"{what} is {len(data)} bytes, but its shared memory slice ({BYTE_SIZE} {target.byte_size} in "
                    f"region {target.where.region!r}) is smaller: it needs at least {len(data)} bytes"
                )
            target.region.locate(target.where, what)  # the object may have shrunk while the model ran
            await _copy(_write, target.region, target.position, data, what)
            response.shared_outputs.add(tensor.name)

    def release(self) -> None:
        for region in self._held:
            region.release()
        self._held.clear()


def wants_shared_memory(request: InferRequest) -> bool:
    """Whether the request names any shared-memory region (an input, or a requested output)."""
    return bool(request.shared_inputs) or any(REGION in o.parameters for o in request.outputs or ())


def _raw_view(array: np.ndarray) -> memoryview:
    """An output's raw bytes without a copy for contiguous fixed-size arrays."""
    if array.dtype == np.object_ or array.dtype.kind in ("S", "U"):
        return memoryview(to_raw(array))
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    return memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))  # type: ignore[arg-type]


def _read(fd: int, position: int, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        n = os.preadv(fd, [view[done:]], position + done)
        if n == 0:
            raise InvalidInput(f"shared memory object ended after {done} of {size} bytes")
        done += n
    return buffer


def _write(fd: int, position: int, data: memoryview) -> int:
    done = 0
    while done < len(data):
        done += os.pwritev(fd, [data[done:]], position + done)
    return done


async def _copy(fn: Callable[[int, int, Any], Any], region: Region, position: int, payload: Any, what: str) -> Any:
    """``fn(fd, position, payload)``: inline when small, else in a copier thread that holds the region open until
    it is done (even when the request is cancelled meanwhile)."""
    size = payload if isinstance(payload, int) else len(payload)
    try:
        if size <= INLINE_COPY:
            return fn(region.fd, position, payload)
        loop = asyncio.get_running_loop()
        region.users += 1
        future = _COPIER.submit(fn, region.fd, position, payload)
        future.add_done_callback(lambda _: _release_soon(loop, region))
        return await asyncio.wrap_future(future)
    except GatewayError as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None
    except OSError as exc:
        raise InvalidInput(f"{what}: shared memory access failed: {exc.strerror}") from None


def _release_soon(loop: asyncio.AbstractEventLoop, region: Region) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
        loop.call_soon_threadsafe(region.release)


__all__ = [
    "CUDA_UNSUPPORTED",
    "Lease",
    "Region",
    "SharedInput",
    "SharedMemoryRegistry",
    "SharedSlice",
    "shared_slice",
    "wants_shared_memory",
]
