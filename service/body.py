"""The request body limit, for every route: no body over the configured size is ever buffered."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.responses import error_response


class _Body:
    """How much of one request's body has been read, by the app or by the drain."""

    def __init__(self, pending: bool, expects_continue: bool) -> None:
        self.pending = pending  # more body may still arrive from the client
        self.expects_continue = expects_continue  # the client waits for "100 Continue" before it sends
        self.received = 0

    def count(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.pending = bool(message.get("more_body", False))
            self.expects_continue = False  # uvicorn sent "100 Continue" on the first receive()
        else:  # http.disconnect: nothing more will come
            self.pending = False


class BodyLimitMiddleware:
    """The body limit for every route, including those whose body FastAPI reads itself (PUT .../aliases/...).

    A declared Content-Length over the limit is answered 413 before the app runs; a chunked body is cut off
    with a 413 at the chunk that crosses the limit, so no route ever buffers more than `limit` bytes.

    Any answer sent before the body has been read to its end (a 413, a 415, a 401 ...) first reads and
    throws away the rest of the body, up to `discard` bytes in all: a client that sends its whole body
    before it reads (urllib, requests, most scripts) would otherwise get "connection reset" instead of the
    answer, because closing a socket with unread data makes the kernel reset the connection. A body larger
    than `discard`, or one the client has not started sending (`Expect: 100-continue`), is not read: the
    answer goes out with `connection: close`.
    """

    def __init__(self, app: ASGIApp, limit: int, discard: int) -> None:
        self.app = app
        self.limit = limit
        self.discard = discard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = expects_continue = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        if declared is not None and not declared.isdigit():
            shown = declared.decode("latin-1")
            message = f"Content-Length {shown!r} is not a number; expected a byte count"
            await error_response(message, 422, {"connection": "close"})(scope, receive, send)
            return
        size = None if declared is None else int(declared)
        body = _Body(pending=chunked or bool(size), expects_continue=expects_continue)

        async def drain() -> bool:
            """Read the rest of the body and drop it; False when it is not worth reading (too large, not sent)."""
            if body.expects_continue or (size is not None and size > self.discard):
                return False
            while body.pending:
                if body.received > self.discard:
                    return False
                message = await receive()
                body.count(message)
                if message["type"] != "http.request":
                    return False
            return True

        async def answer_after_body(message: Message) -> None:
            if message["type"] == "http.response.start" and body.pending and not await drain():
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        if size is not None and size > self.limit:
            message = f"request body of {size} bytes is over the limit of {self.limit} bytes"
            await error_response(message, 413)(scope, receive, answer_after_body)
            return

        async def limited_receive() -> Message:
            message = await receive()
            body.count(message)
            if body.received > self.limit:  # an HTTPException: FastAPI's own body reading passes it on as is
                raise HTTPException(413, f"request body is over the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, answer_after_body)
