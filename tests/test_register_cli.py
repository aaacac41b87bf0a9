"""`lstm register FILE --model NAME [--promote ALIAS]` against a real lstm-serve that has a token: ONNX and TorchScript
files become versions that serve; a failed check, a missing token or an unreadable file exit with their codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import model_store
from model_store import onnx_runtime
from tests.conftest import save_tiny
from tests.test_cli_client import lstm
from tests.test_e2e import Server, start_server, stop
from tests.test_import import in_process, sines
from tests.test_onnx_import import NaNModel, eager

pytestmark = pytest.mark.slow
TOKEN = "open-sesame"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("register")
    save_tiny(model_store.ModelStore(root / "store"), seed=1)  # something to be ready with
    running = start_server(root / "store", root / "serve.log", LSTM_API_TOKEN=TOKEN)
    yield running
    stop(running)


def predict(url: str, model: str, x: np.ndarray) -> dict[str, object]:
    response = httpx.post(f"{url}/predict", json={"inputs": x.tolist(), "model": model}, timeout=60)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_register_publishes_an_onnx_file_and_promotes_it(guarded: Server, tmp_path: Path) -> None:
    model = eager(11)
    path = tmp_path / "theirs.onnx"
    path.write_bytes(onnx_runtime.export_forward(model, 1))
    done = lstm("--timeout", "300", "register", str(path), "--model", "ext", "--promote", "production",
                url=guarded.url, LSTM_API_TOKEN=TOKEN)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ext version 1 registered (onnx" in done.stdout and "ext production -> version 1" in done.stdout
    x = sines(30, 2)
    answer = predict(guarded.url, "ext", x)
    assert answer["version"] == 1
    assert np.abs(np.asarray(answer["outputs"]) - in_process(model, x)).max() <= 1e-5
    (listed,) = [m for m in httpx.get(f"{guarded.url}/models", timeout=30).json()["models"] if m["name"] == "ext"]
    assert listed["aliases"] == {"production": 1} and listed["runtime"] == "onnxruntime"


def test_register_a_torchscript_file_as_json(guarded: Server, tmp_path: Path) -> None:
    torch.manual_seed(12)
    module = model_store.script(eager(12))
    path = tmp_path / "theirs.pt"
    path.write_bytes(model_store.to_bytes(module))
    done = lstm("--json", "--timeout", "300", "register", str(path), "--model", "mine", "--source", "lab-7",
                url=guarded.url, LSTM_API_TOKEN=TOKEN)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["model"] == "mine" and printed["version"] == 1 and printed["alias_set"] is None
    assert printed["manifest"]["format"] == "torchscript" and printed["manifest"]["data"]["source"] == "lab-7"
    x = sines(20, 1)
    answer = predict(guarded.url, "mine", x)
    assert np.abs(np.asarray(answer["outputs"]) - in_process(module, x)).max() <= 1e-5


def test_register_refusals_exit_with_their_codes(guarded: Server, tmp_path: Path) -> None:
    path = tmp_path / "nan.onnx"
    path.write_bytes(onnx_runtime.export_forward(NaNModel(), 1))
    missing = lstm("register", str(path), "--model", "bad", url=guarded.url)
    assert missing.returncode == 4 and "401" in missing.stderr
    failed = lstm("--timeout", "300", "register", str(path), "--model", "bad", url=guarded.url, LSTM_API_TOKEN=TOKEN)
    assert failed.returncode == 4 and "import check 'finite' failed" in failed.stderr, failed.stderr
    unreadable = lstm("register", str(tmp_path / "nowhere.onnx"), "--model", "bad", url=guarded.url)
    assert unreadable.returncode == 2 and "cannot read" in unreadable.stderr
    names = [m["name"] for m in httpx.get(f"{guarded.url}/models", timeout=30).json()["models"]]
    assert "bad" not in names
