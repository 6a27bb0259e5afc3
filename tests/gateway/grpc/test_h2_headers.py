"""The h2 server's request header blocks: decoded once per distinct block, the cache emptied when the dynamic table
changes, gRPC request checks and grpc-timeout."""

from __future__ import annotations

import hpack
import pytest

from gateway.grpc.h2.headers import HeaderCache, HeaderError, timeout_of

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/svc/Method"), (":authority", "a"),
           ("content-type", "application/grpc"), ("te", "trailers"), ("x-request-id", "r1"), ("k-bin", "AAE")]  # fmt: skip


def test_repeated_block_is_served_from_the_cache() -> None:
    encoder, cache = hpack.Encoder(), HeaderCache(16_384)
    first = encoder.encode(REQUEST)  # literals with indexing: changes the table, not cached
    head = cache.head(first)
    assert head.path == "/svc/Method" and head.timeout is None
    assert head.metadata == (("x-request-id", "r1"), ("k-bin", b"\x00\x01"))
    assert not cache.cache
    again = encoder.encode(REQUEST)  # all indexed now
    assert len(again) < len(first)
    assert cache.head(again) == head and list(cache.cache) == [again]
    assert cache.head(again) is cache.head(again)


def test_a_table_change_empties_the_cache() -> None:
    encoder, cache = hpack.Encoder(), HeaderCache(16_384)
    cache.head(encoder.encode(REQUEST))
    indexed = encoder.encode(REQUEST)
    cache.head(indexed)
    changed = [*REQUEST[:-2], ("x-request-id", "r2")]
    assert cache.head(encoder.encode(changed)).metadata == (("x-request-id", "r2"),)
    assert not cache.cache  # the same bytes may now mean something else
    assert dict(cache.head(encoder.encode(changed)).metadata) == {"x-request-id": "r2"}


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ([(":method", "GET"), (":path", "/a/b"), ("content-type", "application/grpc")], "POST"),
        ([(":method", "POST"), (":path", "/a/b"), ("content-type", "text/plain")], "content-type"),
        ([(":method", "POST"), (":path", "/a/b"), (":status", "200"), ("content-type", "application/grpc")], ":status"),
        ([(":method", "POST"), (":path", "/a/b"), ("content-type", "application/grpc"), ("grpc-timeout", "1x")], "grpc-timeout"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_by_name(headers: list[tuple[str, str]], needle: str) -> None:
    with pytest.raises(HeaderError, match=needle) as info:
        HeaderCache(16_384).head(hpack.Encoder().encode(headers))
    assert not info.value.compression


def test_garbage_and_oversized_blocks_are_compression_errors() -> None:
    with pytest.raises(HeaderError) as info:
        HeaderCache(16_384).head(b"\xff\xff\xff\xff\xff\xff")
    assert info.value.compression
    big = [*REQUEST, ("x-big", "v" * 20_000)]
    with pytest.raises(HeaderError) as info:
        HeaderCache(16_384).head(hpack.Encoder().encode(big))
    assert info.value.compression


@pytest.mark.parametrize(("value", "seconds"), [("1S", 1.0), ("250m", 0.25), ("2M", 120.0), ("1H", 3600.0),
                                                 ("99999999n", 0.099999999), ("5u", 5e-6)])  # fmt: skip
def test_grpc_timeout(value: str, seconds: float) -> None:
    assert timeout_of(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "123456789S", "-1S", "1.5S", "10"])
def test_bad_grpc_timeout(value: str) -> None:
    with pytest.raises(HeaderError, match="grpc-timeout"):
        timeout_of(value)
