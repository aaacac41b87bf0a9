"""The request body limit, for every route: no body over the configured size is ever buffered."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.responses import error_response


class BodyLimitMiddleware:
    """The body limit for every route, including those whose body FastAPI reads itself (PUT .../aliases/...).

    A declared Content-Length over the limit is answered 413 before the app runs; a chunked body is cut off
    with a 413 at the chunk that crosses the limit, so no route ever buffers more than `limit` bytes.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            shown = declared.decode("latin-1")
            await error_response(f"Content-Length {shown!r} is not a number; expected a byte count", 422)(
                scope, receive, send
            )
            return
        if declared is not None and int(declared) > self.limit:
            message = f"request body of {int(declared)} bytes is over the limit of {self.limit} bytes"
            await error_response(message, 413)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # an HTTPException: FastAPI's own body reading passes it on as is
                    raise HTTPException(413, f"request body is over the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
