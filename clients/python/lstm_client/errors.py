"""The client's exceptions, one per kind of answer, and the mapping from an HTTP error status to them."""

from __future__ import annotations

from typing import Any

import httpx


class ApiError(Exception):
    """The service answered with an error status; `status` and `message` say which and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ClientError(ApiError):
    """A 4xx: the request was wrong (bad input, unknown model, no permission, ...)."""


class NotFoundError(ClientError):
    """A 404: no such model, version or job."""


class AuthError(ClientError):
    """A 401 or 403: a token is missing or wrong, or management is loopback-only."""


class BusyError(ClientError):
    """A 429: the training queue (or event-stream limit) is full; try later."""


class ServerError(ApiError):
    """A 5xx: the service could not answer (no model loaded yet, a refused checkpoint, ...)."""


class StreamClosedError(Exception):
    """A WebSocket stream that the server closed without an error status (1009 too big, 1011 internal error,
    1012 server restart, 1006 connection lost): its sequence is gone; open a new stream to start again."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stream closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


class JobFailedError(Exception):
    """A training job that ended failed or cancelled."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__(f"training job {job['id']} {job['status']}: {job.get('error') or ''}".rstrip(": "))
        self.job = job


def error_for(status: int, message: str) -> ApiError:
    """The typed error for an error status (an HTTP status, or a stream's close code less 4000)."""
    kind: type[ApiError]
    if status == 404:
        kind = NotFoundError
    elif status in (401, 403):
        kind = AuthError
    elif status == 429:
        kind = BusyError
    elif status < 500:
        kind = ClientError
    else:
        kind = ServerError
    return kind(status, message)


def raise_for(response: httpx.Response) -> None:
    """Raise the typed error for an error answer; do nothing for a success."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        message = str(body.get("error", response.text)) if isinstance(body, dict) else response.text
    except ValueError:
        message = response.text
    raise error_for(response.status_code, message)
