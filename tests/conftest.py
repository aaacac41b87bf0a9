"""Shared fixtures: a store in tmp_path holding tiny real TorchScript models."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

import model_store
from service import Settings, create_app
from tests.postgres_server import PostgresServer
from tests.s3_server import S3Server
from training import LSTMRegressor, ModelConfig, sequence_support
from training.export import eager_of, onnx_files

SaveTiny = Callable[..., model_store.Manifest]

# Every lstm-serve a test starts (through the harness, or a Popen of its own) binds its gRPC server on a port of
# the system's choosing: test files run in parallel, and two servers on the default 8001 would stop each other.
os.environ["LSTM_GRPC_PORT"] = "0"
# The .pt2 export costs seconds per training (docs/runtimes.md); the suite trains many models, so the lstm-train and
# lstm-serve processes it starts skip it. The tests of the .pt2 files (tests/test_pt2_export.py) export in process.
os.environ["LSTM_NO_PT2"] = "true"
os.environ["LSTM_JOB_PT2"] = "false"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (make test): two test processes per core of the CPU budget, not of the machine, because most
    tests spend their time waiting on servers and training processes they started."""
    return 2 * model_store.cpu_budget().threads


# The files that take longest (training jobs, real servers), longest first. Collected first, xdist's loadfile
# hands them out first, so the short files fill the gaps at the end instead of one long file running alone.
SLOW_FILES = (
    "test_scale_out.py",
    "test_jobs.py",
    "test_pg_jobs.py",
    "test_supervisor.py",
    "test_onnx_import.py",
    "test_import.py",
    "test_e2e.py",
    "test_client.py",
    "test_cli_client.py",
    "test_page.py",
    "test_training.py",
    "test_catalog_e2e.py",
    "test_sequences.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow files first (SLOW_FILES' order), the rest as collected; each file's tests keep their order."""

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_FILES.index(name) if name in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)


class OneShotRegressor(nn.Module):
    """What versions exported before sequence support hold: LSTMRegressor's `forward` alone (no forward_state);
    built in the same order, so a seed gives the same weights as LSTMRegressor's."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(config.input_size, config.hidden_size, config.num_layers)
        self.head = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(x)  # (seq, batch, hidden)
        output: torch.Tensor = self.head(hidden)  # (seq, batch, output)
        return output


def tiny_config(hidden_size: int = 4, num_layers: int = 1) -> ModelConfig:
    return ModelConfig(hidden_size=hidden_size, num_layers=num_layers)


def tiny_module(
    seed: int = 0, hidden_size: int = 4, stateful: bool = False, num_layers: int = 1
) -> model_store.ScriptModule:
    """A real (untrained) LSTM regressor, scripted; `seed` makes its weights distinct. `stateful`: today's export
    (LSTMRegressor, with forward_state); otherwise one exported before sequence support (forward only)."""
    torch.manual_seed(seed)
    config = tiny_config(hidden_size, num_layers)
    return model_store.script(LSTMRegressor(config) if stateful else OneShotRegressor(config))


def save_tiny(
    store: model_store.Store,
    name: str = "lstm",
    seed: int = 0,
    stateful: bool = False,
    hidden_size: int = 4,
    num_layers: int = 1,
    onnx: bool = False,
    **kwargs: object,
) -> model_store.Manifest:
    """Publish a tiny version; `stateful`: with forward_state and a manifest.sequence whose parity is measured;
    `onnx`: with the ONNX files training exports (model.onnx, model_state.onnx), parity-checked."""
    module = tiny_module(seed, hidden_size, stateful, num_layers)
    sequence = sequence_support(module, tiny_config(hidden_size, num_layers), seed) if stateful else None
    entry = None
    if onnx:
        eager, config = eager_of(module)
        entry, files = onnx_files(eager, config, seed, references=(module,))
        assert entry.error is None, entry.error
        kwargs["extra_files"] = {**dict(kwargs.get("extra_files") or {}), **files}  # type: ignore[call-overload]
    return store.save(
        name,
        module,
        inputs=(model_store.sequence_spec("input", 1),),
        outputs=(model_store.sequence_spec("output", 1),),
        params={"seed": seed},
        sequence=sequence,
        onnx=entry,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> model_store.ModelStore:
    return model_store.ModelStore(tmp_path / "store")


LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)


def make_client(store: model_store.ModelStore, client: tuple[str, int] = LOOPBACK, **overrides: object) -> TestClient:
    """A TestClient over the real app and lifespan for `store` (enter it with `with`); no gRPC server unless
    `grpc=True` is passed (then on a free port, grpc_port=0, unless one is given)."""
    overrides = {"grpc": False, "grpc_port": 0, **overrides}
    settings = Settings(store_dir=store.root, poll_interval=0.05, **overrides)  # type: ignore[arg-type]
    return TestClient(create_app(settings), client=client)


@pytest.fixture
def served_store(store: model_store.ModelStore) -> model_store.ModelStore:
    """A store with two tiny versions of `lstm` (different weights) and a report picture on each."""
    save_tiny(store, seed=1, extra_files={"report.png": b"\x89PNG\r\n\x1a\nfake"})
    save_tiny(store, seed=2, extra_files={"report.png": b"\x89PNG\r\n\x1a\nfake"})
    return store


@pytest.fixture
def client(served_store: model_store.ModelStore) -> Iterator[TestClient]:
    with make_client(served_store) as test_client:
        yield test_client


def wait_for(condition: Callable[[], object], timeout: float = 60.0) -> bool:
    """Poll `condition` until it is true or `timeout` seconds pass (generous: the machine may be busy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def mounted_tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` (e.g. "1m"); needs root and CAP_SYS_ADMIN, which this project's machines and CI have."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback for this test process (tests/postgres_server.py)."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database of its own for one test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 HTTP endpoint (moto's server) on loopback for this test process (tests/s3_server.py)."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """'s3://BUCKET/PREFIX' of a new, empty bucket of its own for one test; the standard AWS_* variables point
    boto3 (in this process and in the children it starts) at the server."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.create_bucket()}/store"
