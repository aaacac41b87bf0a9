"""The lstm-serve command: serve the model store over HTTP with uvicorn (one or more workers)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from service.config import Settings
from service.workers import run_workers

APP = "service.app:app_from_env"

# Flags that exist as settings; each is written to its LSTM_ variable so every worker sees it.
FLAGS = {"store": "store_dir", "host": "host", "port": "port", "workers": "workers", "torch_threads": "torch_threads"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lstm-serve",
        description="Serve the models of a store: /predict, the Open Inference Protocol, /models, /metrics. "
        "Every setting is an LSTM_ environment variable (see the README); flags override them.",
    )
    parser.add_argument("--store", help="model store folder (LSTM_STORE_DIR, default model-store)")
    parser.add_argument("--host", help="address to bind (LSTM_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (LSTM_PORT, default 8000)")
    parser.add_argument("--workers", type=int, help="server processes (LSTM_WORKERS, default 1)")
    parser.add_argument("--torch-threads", type=int, help="torch threads per worker (LSTM_TORCH_THREADS, default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, setting in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"LSTM_{setting.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValueError as exc:
        print(f"lstm-serve: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics_dir: Path | None = settings.metrics_dir
    owned_metrics_dir = False
    if settings.workers > 1 and metrics_dir is None:
        metrics_dir = Path(tempfile.mkdtemp(prefix="lstm-metrics-"))
        owned_metrics_dir = True
    if metrics_dir is not None:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):  # values of a previous run would be summed in
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    trusted = settings.forwarded_allow_ips
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_level": settings.log_level.lower(),
        "proxy_headers": trusted is not None,
        "forwarded_allow_ips": trusted,
        "timeout_graceful_shutdown": int(settings.drain_timeout),
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive,
        "server_header": False,
    }
    try:
        if settings.workers > 1:
            run_workers(uvicorn.Config(APP, **options))  # a listening socket per worker: see service/workers.py
        else:
            uvicorn.run(APP, **options)
    except OSError as exc:  # the address is taken or cannot be bound
        print(f"lstm-serve: error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if owned_metrics_dir and metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
