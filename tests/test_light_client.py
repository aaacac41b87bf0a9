"""The light client (clients/python) installs into a fresh venv without torch, and its `lstm` works from there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

import model_store
from tests.conftest import save_tiny
from tests.test_e2e import start_server, stop

pytestmark = pytest.mark.slow

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "python"


def test_the_client_installs_without_torch_and_its_command_talks_to_a_server(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    source = tmp_path / "client"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([*pip, "install", "--quiet", str(source)], check=True, timeout=600, capture_output=True)
    listed = subprocess.run([*pip, "list", "--format=json"], check=True, capture_output=True, text=True).stdout
    names = {entry["name"].lower() for entry in json.loads(listed)}
    assert "lstm-client" in names and "httpx" in names and "numpy" in names
    assert not {"torch", "lstm-service", "fastapi", "tqdm", "orjson"} & names, names

    lstm = str(venv / "bin" / "lstm")
    shown = subprocess.run([lstm, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "exit codes" in shown.stdout
    imports = "import sys, lstm_client; print('torch' in sys.modules)"
    assert (
        subprocess.run([str(venv / "bin" / "python"), "-c", imports], capture_output=True, text=True).stdout
        == "False\n"
    )

    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    server = start_server(store.root, tmp_path / "serve.log")
    try:
        answer = subprocess.run(
            [lstm, "--url", server.url, "--json", "predict", "0", "0.1", "0.2", "0.3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert answer.returncode == 0, answer.stderr
        expected = httpx.post(f"{server.url}/predict", json={"inputs": [[[0.0]], [[0.1]], [[0.2]], [[0.3]]]}).json()
        assert np.allclose(json.loads(answer.stdout)["outputs"], expected["outputs"], atol=1e-6)
    finally:
        stop(server)
