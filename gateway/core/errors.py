"""GatewayError and its subclasses: the one table mapping each error to its HTTP status and gRPC code."""

from __future__ import annotations

from typing import ClassVar, TypeVar


class GatewayError(Exception):
    """Base error. ``code`` is the protocol-neutral status (a gRPC code name, also the metrics label)."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.request_id: str | None = None  # set by the DataPlane: the front end returns it with the error
        self.servable: tuple[str, object] | None = None  # (model, version or None) of a failed model lookup

    def __str__(self) -> str:
        return self.message


E = TypeVar("E", bound=GatewayError)


class InvalidInput(GatewayError):
    """The request is malformed or does not match the model's signature."""

    http_status = 400
    code = "INVALID_ARGUMENT"


#: Triton's prefix for every model lookup that fails; Triton's clients and code written against Triton match on it
UNKNOWN_MODEL = "Request for unknown model: "


class ModelNotFound(GatewayError):
    """No such model, version or label. ``model`` and ``version`` build Triton's exact texts."""

    http_status = 404
    code = "NOT_FOUND"

    @classmethod
    def model(cls, name: str) -> ModelNotFound:
        return _lookup(cls(f"{UNKNOWN_MODEL}{name!r} is not found"), name, None)

    @classmethod
    def version(cls, name: str, version: object, hint: str = "") -> ModelNotFound:
        return _lookup(cls(f"{UNKNOWN_MODEL}{name!r} version {version} is not found{hint}"), name, version)


class ModelNotReady(GatewayError):
    """The model exists but no version is READY (loading, failed, unloaded). ``version`` and ``no_version`` build
    Triton's texts, followed by the state and reasons."""

    http_status = 503
    code = "UNAVAILABLE"

    @classmethod
    def version(cls, name: str, version: object, detail: str = "") -> ModelNotReady:
        return _lookup(cls(f"{UNKNOWN_MODEL}{name!r} version {version} is not at ready state{detail}"), name, version)

    @classmethod
    def no_version(cls, name: str, detail: str = "") -> ModelNotReady:
        return _lookup(cls(f"{UNKNOWN_MODEL}{name!r} has no available versions{detail}"), name, None)


def _lookup(exc: E, name: str, version: object) -> E:
    """``exc`` marked as a failed lookup of ``name`` (``version``), which TF Serving's front ends word their way."""
    exc.servable = (name, version)
    return exc


class ServerUnavailable(GatewayError):
    """The server is shutting down or not ready."""

    http_status = 503
    code = "UNAVAILABLE"


class PayloadTooLarge(GatewayError):
    """The request body exceeds the configured limit."""

    http_status = 413
    code = "RESOURCE_EXHAUSTED"


class RequestTimeout(GatewayError):
    """The request body did not arrive in time (a slow or stalled client)."""

    http_status = 408
    code = "DEADLINE_EXCEEDED"


class Overloaded(GatewayError):
    """The model's queue is full: rejected at once rather than queued without bound."""

    http_status = 429
    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(GatewayError):
    """The client's deadline passed before the result could be produced."""

    http_status = 504
    code = "DEADLINE_EXCEEDED"


class Unsupported(GatewayError):
    """A protocol feature this server does not implement or has turned off (e.g. CUDA shared memory)."""

    http_status = 501
    code = "UNIMPLEMENTED"


class AlreadyExists(GatewayError):
    http_status = 409
    code = "ALREADY_EXISTS"


class RegionNotFound(GatewayError):
    """No shared memory region registered under that name."""

    http_status = 404
    code = "NOT_FOUND"


class Unauthenticated(GatewayError):
    """No credentials, or credentials the server does not know."""

    http_status = 401
    code = "UNAUTHENTICATED"


class PermissionDenied(GatewayError):
    """Known credentials without the scope or model access the call needs, or a call the server refuses to all."""

    http_status = 403
    code = "PERMISSION_DENIED"


class RateLimited(GatewayError):
    """The caller's key used up its request rate: retry later."""

    http_status = 429
    code = "RESOURCE_EXHAUSTED"


class InferenceFailed(GatewayError):
    """The runtime failed on valid input: a server-side fault."""

    http_status = 500
    code = "INTERNAL"


#: The one table: protocol-neutral code -> (HTTP status, gRPC code name). Subclasses above agree with it.
STATUS_TABLE: dict[str, tuple[int, str]] = {
    "OK": (200, "OK"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "UNAUTHENTICATED": (401, "UNAUTHENTICATED"),
    "PERMISSION_DENIED": (403, "PERMISSION_DENIED"),
    "NOT_FOUND": (404, "NOT_FOUND"),
    "ALREADY_EXISTS": (409, "ALREADY_EXISTS"),
    "RESOURCE_EXHAUSTED": (429, "RESOURCE_EXHAUSTED"),
    "CANCELLED": (499, "CANCELLED"),
    "INTERNAL": (500, "INTERNAL"),
    "UNIMPLEMENTED": (501, "UNIMPLEMENTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "DEADLINE_EXCEEDED": (504, "DEADLINE_EXCEEDED"),
}
