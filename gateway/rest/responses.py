"""Response helpers shared by the REST endpoints: orjson bodies and the {"error": ...} shape."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def error_response(message: str, status: int) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")
