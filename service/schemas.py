"""Pydantic models of the JSON envelopes the routes answer, and the error body every 4xx/5xx carries."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field

# Statuses any route may answer whatever it does: a body over the limit, a wrong content type, a body that
# is not what the route expects, the server's own trouble (a failing store, a full disk).
COMMON_ERRORS: tuple[int, ...] = (413, 415, 422, 500, 503, 507)


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="what went wrong and what was expected, in one sentence")


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` entries declaring `statuses` (and COMMON_ERRORS) with the error body."""
    return {
        status: {"model": ErrorBody, "description": HTTPStatus(status).phrase}
        for status in sorted({*statuses, *COMMON_ERRORS})
    }
