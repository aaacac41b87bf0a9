"""The serving benchmark's servers: the configurations it measures and each one's process, started and stopped.

A configuration names an app (lstm-serve, the naive FastAPI app, the trivial ASGI app), its worker count and
extra environment variables, and for lstm-serve optionally another source tree (the baseline of a before/after
run: `--baseline-tree`). The processes are the harness's (benchmarks/harness.py), in sessions of their own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from benchmarks import harness
from benchmarks.harness import HOST

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServerConfig:
    """One server to measure: which app, how many workers, extra environment variables, and which source tree."""

    name: str
    app: Literal["lstm", "naive", "trivial"]
    workers: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    tree: Path | None = None  # lstm-serve from this source tree (PYTHONPATH) instead of this one
    twin_of: str | None = None  # with `tree`: the configuration of this tree it is compared with


# The servers every run measures, in this order; each line is one configuration with its environment
# variables. Add a line to compare a setting, e.g.
#   ServerConfig("lstm w1 wait 2ms", "lstm", 1, {"LSTM_BATCH_MAX_WAIT_MS": "2"}),
# lstm-serve ignores LSTM_ variables it does not know, so a line for a setting that does not exist (any
# more) measures the default. Every LSTM_ variable of the calling shell is dropped.
SERVERS: tuple[ServerConfig, ...] = (
    ServerConfig("lstm w1", "lstm", workers=1),
    ServerConfig("lstm w1 no batching", "lstm", workers=1, env={"LSTM_BATCHING": "false"}),
    ServerConfig("lstm w2", "lstm", workers=2),
    ServerConfig("lstm w2 no batching", "lstm", workers=2, env={"LSTM_BATCHING": "false"}),
    ServerConfig("naive", "naive"),
)
# Measured only when named with --servers (then only the servers named are measured).
OPTIONAL_SERVERS: tuple[ServerConfig, ...] = (
    ServerConfig("lstm w1 no access log", "lstm", workers=1, env={"LSTM_LOG_LEVEL": "warning"}),
    ServerConfig("lstm w2 no access log", "lstm", workers=2, env={"LSTM_LOG_LEVEL": "warning"}),
    ServerConfig("lstm w1 1 OMP thread", "lstm", workers=1, env={"OMP_NUM_THREADS": "1"}),
    ServerConfig("lstm w2 1 OMP thread", "lstm", workers=2, env={"OMP_NUM_THREADS": "1"}),
    ServerConfig("lstm w1 2 torch threads", "lstm", workers=1, env={"LSTM_TORCH_THREADS": "2"}),
    # TorchScript against ONNX Runtime (docs/runtimes.md); the default, auto, is "lstm w1" when the version has
    # ONNX files (`lstm-train export` adds them to an older store).
    ServerConfig("lstm w1 torchscript", "lstm", workers=1, env={"LSTM_RUNTIME": "torchscript"}),
    ServerConfig("lstm w1 onnxruntime", "lstm", workers=1, env={"LSTM_RUNTIME": "onnxruntime"}),
)
BASELINE = "naive"
TRIVIAL = ServerConfig("trivial ASGI", "trivial")


def baseline_twins(configs: Sequence[ServerConfig], tree: Path) -> list[ServerConfig]:
    """For each lstm-serve configuration, the same one run from `tree`: "lstm w1" -> "base w1"."""
    twins = []
    for config in configs:
        if config.app == "lstm" and config.tree is None:
            name = config.name.replace("lstm", "base", 1) if config.name.startswith("lstm") else f"base {config.name}"
            twins.append(replace(config, name=name, tree=tree.resolve(), twin_of=config.name))
    return twins


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def server_env(config: ServerConfig, model_path: Path) -> dict[str, str]:
    """This script's environment minus every LSTM_ variable, plus the configuration's (and its tree's) variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LSTM_")}
    env.update(config.env)
    if config.app == "naive":
        env["NAIVE_MODEL_PATH"] = str(model_path)
    if config.tree is not None:
        # The tree's packages first: PYTHONPATH precedes site-packages and the editable install's finder.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(config.tree), env.get("PYTHONPATH", "")) if p)
    return env


class Server:
    """One server process (and its uvicorn workers), started and stopped by the benchmark."""

    def __init__(self, config: ServerConfig, store: Path, model_path: Path, log: Path) -> None:
        self.config = config
        self.port = harness.free_port()
        self.log = log
        self.env = server_env(config, model_path)
        # `python -m` puts the working directory first on sys.path: another tree's lstm-serve runs from that tree.
        self.cwd = config.tree or REPO
        uvicorn = [sys.executable, "-m", "uvicorn"]
        if config.app == "lstm":
            self.command = harness.lstm_serve_command(store, self.port, config.workers)
            self.probe = "/readyz"
        elif config.app == "naive":
            self.command = [*uvicorn, "benchmarks.naive_app:app", "--host", HOST, "--port", str(self.port)]
            self.command += ["--workers", str(config.workers)]
            self.probe = "/openapi.json"  # the model loads at import: any 200 means ready
        else:
            self.command = [*uvicorn, "benchmarks.trivial_app:app", "--host", HOST, "--port", str(self.port)]
            self.command += ["--lifespan", "off", "--no-access-log", "--log-level", "warning"]
            self.probe = "/"
        self.process: harness.ServeProcess | None = None
        self.workers: list[int] = []
        self.ready_s = float("nan")  # process start -> first 200 on the probe
        self.all_ready_s = float("nan")  # process start -> every worker has logged "Application startup complete"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = harness.READY_TIMEOUT_S) -> None:
        self.process = harness.start(
            self.command,
            self.port,
            self.log,
            env=self.env,
            cwd=self.cwd,
            probe=self.probe,
            timeout=timeout,
            new_session=True,
        )
        self.ready_s = self.process.ready_s
        deadline = self.process.started + timeout
        if self.config.app == "trivial":  # --lifespan off: no startup line to wait for
            self.all_ready_s = self.ready_s
        elif self.config.env.get("LSTM_LOG_LEVEL", "info").lower() in ("info", "debug", "trace"):
            while self.process.log_text().count("Application startup complete") < self.config.workers:
                self.process.check_alive()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{self.config.name}: not every worker started; log: {self.log}")
                time.sleep(0.01)
            self.all_ready_s = time.perf_counter() - self.process.started
        else:  # no startup lines in the log: starting is CPU-bound (imports, loading), so done once all is idle
            wait_idle(self)
            self.all_ready_s = time.perf_counter() - self.process.started
        self.workers = self.process.workers()

    def tree(self) -> list[int]:
        assert self.process is not None
        return self.process.tree()

    def worker_restarts(self) -> int:
        return len(re.findall(r"Child process \[\d+\] died", self.log.read_text(errors="replace")))

    def stop(self) -> None:
        if self.process is not None:
            harness.stop(self.process, timeout=20)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        server.start()
        yield server
    finally:
        server.stop()


def wait_idle(server: Server, timeout: float = 180.0, window: float = 0.2) -> tuple[float, float]:
    """Wait until the server's processes use (almost) no CPU; returns (seconds waited, CPU seconds they used).

    When wrk stops, each connection may leave a request in flight; the server still computes it (nobody
    cancels work for a client that left), so the next cell must not start before that backlog is gone.
    """
    pids = server.tree()
    started = time.perf_counter()
    first = harness.cpu_seconds(pids)
    while True:
        before = harness.cpu_seconds(pids)
        time.sleep(window)
        after = harness.cpu_seconds(pids)
        if after - before <= 0.011:  # at most one clock tick in the window
            return max(0.0, time.perf_counter() - started - window), after - first
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{server.config.name} still busy {timeout:g} s after the load stopped")


def check_tree(config: ServerConfig) -> dict[str, str]:
    """Where the configuration's python imports our packages from; raises unless all come from its tree.

    The editable install of this tree must not shadow PYTHONPATH, or a before/after run compares a tree with itself.
    """
    modules = "(model_store, service, training)"
    code = (
        f"import json, model_store, service, training; print(json.dumps({{m.__name__: m.__file__ for m in {modules}}}))"
    )
    cwd = config.tree or REPO
    done = subprocess.run(
        [sys.executable, "-c", code], env=server_env(config, Path()), cwd=cwd, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{config.name}: importing the packages failed:\n{done.stderr.decode(errors='replace')}")
    found: dict[str, str] = json.loads(done.stdout)
    wrong = {name: path for name, path in found.items() if not Path(path).resolve().is_relative_to(cwd)}
    if wrong:
        raise RuntimeError(f"{config.name}: packages imported from outside {cwd}: {wrong}")
    return found
