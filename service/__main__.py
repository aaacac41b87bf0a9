"""The lstm-serve command: serve the model store over HTTP, in this process or with a supervisor and N workers."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.config import FLAGS, Settings
from service.http_server import serve
from service.logs import configure
from service.peers import Peers, check_directory
from service.sockets import plain_socket, reserve
from service.supervisor import Supervisor, WorkerSpec, runner_command
from training.settings_cli import add_flags, settings_from
from training.store_settings import database_problem

log = logging.getLogger("service.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-serve",
        description="Serve the models of a store: /predict, the Open Inference Protocol, /models, /metrics. "
        "Every setting is an LSTM_ environment variable (see the README) and a flag (but LSTM_API_TOKEN); "
        "a flag given overrides its variable.",
    )
    add_flags(parser, Settings, FLAGS)
    return parser


# Prints the CPU budget's whole cores and its description, one per line.
BUDGET = "import model_store; budget = model_store.cpu_budget(); print(budget.threads); print(budget.describe())"


def worker_count(settings: Settings) -> int:
    """settings.workers, with auto resolved to the whole cores of the CPU budget (model_store.cpu_budget)."""
    if settings.workers != "auto":
        return settings.workers
    # Worked out in a short-lived child with the same affinity and cgroup: importing model_store brings
    # torch (about 150 MiB of private memory), which the supervisor would otherwise hold for its whole life.
    done = subprocess.run([sys.executable, "-c", BUDGET], capture_output=True, text=True, check=True, timeout=300)
    threads, described = done.stdout.splitlines()[-2:]
    log.info("--workers auto: %s worker%s for a CPU budget of %s", threads, "" if threads == "1" else "s", described)
    return min(int(threads), 64)


def uvicorn_options(settings: Settings, log_config: dict[str, Any]) -> dict[str, Any]:
    """uvicorn.Config's keyword arguments (besides the app) for `settings`."""
    trusted = settings.forwarded_allow_ips
    return {
        "log_config": log_config,
        "log_level": settings.log_level.lower(),
        "proxy_headers": trusted is not None,
        "forwarded_allow_ips": trusted,
        "timeout_graceful_shutdown": int(settings.drain_timeout),
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "server_header": False,
        # WebSocket streams (routes/stream.py): websockets' sans-I/O implementation, named rather than "auto" so a
        # missing package fails at start; a message over the body limit is closed with 1009 by uvicorn.
        "ws": "websockets-sansio",
        "ws_max_size": settings.max_body_bytes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    settings = settings_from(Settings, parser, parser.parse_args(argv), FLAGS)  # a bad value: exit 2
    problem = database_problem(settings)
    if problem is not None:
        print(f"lstm-serve: error: {problem}", file=sys.stderr)
        return 1
    try:
        log_config = configure(settings.log_level, settings.log_format)
    except ValueError as exc:  # logging names no such level
        print(f"lstm-serve: error: LSTM_LOG_LEVEL {settings.log_level!r}: {exc}", file=sys.stderr)
        return 2
    try:
        workers = worker_count(settings)
    except (subprocess.SubprocessError, ValueError) as exc:
        print(f"lstm-serve: error: --workers auto: cannot work out the CPU budget: {exc}", file=sys.stderr)
        return 2
    try:
        # With several workers this only reserves the address; each worker listens on a socket of its own.
        sock = reserve(settings.host, settings.port) if workers > 1 else plain_socket(settings.host, settings.port)
    except OSError as exc:  # the address is taken or cannot be bound
        print(f"lstm-serve: error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    grpc_address: socket.socket | None = None
    if workers > 1 and settings.grpc:
        try:  # the workers' gRPC servers share it with SO_REUSEPORT, as their HTTP sockets share `sock`
            grpc_address = reserve(settings.host, settings.grpc_port)
        except OSError as exc:
            sock.close()
            print(
                f"lstm-serve: error: cannot listen for gRPC on {settings.host}:{settings.grpc_port}: {exc}",
                file=sys.stderr,
            )
            return 1
        settings = settings.model_copy(update={"grpc_port": grpc_address.getsockname()[1]})
    metrics_dir: Path | None = settings.metrics_dir
    owned_metrics_dir = False
    if workers > 1 and metrics_dir is None:
        metrics_dir = Path(tempfile.mkdtemp(prefix="lstm-metrics-"))
        owned_metrics_dir = True
    if metrics_dir is not None:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):  # values of a previous run would be summed in
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # prometheus_client's own variable
    peers: Peers | None = None
    if workers > 1:  # the sockets over which workers forward sequence steps to each other (service/sequence_router.py)
        peers = Peers(0, workers, Path(tempfile.mkdtemp(prefix="lstm-peers-")))  # mkdtemp: mode 0700, ours alone
        try:
            check_directory(peers.directory, workers)
        except ValueError as exc:
            shutil.rmtree(peers.directory, ignore_errors=True)
            sock.close()
            print(f"lstm-serve: error: {exc}", file=sys.stderr)
            return 2
    # The workers get this object itself (pickled by spawn), with --workers auto and the metrics folder resolved.
    settings = settings.model_copy(update={"workers": workers, "metrics_dir": metrics_dir})
    options = uvicorn_options(settings, log_config)
    host, port = sock.getsockname()[:2]
    try:
        with sock:
            if workers == 1:
                log.info("serving on http://%s:%d with 1 worker, in this process", host, port)
                return serve(sock, settings, options)
            # One runner per lstm-serve: the supervisor's job-runner process runs every job, the workers none.
            worker_settings = settings.model_copy(update={"job_runner": False})
            spec = WorkerSpec(host, port, os.getpid(), options, worker_settings, peers=peers)
            runner = runner_command() if settings.job_runner else None
            return Supervisor(sock, spec, workers, settings.drain_timeout, runner=runner).run()
    finally:
        if grpc_address is not None:
            grpc_address.close()
        if owned_metrics_dir and metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if peers is not None:
            shutil.rmtree(peers.directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
