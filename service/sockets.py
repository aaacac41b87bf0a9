"""The listening sockets of lstm-serve: one plain socket for one worker, or a reserved address and a socket per worker.

With several workers each listens on a socket of its own bound to the same address with SO_REUSEPORT,
and the kernel spreads new connections over them by hash. (One shared listening socket lets whichever
worker wakes first accept every waiting connection, so clients that open their connections at once and
keep them, as wrk and connection pools do, often land all on one worker: docs/benchmarks.md.)
"""

from __future__ import annotations

import socket


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bound(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind at once over TIME_WAIT connections
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def plain_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), not yet listening (uvicorn listens on it); OSError if the address is taken."""
    return _bound(host, port, reuse_port=False)


def reserve(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and not listening: it holds the address for the workers.

    A plain socket is bound first: that fails (OSError) if anything already holds the address, so two services
    never share a port by accident (SO_REUSEPORT alone would let a second lstm-serve of the same user join in).
    Port 0 becomes the port the system chose.
    """
    with _bound(host, port, reuse_port=False) as probe:
        port = probe.getsockname()[1]
    return _bound(host, port, reuse_port=True)


def worker_socket(host: str, port: int) -> socket.socket:
    """A worker's own socket on the reserved address (SO_REUSEPORT), not yet listening."""
    return _bound(host, port, reuse_port=True)
