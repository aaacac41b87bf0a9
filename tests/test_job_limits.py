"""Training jobs within memory: an estimate refuses big runs up front, a memory limit stops the rest, short errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import model_store
from benchmarks import harness
from service.job_runner import child_setup, exit_reason
from tests.conftest import make_client
from tests.test_jobs import TINY, wait_job
from training.config import preset
from training.memory import DEFAULT_BUDGET_MB, estimate

pytestmark = pytest.mark.slow

HUGE = {"hidden_size": 512, "num_layers": 4, "batch_size": 4096, "seq_len": 2048}  # the 16 GiB request
TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/training/train.py", line 97, in fit
    loss.backward()
RuntimeError: [enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory
"""


def test_over_budget_params_answer_422_naming_estimate_and_budget(store: model_store.ModelStore) -> None:
    with make_client(store, job_poll_interval=0.1) as client:
        response = client.post("/train", json={"params": HUGE})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert f"memory budget of {DEFAULT_BUDGET_MB} MiB" in error and "MiB at peak" in error
        assert "LSTM_JOB_MEMORY_BUDGET_MB" in error
        assert client.get("/train").json()["total"] == 0  # nothing was queued


def test_memory_budget_is_a_setting_and_counts_the_dataset(store: model_store.ModelStore) -> None:
    with make_client(store, job_poll_interval=60, job_memory_budget_mb=900) as client:
        # The default preset fits in 900 MiB; 128 hidden units (about 1.2 GiB at peak) do not.
        assert client.post("/train", json={"params": {"max_epochs": 1}}).status_code == 202
        refused = client.post("/train", json={"params": {"hidden_size": 128}})
        assert refused.status_code == 422 and "memory budget of 900 MiB" in refused.json()["error"]
        # A dataset is trained full batch: 1000 steps x 300 sequences at 32 x 2 is over the budget.
        inputs = [[[0.0]] * 300] * 1000
        body: dict[str, Any] = {"params": {"max_epochs": 1}, "dataset": {"inputs": inputs, "targets": inputs}}
        refused = client.post("/train", json=body)
        assert refused.status_code == 422 and "memory budget of 900 MiB" in refused.json()["error"]


def test_every_preset_fits_the_default_budget() -> None:
    for name in ("robust", "tutorial"):
        assert estimate(preset(name)).peak_mib < DEFAULT_BUDGET_MB
    largest = preset("robust").with_overrides({"hidden_size": 512, "num_layers": 4})
    assert estimate(largest).peak_mib < DEFAULT_BUDGET_MB


def test_job_over_its_memory_limit_fails_with_a_one_line_reason(store: model_store.ModelStore) -> None:
    # No estimate check (budget 0), a 700 MiB data limit: 256 hidden units need about 2 GiB to evaluate.
    with make_client(store, job_poll_interval=0.1, job_memory_budget_mb=0, job_memory_limit_mb=700) as client:
        job = client.post("/train", json={"params": TINY | {"hidden_size": 256, "max_epochs": 2}}).json()
        done = wait_job(client, job["id"], timeout=300)
        assert done["status"] == "failed", done
        error = done["error"]
        assert "ran out of memory (limit 700 MiB)" in error, error
        assert "Traceback" not in error and "/" not in error and "\n" not in error
        listed = client.get("/train").json()["jobs"][0]["error"]
        assert listed == error
    assert store.versions("lstm") == []
    assert "Traceback" in (store.root / ".jobs" / job["id"] / "train.log").read_text()


def test_exit_reason_keeps_the_error_line_and_drops_the_traceback() -> None:
    stderr = TRACEBACK + "lstm-train: error: training diverged at epoch 3 (loss nan); try a lower lr\n"
    assert (
        exit_reason(1, stderr)
        == "training exited with status 1: training diverged at epoch 3 (loss nan); try a lower lr"
    )
    for reason in (exit_reason(1, TRACEBACK), exit_reason(-9, TRACEBACK), exit_reason(1, "")):
        assert "Traceback" not in reason and "/" not in reason and "\n" not in reason
    assert "status -9 (killed by SIGKILL)" in exit_reason(-9, "")


def test_lstm_train_refuses_a_run_over_its_memory_budget(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "training", "--store", str(tmp_path), "--memory-budget-mb", "1000"]
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in HUGE.items()]
    out = subprocess.run(command + flags, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "over the memory budget of 1000 MiB" in out.stderr
    assert not (tmp_path / "lstm").exists()


_gone = harness.gone  # exited, or a zombie


def test_child_setup_kills_the_child_with_its_parent_and_caps_its_data(tmp_path: Path) -> None:
    # A parent that spawns a child through child_setup, reports its pid, and waits; the child never polls.
    parent_code = (
        "import subprocess, sys, time\n"
        "from service.job_runner import child_setup\n"
        "child = subprocess.Popen(['sleep', '600'], preexec_fn=lambda: child_setup(0))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child)
    finally:
        parent.stdout.close()
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
    limits = subprocess.run(
        [sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_DATA)[0])"],
        preexec_fn=lambda: child_setup(700),
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(limits.stdout) == 700 << 20
