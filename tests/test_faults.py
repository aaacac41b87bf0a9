"""Fault injection against real processes: kill -9 mid-save and mid-training, tampered checkpoints, a full disk,
two servers promoting at once, a client that hangs up mid-body.

After each fault `assert_store_consistent` checks the store as a whole: no partial version, every
manifest's sha256 matches its model.pt, every alias points at a version, the version counter is past
every version, and no job is left `running`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import model_store
from service.jobs import RUNNING, JobStore
from tests.conftest import mounted_tmpfs, save_tiny, wait_for
from tests.test_e2e import TINY_PARAMS, Server, start_server, stop, wait_job
from tests.test_jobs import training_processes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def assert_store_consistent(store: model_store.ModelStore) -> None:
    """The store after a fault: whole versions only, matching hashes, valid aliases and counter, no running job."""
    if not store.root.is_dir():
        return
    for model_dir in sorted(p for p in store.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = model_dir.name
        versions = store.versions(name)
        versions_dir = model_dir / "versions"
        entries = sorted(versions_dir.iterdir()) if versions_dir.is_dir() else []
        for entry in entries:  # anything in versions/ is a whole version: staging happens beside it
            assert (entry / "manifest.json").is_file() and (entry / "model.pt").is_file(), f"partial version {entry}"
        assert sorted(int(entry.name) for entry in entries) == versions, (entries, versions)
        for version in versions:
            manifest = store.manifest(name, version)
            assert (manifest.name, manifest.version) == (name, version)
            checkpoint = (versions_dir / str(version) / "model.pt").read_bytes()
            assert model_store.sha256_hex(checkpoint) == manifest.sha256, f"{name} {version}: sha256 mismatch"
            assert all((versions_dir / str(version) / filename).is_file() for filename in manifest.files)
            store.load(name, version)  # and it loads as TorchScript
        aliases_file = model_dir / "aliases.json"
        if aliases_file.exists():
            aliases = json.loads(aliases_file.read_bytes())  # valid JSON, never a torn write
            assert isinstance(aliases, dict)
            for alias, target in aliases.items():
                assert target in versions, f"{name}: alias {alias} points at missing version {target}"
        counter_file = model_dir / "next_version"
        if versions:
            assert int(counter_file.read_text()) > versions[-1], "the counter must be past every published version"
    if (store.root / ".jobs" / "jobs.sqlite3").exists():
        assert JobStore(store.root).counts()[RUNNING] == 0, "a job was left running"


# ---- kill -9 while saving -----------------------------------------------------------------

# Scripts one tiny model, then 10 times: fork a writer that saves in a loop, let it run 20-300 ms, kill -9 it.
# A save takes ~20 ms, nearly all of it between creating its staging folder and the rename, so most kills
# land mid-save. (Fork keeps it to one interpreter start; nothing has run torch's thread pools before it.)
KILL_DURING_SAVES = """
import os, random, signal, sys, time
import model_store
from tests.conftest import tiny_module
store = model_store.ModelStore(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
module = tiny_module()
spec = (model_store.sequence_spec("input", 1),)
for _ in range(int(sys.argv[3])):
    pid = os.fork()
    if pid == 0:
        while True:
            store.save("lstm", module, inputs=spec, outputs=spec, extra_files={"report.png": b"png" * 1000})
    time.sleep(rng.uniform(0.02, 0.3))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_writer_killed_mid_save_never_leaves_a_partial_version(store: model_store.ModelStore) -> None:
    save_tiny(store, seed=1)
    subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVES, str(store.root), "7", "10"], cwd=REPO, check=True, timeout=600
    )
    left = [p for p in (store.root / "lstm").iterdir() if p.name.startswith(".staging-")]
    assert left, "no kill landed mid-save; the test did not test anything"
    assert_store_consistent(store)
    before = store.versions("lstm")
    # A writer killed between writing the counter and its rename skips a number, so the next number is the
    # counter's, not necessarily before[-1] + 1 (assert_store_consistent checked the counter is past every version).
    counter = int((store.root / "lstm" / "next_version").read_text())
    # The lock a killed writer held is released by the kernel: the next save is not blocked, and gets that number.
    assert save_tiny(store, seed=2).version == counter
    assert store.versions("lstm") == [*before, counter]
    assert_store_consistent(store)


# ---- a full disk -------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path, "1m") as mount_point:
        yield mount_point


