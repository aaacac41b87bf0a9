"""One uvicorn server on a socket we bound: the body of each worker, and of `lstm-serve --workers 1`.

Only uvicorn's public API is used: Config, Server and Server.run(sockets=...).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

APP = "service.app:app_from_env"  # the factory: every process reads its settings from LSTM_* itself
STARTUP_FAILURE = 3  # uvicorn's exit status when the application's startup fails


def serve(sock: socket.socket, options: dict[str, Any], on_started: Callable[[], Awaitable[None]] | None = None) -> int:
    """Serve the app on `sock` until SIGTERM or SIGINT has drained it; the exit status: 0, or 3 if it never started.

    `on_started` is awaited once the server accepts connections (uvicorn's callback_notify: first at its first
    tick after startup, then every `timeout_notify` seconds).
    """
    notify: dict[str, Any] = {} if on_started is None else {"callback_notify": on_started, "timeout_notify": 3600}
    server = uvicorn.Server(uvicorn.Config(APP, factory=True, **options, **notify))
    # uvicorn drains on SIGTERM/SIGINT, then restores the handlers it found and raises the signal again for
    # them. With the defaults that kills the drained process (status -15). With the server's own handler
    # there, the signal just asks an already stopped server to stop, and the process exits 0; and a signal
    # that comes before uvicorn installs its handlers still stops the server instead of killing it mid-start.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, server.handle_exit)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE
