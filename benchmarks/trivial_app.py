"""A constant-answer raw ASGI app: the ceiling of uvicorn + the load generator, for benchmarks/serving.py.

It reads the whole request body (so large POST bodies still cross the socket) and answers
{"ok":true}. If wrk drives this far faster than any model server, wrk is not the bottleneck:

    .venv/bin/python -m uvicorn benchmarks.trivial_app:app --host 127.0.0.1 --port 8002 --lifespan off --no-access-log
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b'{"ok":true}'
START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
END: Message = {"type": "http.response.body", "body": BODY}


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """Drain the request body, then answer 200 {"ok":true}."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    await send(START)
    await send(END)
