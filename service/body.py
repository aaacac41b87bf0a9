"""Reading request bodies within the configured size limit, without buffering an oversized one."""

from __future__ import annotations

from fastapi import Request

from service.errors import InvalidInputError, PayloadTooLargeError


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInputError(f"Content-Length {declared!r} is not a number; expected a byte count")
        if int(declared) > limit:
            raise PayloadTooLargeError(f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
