"""Request ids: accept a sane incoming X-Request-ID or make one, echo it, and name it in error logs."""

from __future__ import annotations

import re
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
# What a proxy or client may choose: short, printable, no spaces or quotes (it goes into headers and logs).
_SANE = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")


def sane_or_new(incoming: bytes) -> str:
    """The client's id when it is sane, else a new one (also for gRPC's x-request-id metadata)."""
    return incoming.decode("ascii") if _SANE.fullmatch(incoming) else uuid.uuid4().hex


def request_id(request: Request) -> str:
    """The id of `request` (set by RequestIdMiddleware); '-' outside it."""
    found: str = request.scope.get("state", {}).get("request_id", "-")
    return found


class RequestIdMiddleware:
    """Gives every HTTP request an id: the client's X-Request-ID when sane, else a new one; sent back as a header.

    The id is kept in the request state (`request_id(request)`), where the error handlers find it, even
    for the 500s that Starlette answers outside every middleware.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(HEADER.lower().encode(), b"")
        rid = sane_or_new(incoming)
        scope.setdefault("state", {})["request_id"] = rid
        raw_header = (HEADER.lower().encode(), rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), raw_header]
            await send(message)

        await self.app(scope, receive, send_with_id)
