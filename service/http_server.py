"""One uvicorn server on a socket we bound: the body of each worker, and of `lstm-serve --workers 1`.

Only uvicorn's public API is used: Config, Server and Server.run(sockets=...).
"""

from __future__ import annotations

import functools
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from service.config import Settings
from service.peers import Peers

STARTUP_FAILURE = 3  # uvicorn's exit status when the application's startup fails


def _app(settings: Settings, peers: Peers | None) -> Any:
    """The app factory, importing the app only here: it brings torch and FastAPI, which the supervisor never needs."""
    from service.app import create_app

    return create_app(settings, peers=peers)


def serve(
    sock: socket.socket,
    settings: Settings,
    options: dict[str, Any],
    on_started: Callable[[], Awaitable[None]] | None = None,
    peers: Peers | None = None,
) -> int:
    """Serve create_app(settings) on `sock` until SIGTERM or SIGINT has drained it; the exit status: 0, or 3 if it
    never started.

    `on_started` is awaited once the server accepts connections (uvicorn's callback_notify: first at its first
    tick after startup, then every `timeout_notify` seconds). `peers`: this worker's place among several.
    """
    notify: dict[str, Any] = {} if on_started is None else {"callback_notify": on_started, "timeout_notify": 3600}
    # uvicorn calls the factory inside server.run, after the signal handlers below are set (a SIGTERM during the
    # slow import still drains), and reports a failure there as its startup failure.
    app = functools.partial(_app, settings, peers)
    server = uvicorn.Server(uvicorn.Config(app, factory=True, **options, **notify))
    # uvicorn drains on SIGTERM/SIGINT, then restores the handlers it found and raises the signal again for
    # them. With the defaults that kills the drained process (status -15). With the server's own handler
    # there, the signal just asks an already stopped server to stop, and the process exits 0; and a signal
    # that comes before uvicorn installs its handlers still stops the server instead of killing it mid-start.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, server.handle_exit)
    server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE
