"""JSON responses written with orjson (numpy arrays included), and the error body {"error": ...}."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response

JSON = "application/json"


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, media_type=JSON, headers=headers)


def error_response(message: str, status_code: int, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": message}, status_code, headers)
