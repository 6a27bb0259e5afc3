"""The one error table: each GatewayError's HTTP status and code agree with STATUS_TABLE and with grpc."""

from __future__ import annotations

import grpc
import pytest

import gateway.core.errors as errors_module
from gateway.core.errors import STATUS_TABLE, GatewayError, PayloadTooLarge, RequestTimeout

#: Refinements of a table row that only HTTP can express: 413 is still RESOURCE_EXHAUSTED over gRPC, 408 (a body
#: that did not arrive in time) DEADLINE_EXCEEDED.
HTTP_REFINEMENTS: dict[type[GatewayError], int] = {PayloadTooLarge: 413, RequestTimeout: 408}


def _subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def all_errors() -> list[type[GatewayError]]:
    import gateway.grpc.v2  # noqa: F401 - defines a private subclass; import it so it is checked too

    return [GatewayError, *_subclasses(GatewayError)]


def test_the_public_error_classes_are_all_found() -> None:
    public = {obj for obj in vars(errors_module).values() if isinstance(obj, type) and issubclass(obj, GatewayError)}
    assert public <= set(all_errors())
    assert len(public) >= 11


@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_each_error_agrees_with_the_table(cls: type[GatewayError]) -> None:
    assert cls.code in STATUS_TABLE, f"{cls.__name__}.code {cls.code!r} is not in STATUS_TABLE"
    table_http, grpc_name = STATUS_TABLE[cls.code]
    assert cls.http_status == HTTP_REFINEMENTS.get(cls, table_http), cls.__name__
    assert grpc_name == cls.code


@pytest.mark.parametrize("code", sorted(STATUS_TABLE))
def test_every_code_is_a_grpc_status(code: str) -> None:
    http, grpc_name = STATUS_TABLE[code]
    status = grpc.StatusCode[grpc_name]
    assert status.name == grpc_name
    assert 200 <= http < 600
    assert (http == 200) == (status is grpc.StatusCode.OK)


def test_grpc_status_mapping_uses_the_table() -> None:
    from gateway.grpc.status import grpc_code

    for cls in all_errors():
        exc = cls.__new__(cls)
        GatewayError.__init__(exc, "x")
        assert grpc_code(exc) is grpc.StatusCode[STATUS_TABLE[cls.code][1]]


def test_message_is_the_string_form() -> None:
    exc = errors_module.InvalidInput("input 'x' is wrong")
    assert str(exc) == exc.message == "input 'x' is wrong"
    assert isinstance(exc, GatewayError)
