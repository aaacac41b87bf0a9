"""lstm-serve --workers N: uvicorn's supervisor, with a listening socket of its own for each worker.

uvicorn's workers share one listening socket, and whichever wakes first accepts every waiting
connection, so clients that open their connections at once and keep them (wrk, connection pools)
often land all on one worker while the other idles (docs/benchmarks.md). Here the supervisor only
reserves the address, and each worker listens on its own socket bound to it with SO_REUSEPORT: the
kernel then spreads new connections over the workers by hash. Everything else (starting, health
checks, restarting dead workers, draining on SIGTERM) is uvicorn's Multiprocess as it is.
"""

from __future__ import annotations

import logging
import socket

from uvicorn import Config
from uvicorn.supervisors import Multiprocess, multiprocess

log = logging.getLogger("uvicorn.error")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _reuse_port_socket(family: socket.AddressFamily, address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and not listening: it holds the address for the workers.

    A plain socket is bound first: that fails if anything already holds the address, so two services never
    share a port by accident (SO_REUSEPORT alone would let a second lstm-serve of the same user join in).
    """
    family = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]  # the port the system chose when asked for 0
    sock = _reuse_port_socket(family, (host, port))
    sock.set_inheritable(True)
    return sock


class ReusePortProcess(multiprocess.Process):
    """A uvicorn worker that listens on a socket of its own, bound to the reserved address."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # runs in the worker
        own = [_reuse_port_socket(s.family, s.getsockname()[:2]) for s in sockets or []]
        super().target(own)


def run_workers(config: Config) -> None:
    """Serve `config` with config.workers processes, each on its own SO_REUSEPORT listening socket."""
    sock = reserve(config.host, config.port)
    host, port = sock.getsockname()[:2]
    log.info("Uvicorn running on http://%s:%d with %d workers, one socket each", host, port, config.workers)
    # uvicorn's supervisor makes its workers from this module global, at start and on every restart.
    multiprocess.Process = ReusePortProcess  # type: ignore[misc]
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
