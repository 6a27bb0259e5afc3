"""Compressed gRPC messages on the h2 server: the encodings it accepts (gzip and deflate, as grpc.aio) and
``inflate``, which stops at the message size limit instead of expanding a small bomb into memory."""

from __future__ import annotations

import zlib

#: grpc-encoding -> zlib window bits (gRPC's deflate is the zlib format, gzip the gzip format)
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ACCEPTED = b"identity,deflate,gzip"  # grpc-accept-encoding, sent with every response
OFF_LOOP_BYTES = 64 * 1024  # compressed messages larger than this are inflated in a thread


class Compressed(bytes):
    """A request message as it arrived, compressed with its call's grpc-encoding."""

    __slots__ = ()


class TooLarge(ValueError):
    """The message inflates beyond the limit."""


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decompressed; TooLarge past ``limit`` bytes, ValueError when it is not whole valid ``encoding``."""
    inflater = zlib.decompressobj(WBITS[encoding])
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"the message is not valid {encoding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"the message inflates to more than the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ValueError(f"the message is not one whole {encoding} stream")
    return out
