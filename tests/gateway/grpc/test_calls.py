"""Registrar: handlers are wrapped once, when registered (registered and generic alike), own handlers replace the
generated ones unwrapped, and ``compose`` applies the outermost wrap first — checked on a real grpc.aio server."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from gateway.grpc.calls import Registrar, WrappedGeneric, compose, wrap

SERVICE = "test.Echo"


def _echo(tag: bytes) -> Any:
    async def behavior(request: bytes, context: Any) -> bytes:
        return tag + request

    return grpc.unary_unary_rpc_method_handler(behavior)


def test_registrar_wraps_each_method_once_and_keeps_own_handlers() -> None:
    wrapped: list[str] = []
    order: list[str] = []

    def marking(mark: str) -> Any:
        def each(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
            wrapped.append(f"{mark}{method}")

            async def before(context: Any) -> None:
                order.append(mark)

            return wrap(handler, before)

        return each

    async def main() -> list[bytes]:
        server = grpc.aio.server()
        own = {f"/{SERVICE}/Own": _echo(b"own:")}
        registrar = Registrar(server, compose(marking("outer"), marking("inner")), own)
        registrar.add_registered_method_handlers(SERVICE, {"Plain": _echo(b"plain:"), "Own": _echo(b"generated:")})
        registrar.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Generic", {"Call": _echo(b"generic:")}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                replies = []
                for method in (f"/{SERVICE}/Plain", f"/{SERVICE}/Own", "/test.Generic/Call", "/test.Generic/Call"):
                    replies.append(await channel.unary_unary(method)(b"x", timeout=10))
                return replies
        finally:
            await server.stop(None)

    replies = asyncio.run(main())
    assert replies == [b"plain:x", b"own:x", b"generic:x", b"generic:x"]
    # the registered method and the generic one, each wrapped by both wraps exactly once; the own one never
    assert sorted(wrapped) == sorted(
        [f"inner/{SERVICE}/Plain", f"outer/{SERVICE}/Plain", "inner/test.Generic/Call", "outer/test.Generic/Call"]
    )
    # per call: the outer wrap's check runs before the inner one's; the own handler ran no check
    assert order == ["outer", "inner"] * 3


def test_wrapped_generic_answers_none_for_unknown_methods() -> None:
    inner = grpc.method_handlers_generic_handler("test.Generic", {"Call": _echo(b"")})
    generic = WrappedGeneric(inner, lambda method, handler: handler, {})

    class Details:
        method = "/test.Generic/Missing"

    assert generic.service(Details()) is None
    assert generic.service(Details()) is None
