"""lstm-train's flags: each has a documented LSTM_ environment twin, and the thread default is one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.__main__ import BOOLEAN_FLAGS, build_parser, parse_args, twin

ROOT = Path(__file__).resolve().parent.parent


def test_every_lstm_train_flag_has_a_documented_twin() -> None:
    doc = (ROOT / "docs" / "training.md").read_text()
    dests = [action.dest for action in build_parser()._actions if action.dest != "help"]
    assert len(dests) > 20
    missing = [f"{dest} ({twin(dest)})" for dest in dests if f"`{twin(dest)}`" not in doc]
    assert missing == []


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("TRUE", True), ("false", False), ("0", False)]
)
def test_boolean_twins_accept_true_false_1_0(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    for name in BOOLEAN_FLAGS:
        monkeypatch.setenv(twin(name), value)
    args = parse_args([])
    assert [getattr(args, name) for name in BOOLEAN_FLAGS] == [expected] * len(BOOLEAN_FLAGS)


def test_a_flag_overrides_its_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSTM_JSON", "false")
    monkeypatch.setenv("LSTM_HIDDEN_SIZE", "8")
    monkeypatch.setenv("LSTM_TRAIN_TORCH_THREADS", "3")
    args = parse_args(["--json", "--hidden-size", "9"])
    assert args.json is True and args.hidden_size == 9 and args.torch_threads == 3
    assert parse_args([]).no_progress is False  # unset twin: off


def test_a_bad_boolean_twin_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LSTM_NO_PROGRESS", "maybe")
    with pytest.raises(SystemExit) as exit_info:
        parse_args([])
    assert exit_info.value.code == 2
    assert "LSTM_NO_PROGRESS='maybe': expected true, false, 1 or 0" in capsys.readouterr().err


def test_lstm_train_picks_its_threads_from_the_budget_unless_told() -> None:
    # In a fresh process: torch's own default here is the machine's core count (2 on the dev machine).
    code = (
        "import torch, model_store, training.__main__ as m\n"
        "print(model_store.cpu_budget().threads, m.apply_torch_threads(m.parse_args([])), torch.get_num_threads())"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LSTM_", "OMP_"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=300)
    budget, chosen, now = (int(part) for part in out.stdout.split())
    assert 1 <= chosen <= budget and now == chosen  # how many depends on how busy the machine is now
    env["LSTM_TRAIN_TORCH_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split()[1:] == ["2", "2"]
