"""Request header blocks: HPACK-decoded by the ``hpack`` package once per distinct block, then served from a cache
keyed by the block's bytes (gRPC clients repeat the same indexed block on every call); the cache is emptied
whenever a decode changes the connection's dynamic table, since a block's meaning depends on that table."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import hpack

# request headers a handler never sees in its invocation metadata
_TRANSPORT = frozenset(
    {"content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "grpc-message-type", "connection"}
)
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
CACHE_ENTRIES = 256


class HeaderError(Exception):
    """A header block that is not a valid gRPC request (the stream is refused; ``compression``: the connection's
    HPACK state is lost, so the connection must end)."""

    def __init__(self, message: str, *, compression: bool = False) -> None:
        super().__init__(message)
        self.compression = compression


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What a call needs from its request headers."""

    path: str
    timeout: float | None  # seconds, from grpc-timeout
    metadata: tuple[tuple[str, str | bytes], ...]
    encoding: str | None  # grpc-encoding, when not identity


def timeout_of(value: str) -> float:
    """grpc-timeout (1-8 digits and a unit) in seconds."""
    digits, unit = value[:-1], value[-1:]
    if not (0 < len(digits) <= 8 and digits.isdigit() and unit in _UNITS):
        raise HeaderError(f"grpc-timeout {value!r} is not 1-8 digits and a unit (H, M, S, m, u, n)")
    return int(digits) * _UNITS[unit]


def head_of(headers: list[tuple[str, str]]) -> RequestHead:
    method = path = content_type = timeout = encoding = None
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name.startswith(":"):
            if name == ":path":
                path = value
            elif name == ":method":
                method = value
            elif name not in (":scheme", ":authority"):
                raise HeaderError(f"pseudo-header {name} is not allowed in a request")
        elif name == "content-type":
            content_type = value
        elif name == "grpc-timeout":
            timeout = timeout_of(value)
        elif name == "grpc-encoding":
            encoding = None if value == "identity" else value
        elif name in _TRANSPORT:
            continue
        elif name.endswith("-bin"):
            try:
                metadata.append((name, base64.b64decode(value + "=" * (-len(value) % 4))))
            except ValueError as exc:
                raise HeaderError(f"binary header {name} is not base64: {exc}") from exc
        else:
            metadata.append((name, value))
    if method != "POST" or not path:
        raise HeaderError(f"a gRPC request is a POST with a :path (got :method {method!r}, :path {path!r})")
    if content_type is None or not content_type.startswith("application/grpc"):
        raise HeaderError(f"content-type {content_type!r} is not application/grpc")
    return RequestHead(path, timeout, tuple(metadata), encoding)


class HeaderCache:
    """One connection's HPACK decoder, with decoded request heads cached by block bytes."""

    def __init__(self, max_header_list_size: int) -> None:
        self.decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
        self.table = self.decoder.header_table
        self.cache: dict[bytes, RequestHead] = {}

    def head(self, block: bytes) -> RequestHead:
        cached = self.cache.get(block)
        if cached is not None:
            return cached
        return self._decode(block, cache=True)  # type: ignore[return-value]

    def headers(self, block: bytes) -> list[tuple[str, str]]:
        """A block decoded (trailers from a client, which gRPC clients never send): keeps the table in step."""
        return self._decode(block, cache=False)  # type: ignore[return-value]

    def _decode(self, block: bytes, *, cache: bool) -> RequestHead | list[tuple[str, str]]:
        entries = self.table.dynamic_entries
        size, first = len(entries), entries[0] if entries else None
        try:
            headers = self.decoder.decode(block)
        except hpack.OversizedHeaderListError as exc:
            raise HeaderError(f"header list larger than allowed: {exc}", compression=True) from exc
        except hpack.HPACKError as exc:
            raise HeaderError(f"undecodable header block: {exc}", compression=True) from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise HeaderError(f"undecodable header block: {exc}", compression=True) from exc
        changed = len(entries) != size or (entries[0] if entries else None) is not first
        if changed:
            self.cache.clear()
        if not cache:
            return headers  # type: ignore[return-value]
        head = head_of(headers)  # type: ignore[arg-type]
        if not changed:
            if len(self.cache) >= CACHE_ENTRIES:
                self.cache.clear()
            self.cache[block] = head
        return head