def fill(mount_point: Path, leave_pages: int) -> Path:
    """Fill the file system but `leave_pages` pages of 4 KiB. It is written until it is full, not to a size read
    beforehand: a server under test may write to it meanwhile, and a size read from statvfs would no longer fit."""
    filler = mount_point / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (b"\0" * 65536, b"\0" * 4096):  # big steps, then the last pages one by one
            try:
                while handle.write(chunk) == len(chunk):
                    pass
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        pages = -(-handle.tell() // 4096)  # the last page counts whole, however little of it is used
        handle.truncate(max(pages - leave_pages, 0) * 4096)
    return filler


def test_full_disk_fails_a_save_whole_at_every_point_and_keeps_aliases(tiny_tmpfs: Path) -> None:
    store = model_store.ModelStore(tiny_tmpfs / "store")
    save_tiny(store, seed=1)
    store.set_alias("lstm", model_store.PRODUCTION, 1)
    outcomes = []
    # From no room at all to room to spare: the space runs out at every step of a save in turn.
    for pages in range(12):
        filler = fill(tiny_tmpfs, pages)
        before = store.versions("lstm")
        try:
            manifest = save_tiny(store, seed=pages)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            assert store.versions("lstm") == before, f"{pages} pages: a failed save published a version"
            outcomes.append("ENOSPC")
        else:
            assert store.versions("lstm") == [*before, manifest.version]
            outcomes.append("saved")
        with contextlib.suppress(OSError):
            store.set_alias("lstm", model_store.PRODUCTION, store.versions("lstm")[-1])
        assert_store_consistent(store)
        filler.unlink()
    assert outcomes[0] == "ENOSPC" and outcomes[-1] == "saved", outcomes
    assert store.aliases("lstm")[model_store.PRODUCTION] in store.versions("lstm")


def test_alias_write_on_a_full_disk_keeps_the_old_alias(tiny_tmpfs: Path) -> None:
    store = model_store.ModelStore(tiny_tmpfs / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    store.set_alias("lstm", model_store.PRODUCTION, 1)
    fill(tiny_tmpfs, 0)
    with pytest.raises(OSError) as raised:
        store.set_alias("lstm", model_store.PRODUCTION, 2)
    assert raised.value.errno == errno.ENOSPC
    assert store.aliases("lstm") == {model_store.PRODUCTION: 1}
    assert [p.name for p in (store.root / "lstm").iterdir() if p.name.startswith(".aliases")] == []
    assert_store_consistent(store)


# ---- real servers ------------------------------------------------------------------------


@pytest.fixture
def server(store: model_store.ModelStore, tmp_path: Path) -> Iterator[Server]:
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    running = start_server(store.root, tmp_path / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1")
    yield running
    stop(running)


def served_version(server: Server, name: str = "lstm") -> int:
    response = httpx.post(f"{server.url}/predict", json={"inputs": [[[0.5]]], "model": name}, timeout=10)
    assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def log_problems(server: Server) -> list[str]:
    return [line for line in server.log.read_text().splitlines() if "Traceback" in line or "ERROR" in line]


def test_training_process_killed_9_fails_its_job_and_registers_nothing(
    server: Server, store: model_store.ModelStore
) -> None:
    body = {"params": TINY_PARAMS | {"max_epochs": 100_000}, "promote": "always"}
    job = httpx.post(f"{server.url}/train", json=body, timeout=10).json()
    wait_job(server.url, job["id"], ("running",))  # and past its first epoch
    (pid,) = training_processes(store.root)
    os.kill(pid, signal.SIGKILL)
    done = wait_job(server.url, job["id"], ("succeeded", "failed", "cancelled"))
    assert done["status"] == "failed", done
    assert "exited with status -9" in str(done["error"])
    assert store.versions("lstm") == [1, 2]
    assert served_version(server) == 2
    assert_store_consistent(store)
    assert log_problems(server) == []


def test_client_hanging_up_mid_body_leaves_no_traceback_and_the_server_healthy(server: Server) -> None:
    for path in ("/predict", "/v2/models/lstm/infer", "/models/lstm/aliases/production"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            method = "PUT" if "aliases" in path else "POST"
            head = (
                f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"inputs": [[[0.1]]')
            sock.shutdown(socket.SHUT_WR)  # the body ends 980 bytes early
            assert sock.recv(65536) == b""  # no answer to a request that never arrived whole
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert served_version(server) == 2
    time.sleep(0.5)  # the log is written by the server process; give it the time to flush
    assert log_problems(server) == [], server.log.read_text()[-3000:]


def flip_a_byte(path: Path) -> bytes:
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    return original


def test_checkpoint_changed_on_disk_is_refused_and_the_last_good_version_keeps_serving(
    store: model_store.ModelStore, tmp_path: Path
) -> None:
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    save_tiny(store, name="other", seed=3)
    server = start_server(store.root, tmp_path / "serve.log")
    try:
        save_tiny(store, seed=4)  # version 3, as a trainer in another process would
        assert wait_for(lambda: served_version(server) == 3)
        store.set_alias("lstm", model_store.PRODUCTION, 2)  # roll back, then break 3 and promote it again
        assert wait_for(lambda: served_version(server) == 2)
        original = flip_a_byte(store.root / "lstm/versions/3/model.pt")
        promoted = httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": 3}, timeout=10)
        # Since issue 11 the target is verified before the alias is written: refused, the alias unchanged.
        assert promoted.status_code == 409 and "sha256" in promoted.json()["error"], promoted.text
        assert store.aliases("lstm") == {model_store.PRODUCTION: 2}
        store.set_alias("lstm", model_store.PRODUCTION, 3)  # as a writer that does not verify (another process)
        assert wait_for(
            lambda: (
                [m for m in httpx.get(f"{server.url}/models").json()["models"] if m["name"] == "lstm"][0]["load_error"]
                is not None
            )
        )
        (entry,) = [m for m in httpx.get(f"{server.url}/models").json()["models"] if m["name"] == "lstm"]
        assert entry["serving_version"] == 2
        assert entry["load_error"]["version"] == 3 and "sha256" in entry["load_error"]["error"]
        assert all(served_version(server) == 2 for _ in range(20))
        # The version it serves is changed on disk under it: the loaded copy keeps serving.
        flip_a_byte(store.root / "lstm/versions/2/model.pt")
        time.sleep(0.5)  # a few store polls
        assert served_version(server) == 2
    finally:
        stop(server)
    # What is not guaranteed: a restarted service does not fall back to an older version. It serves the
    # other models, and says why this one has none.
    restarted = start_server(store.root, tmp_path / "serve2.log")
    try:
        (entry,) = [m for m in httpx.get(f"{restarted.url}/models").json()["models"] if m["name"] == "lstm"]
        assert entry["serving_version"] is None and entry["load_error"]["version"] == 3
        refused = httpx.post(f"{restarted.url}/predict", json={"inputs": [[[0.5]]]})
        # 503 since issue 11 (a 500 before): the server's condition, said plainly.
        assert refused.status_code == 503 and "no loadable version" in refused.json()["error"]
        assert "Traceback" not in refused.text
        assert served_version(restarted, "other") == 1
    finally:
        stop(restarted)
    (store.root / "lstm/versions/3/model.pt").write_bytes(original)
    flip_a_byte(store.root / "lstm/versions/2/model.pt")  # flipped back
    assert_store_consistent(store)


def test_two_servers_promoting_different_versions_at_once_agree_on_the_last_alias(
    store: model_store.ModelStore, tmp_path: Path
) -> None:
    for seed in (1, 2, 3):
        save_tiny(store, seed=seed)
    first = start_server(store.root, tmp_path / "a.log")
    second = start_server(store.root, tmp_path / "b.log")
    try:
        answers: list[httpx.Response] = []

        def promote(server: Server, version: int, barrier: threading.Barrier) -> None:
            barrier.wait()
            answers.append(
                httpx.put(f"{server.url}/models/lstm/aliases/production", json={"version": version}, timeout=30)
            )

        for round_number in range(10):
            barrier = threading.Barrier(2)
            versions = (1, 3) if round_number % 2 else (3, 1)
            threads = [
                threading.Thread(target=promote, args=(server, version, barrier))
                for server, version in zip((first, second), versions, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert [answer.status_code for answer in answers] == [200] * 20, [a.text for a in answers if a.is_error]
        final: Any = json.loads((store.root / "lstm/aliases.json").read_bytes())[model_store.PRODUCTION]
        assert final in (1, 3)
        assert wait_for(lambda: served_version(first) == final and served_version(second) == final)
        assert log_problems(first) == [] and log_problems(second) == []
    finally:
        stop(first)
        stop(second)
    assert_store_consistent(store)
