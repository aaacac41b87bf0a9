"""lstm-train end to end with tiny configurations: output, exit codes, machine output, datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import model_store
from training.__main__ import main

TINY_FLAGS = [
    "--hidden-size",
    "6",
    "--num-layers",
    "1",
    "--max-epochs",
    "30",
    "--batch-size",
    "8",
    "--seq-len",
    "16",
    "--short-batch-size",
    "8",
    "--no-progress",
]


def test_command_registers_a_version_and_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.png"
    assert main(["--store", str(tmp_path / "s"), "--report", str(report), *TINY_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "registered lstm version 1" in out and "worst_mse" in out and "promoted: True" in out
    assert report.read_bytes().startswith(b"\x89PNG")
    store = model_store.ModelStore(tmp_path / "s")
    assert store.versions("lstm") == [1] and store.aliases("lstm") == {"production": 1}
    assert store.manifest("lstm", 1).params["hidden_size"] == 6


def test_json_output_and_promote_never(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", str(tmp_path), "--json", "--promote", "never", "--model", "m1", *TINY_FLAGS]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "m1" and summary["version"] == 1 and summary["promoted"] is False
    assert summary["epochs"] == 30


def test_progress_jsonl_streams_progress_then_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", str(tmp_path), "--progress-jsonl", *TINY_FLAGS]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "progress" and events[-1]["event"] == "result"
    assert events[-2] == {"event": "progress", "epoch": 30, "max_epochs": 30, "loss": events[-2]["loss"]}
    assert events[-1]["version"] == 1 and "worst_mse" in events[-1]["metrics"]


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--hidden-size", "0"], "hidden_size from 1 to 512"),
        (["--lr", "5"], "lr from 1e-06 to 1"),
        (["--model", "Bad/Name"], "invalid model name"),
        (["--step-min", "2", "--step-max", "1"], "step_min"),
        (["--dataset", "/nonexistent.npz"], "cannot read dataset"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragment: str
) -> None:
    assert main(["--store", str(tmp_path), *TINY_FLAGS, *flags]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "lstm").exists()


def test_divergence_exits_1_and_registers_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [*TINY_FLAGS, "--lr", "1", "--grad-clip", "0", "--max-epochs", "400", "--progress-jsonl"]
    status = main(["--store", str(tmp_path), *flags])
    captured = capsys.readouterr()
    if status == 1:
        assert "diverged" in captured.err
        assert json.loads(captured.out.splitlines()[-1])["event"] == "error"
        assert model_store.ModelStore(tmp_path).versions("lstm") == []
    else:  # this seed happened not to diverge: it must then have registered one whole version
        assert status == 0 and model_store.ModelStore(tmp_path).versions("lstm") == [1]


def test_dataset_flag_trains_on_user_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.sin(0.4 * np.arange(30))[:, None, None].repeat(5, axis=1).astype(np.float32)
    np.savez(tmp_path / "d.npz", inputs=x, targets=-x)
    assert main(["--store", str(tmp_path / "s"), "--json", "--dataset", str(tmp_path / "d.npz"), *TINY_FLAGS]) == 0
    manifest = model_store.ModelStore(tmp_path / "s").manifest("lstm", 1)
    assert manifest.data["kind"] == "user_dataset" and manifest.data["shape"] == [30, 5, 1]
    assert "dataset_test_mse" in manifest.metrics


def test_python_dash_m_training_is_the_same_command(tmp_path: Path) -> None:
    completed = subprocess.run(
        # Two epochs: the test is about the command, not the training; 600 s: a busy machine is 10-50x slower.
        [sys.executable, "-m", "training", "--store", str(tmp_path), "--json", *TINY_FLAGS, "--max-epochs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["version"] == 1
    help_text = subprocess.run(
        [sys.executable, "-m", "training", "--help"], capture_output=True, text=True, timeout=300
    ).stdout
    assert "--hidden-size" in help_text and "1 to 512" in help_text
