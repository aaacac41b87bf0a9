"""The process harness the end-to-end tests and benchmarks share: ports, and a child process seen through psutil."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

from benchmarks import harness
from tests.conftest import wait_for


def test_free_port_can_be_bound() -> None:
    port = harness.free_port()
    with socket.socket() as sock:
        sock.bind((harness.HOST, port))


def test_a_child_is_found_measured_and_seen_gone() -> None:
    marker = f"harness-{uuid.uuid4().hex}"
    code = "import sys, time; sum(range(10**6)); time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", code, marker])
    try:
        assert wait_for(lambda: harness.find_processes(marker) == [child.pid])
        assert harness.find_processes(marker[:-4], substring=True) == [child.pid]
        assert harness.find_processes(marker[:-4]) == []  # whole arguments only, unless substring
        assert child.pid in harness.children(os.getpid())
        assert harness.parent(child.pid) == os.getpid()
        assert harness.cmdline(child.pid)[-1] == marker
        assert harness.state(child.pid) in ("running", "sleeping")
        assert not harness.gone(child.pid)
        assert harness.rss_mib(child.pid) > 1
        assert harness.thread_count(child.pid) >= 1
        assert harness.cpu_seconds([child.pid]) >= 0
        assert harness.spawned_workers(os.getpid()) == []  # a plain child, not a multiprocessing one
    finally:
        child.kill()
    assert wait_for(lambda: harness.gone(child.pid))  # a zombie until reaped counts as gone
    child.wait()
    assert harness.state(child.pid) is None
    assert harness.children(child.pid) == [] and harness.cpu_seconds([child.pid]) == 0
