"""What the serving benchmark ran on: cores, CPU, memory, kernel, package versions, wrk and the code's commits."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import psutil
import torch

from benchmarks.servers import REPO

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def commit(tree: Path) -> str:
    """`git describe --always --dirty` of a source tree, or "unknown"."""
    git = ["git", "-C", str(tree), "describe", "--always", "--dirty"]
    return subprocess.run(git, capture_output=True, check=False).stdout.decode().strip() or "unknown"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine(args: argparse.Namespace) -> dict[str, str]:
    wrk = subprocess.run([args.wrk, "-v"], capture_output=True, check=False).stdout.decode().splitlines()
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "memory": f"{psutil.virtual_memory().total / 1024**3:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "orjson": package_version("orjson"),
        "fastapi": package_version("fastapi"),
        "starlette": package_version("starlette"),
        "pydantic": package_version("pydantic"),
        "uvicorn": package_version("uvicorn"),
        "uvloop": package_version("uvloop"),
        "httptools": package_version("httptools"),
        "wrk": wrk[0] if wrk else "-",
        "commit": commit(REPO),
        "thread env": " ".join(f"{k}={os.environ[k]}" for k in THREAD_ENV if k in os.environ) or "none set",
    }
    if args.baseline_tree is not None:
        info["baseline commit"] = commit(args.baseline_tree)
    return info
