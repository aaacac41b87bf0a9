"""Hosts of their own for the cross-host tests: Linux network namespaces on a bridge, with processes inside.

`Network()` (a context manager) makes a bridge in the root namespace with the address 10.213.X.1/24 (X is the
first subnet no other network on this machine uses, chosen under a file lock, since test files run in parallel
processes); `add_host(name)` makes a namespace joined to the bridge by a veth pair, with the address 10.213.X.N,
and nothing else: no default route, so a process in it reaches the root namespace only at the bridge address
(servers meant for the hosts listen there: `PostgresServer(listen=(network.address,))`, `S3Server(network.address)`)
and its 127.0.0.1 is its own. `Host.popen` runs a program inside (`ip netns exec`) that dies with the test
process (a parent-death signal). On exit every process it started is killed and every namespace and link is
deleted, also after a failure; what a killed test run left behind (its owner pid is gone) is removed by the next
`Network()`. `available()` says why not, where `ip netns` is not permitted, for a skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import functools
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

PR_SET_PDEATHSIG = 1
PREFIX = "ltn"  # every link and namespace of ours starts with it; interface names have at most 15 characters
SUBNET = "10.213"  # 10.213.X.0/24, X in 0..255: a corner of 10/8 that Docker, Kubernetes and VPNs rarely pick
LOCK = Path("/tmp/lstm-netns.lock")
NETNS_DIR = Path("/run/netns")
OWNER = re.compile(r"^lstm-test pid=(\d+)$")


def _ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done


@functools.cache
def available() -> str | None:
    """None when this process may make namespaces and bridges; otherwise why not (a reason for a skip)."""
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "`ip` (iproute2) is not installed: run `make postgres`"
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "delete", probe, check=False)
    bridge = _ip("link", "add", probe[:15], "type", "bridge", check=False)
    if bridge.returncode != 0:
        return f"cannot make a Linux bridge here: {bridge.stderr.strip()}"
    _ip("link", "delete", probe[:15], check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_with_parent(then: Callable[[], Any] | None) -> Callable[[], None]:
    def preexec() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if then is not None:
            then()

    return preexec


def remove_stale() -> None:
    """Delete the bridges and namespaces whose owner (a test process) is gone, e.g. killed mid-run."""
    for line in _ip("-o", "link", "show", "type", "bridge").stdout.splitlines():
        name = line.split(":")[1].strip()
        if name.startswith(PREFIX):
            alias = re.search(r"alias (.*)$", line)
            owner = OWNER.match(alias.group(1).strip()) if alias else None
            if owner is None or not _alive(int(owner.group(1))):
                _ip("link", "delete", name, check=False)
    for namespace in _ip("netns", "list").stdout.split():
        match = re.match(rf"^{PREFIX}-(\d+)-", namespace)
        if match and not _alive(int(match.group(1))):
            _ip("netns", "delete", namespace, check=False)


class Host:
    """One network namespace on the bridge: `address`, `popen` and `run` of programs inside it."""

    def __init__(self, network: Network, name: str, namespace: str, address: str) -> None:
        self.network, self.name, self.namespace, self.address = network, name, namespace, address

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the namespace; it dies with the test process and is killed when the network ends."""
        kwargs["preexec_fn"] = _stop_with_parent(kwargs.get("preexec_fn"))
        process: subprocess.Popen[Any] = subprocess.Popen(self._argv(argv), env=env, **kwargs)
        self.network.processes.append(process)
        return process

    def run(self, argv: Sequence[str], timeout: float = 60.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the namespace to its end; its output as text."""
        kwargs.setdefault("capture_output", True)
        return subprocess.run(
            self._argv(argv), text=True, timeout=timeout, preexec_fn=_stop_with_parent(None), **kwargs
        )


class Network:
    """A bridge in the root namespace (`address`, `bridge`) and the hosts on it; deleted whole on exit."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.processes: list[subprocess.Popen[Any]] = []
        self.hosts: list[Host] = []
        self.subnet = -1
        self.bridge = ""
        self.address = ""

    def __enter__(self) -> Network:
        reason = available()
        if reason is not None:
            raise RuntimeError(reason)
        try:
            with self._locked():
                remove_stale()
                self.subnet = self._free_subnet()
                self.bridge = f"{PREFIX}{self.subnet}br"
                self.address = f"{SUBNET}.{self.subnet}.1"
                _ip("link", "add", self.bridge, "type", "bridge")
                _ip("link", "set", self.bridge, "alias", f"lstm-test pid={self.pid}")
                # Bridged traffic between hosts must not meet the machine's firewall (Docker's FORWARD DROP).
                _ip("link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0", check=False)
                _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
                _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One test process at a time picks a subnet and claims it (its bridge's address)."""
        with LOCK.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _free_subnet(self) -> int:
        used = set(re.findall(rf"inet {re.escape(SUBNET)}\.(\d+)\.", _ip("-o", "-4", "addr", "show").stdout))
        for subnet in range(256):
            if str(subnet) not in used and not Path(f"/sys/class/net/{PREFIX}{subnet}br").exists():
                return subnet
        raise RuntimeError(f"every subnet {SUBNET}.X.0/24 is in use")

    def add_host(self, name: str) -> Host:
        """A new namespace joined to the bridge, with the next address of the subnet and its loopback up."""
        if not re.fullmatch(r"[a-z0-9]{1,20}", name):
            raise ValueError(f"a host name is 1-20 lower-case letters or digits, not {name!r}")
        number = len(self.hosts) + 2
        if number > 254:
            raise RuntimeError("a network has at most 253 hosts")
        namespace = f"{PREFIX}-{self.pid}-{self.subnet}-{name}"
        outside = f"{PREFIX}{self.subnet}v{number}"
        address = f"{SUBNET}.{self.subnet}.{number}"
        _ip("netns", "add", namespace)
        host = Host(self, name, namespace, address)
        self.hosts.append(host)  # before it is complete: close() deletes whatever was made
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("addr", "add", f"{address}/24", "dev", "eth0", namespace=namespace)
        _ip("link", "set", "eth0", "up", namespace=namespace)
        _ip("link", "set", "lo", "up", namespace=namespace)
        return host

    def close(self) -> None:
        """Kill what runs in the hosts, delete the namespaces (their veth pairs go with them) and the bridge."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        self.processes.clear()
        for host in self.hosts:
            _ip("netns", "delete", host.namespace, check=False)
            _ip("link", "delete", f"{PREFIX}{self.subnet}v{self.hosts.index(host) + 2}", check=False)
        self.hosts.clear()
        if self.bridge:
            _ip("link", "delete", self.bridge, check=False)


def leftovers(network: Network) -> list[str]:
    """The namespaces and links of `network` that still exist (for the teardown test)."""
    namespaces = _ip("netns", "list").stdout.split()
    links = [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link", "show").stdout.splitlines()]
    ours = re.compile(
        rf"^({re.escape(network.bridge)}|{PREFIX}{network.subnet}v\d+|{PREFIX}-{network.pid}-{network.subnet}-.*)$"
    )
    return [name for name in namespaces + links if ours.match(name)]
