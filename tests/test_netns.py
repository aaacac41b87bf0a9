"""tests/netns.py: hosts in network namespaces reach the root namespace's servers only over their bridge."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_store.blobs import key_of
from model_store.s3_blobs import S3Blobs
from tests.conftest import wait_for
from tests.netns import Network, available, leftovers
from tests.postgres_server import PostgresServer, free_port
from tests.s3_server import S3Server

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

# Run inside a namespace: connect to HOST:PORT and say "connected" or why not (refused, unreachable, timed out).
CONNECT = textwrap.dedent("""
    import socket, sys
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
        print("connected")
    except OSError as exc:
        print(type(exc).__name__, exc)
""")


@pytest.fixture
def network() -> Iterator[Network]:
    with Network() as made:
        yield made


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on the root namespace's 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def test_host_reaches_postgres_on_the_bridge_address_over_the_network(network: Network) -> None:
    host = network.add_host("replica")
    server = PostgresServer(listen=(network.address,))
    server.start()
    try:
        query = "SELECT inet_client_addr()"
        code = f"import psycopg, sys; print(psycopg.connect(sys.argv[1]).execute({query!r}).fetchone()[0])"
        done = host.run([sys.executable, "-c", code, server.url()])
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == host.address  # the server saw the host's own address
    finally:
        server.close()


def test_host_reaches_s3_on_the_bridge_address(network: Network) -> None:
    host = network.add_host("worker")
    server = S3Server(host=network.address)
    server.start()
    try:
        bucket = server.create_bucket()
        data = b"uploaded from another host"
        key = key_of(hashlib.sha256(data).hexdigest())
        code = f"from model_store.s3_blobs import S3Blobs; S3Blobs.from_url('s3://{bucket}/p').put({key!r}, {data!r})"
        done = host.run([sys.executable, "-c", code], env={**os.environ, **server.environment()})
        assert done.returncode == 0, done.stderr
        assert S3Blobs(bucket, "p", server.client()).get(key) == data
    finally:
        server.close()


def test_host_cannot_reach_the_root_namespaces_loopback(network: Network, listener: socket.socket) -> None:
    host = network.add_host("isolated")
    port = str(listener.getsockname()[1])
    inside = host.run([sys.executable, "-c", CONNECT, "127.0.0.1", port])
    assert inside.stdout.startswith("ConnectionRefusedError"), inside.stdout + inside.stderr
    # ... and the root's loopback is not behind the bridge address either (the listener is on 127.0.0.1 only)
    via_bridge = host.run([sys.executable, "-c", CONNECT, network.address, port])
    assert via_bridge.stdout.startswith("ConnectionRefusedError"), via_bridge.stdout + via_bridge.stderr
    # the same check from the root namespace connects: the difference is the namespace
    root = subprocess.run([sys.executable, "-c", CONNECT, "127.0.0.1", port], capture_output=True, text=True)
    assert root.stdout.strip() == "connected"


def test_two_hosts_reach_each_other(network: Network) -> None:
    first, second = network.add_host("a"), network.add_host("b")
    port = free_port()
    server = first.popen(
        [sys.executable, "-m", "http.server", "--bind", first.address, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://{first.address}:{port}/', timeout=5).status)"
    assert wait_for(lambda: second.run([sys.executable, "-c", fetch]).stdout.strip() == "200"), "b never reached a"
    assert server.poll() is None
    # a's server listens on a's address only: the root namespace's 127.0.0.1 has nothing on that port
    root = subprocess.run([sys.executable, "-c", CONNECT, "127.0.0.1", str(port)], capture_output=True, text=True)
    assert root.stdout.startswith("ConnectionRefusedError")


def test_teardown_leaves_no_namespace_link_or_process_even_after_a_failure() -> None:
    with pytest.raises(RuntimeError, match="boom"), Network() as network:
        host = network.add_host("doomed")
        network.add_host("other")
        sleeper = host.popen(["sleep", "600"])
        assert leftovers(network)  # the names the check looks for do exist while the network does
        raise RuntimeError("boom")
    assert leftovers(network) == []
    assert sleeper.poll() is not None


def test_a_killed_test_runs_leftovers_are_removed_by_the_next_network() -> None:
    code = textwrap.dedent("""
        import sys, time
        from tests.netns import Network
        network = Network().__enter__()
        network.add_host("stale")
        print(network.subnet, network.bridge, network.hosts[0].namespace, flush=True)
        time.sleep(600)
    """)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT) as child:
        assert child.stdout is not None
        subnet, bridge, namespace = child.stdout.readline().split()
        child.kill()
    assert os.path.exists(f"/sys/class/net/{bridge}") and os.path.exists(f"/run/netns/{namespace}")
    with Network() as fresh:
        assert not os.path.exists(f"/run/netns/{namespace}")
        # the subnet is free again: the new network may take it, with a bridge of the same name that is its own
        assert not os.path.exists(f"/sys/class/net/{bridge}") or (bridge, subnet) == (fresh.bridge, str(fresh.subnet))
