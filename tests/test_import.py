"""Bring your own model: real TorchScript and ONNX files imported over HTTP and by `lstm-train import`, then served;
every bad file refused with the check it failed, and nothing half-registered."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn

import model_store
from model_store.imported import ImportCheckError, ImportFormat
from tests.conftest import OneShotRegressor, make_client
from training.importing import import_model
from training.model import LSTMRegressor, ModelConfig

URL = "/models/ext/versions"
ZIP = {"content-type": "application/zip"}


def eager(seed: int = 0, **config: int) -> LSTMRegressor:
    torch.manual_seed(seed)
    return LSTMRegressor(ModelConfig(hidden_size=6, num_layers=1, **config)).eval()


def torchscript_file(model: nn.Module) -> bytes:
    return model_store.to_bytes(model_store.script(model))


class NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")  # (seq, batch, 1), every element NaN


class BrokenState(LSTMRegressor):
    """forward_state that ignores the state it is given: its chunks do not chain like forward."""

    @model_store.export_method
    def forward_state(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden, (h_n, c_n) = self.lstm(x)  # (seq, batch, hidden): starts from zeros every chunk
        output: torch.Tensor = self.head(hidden)  # (seq, batch, 1)
        return output, h_n, c_n


class Marker:
    """Unpickling this calls open(path, "w"): it creates the marker file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def sines(seq: int = 30, batch: int = 3) -> np.ndarray:
    t = np.arange(seq)[:, None] * 0.1 + np.arange(batch)[None, :]
    x: np.ndarray = np.sin(t)[:, :, None].astype(np.float32)  # (seq, batch, 1)
    return x


def in_process(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        result: np.ndarray = model(torch.from_numpy(x)).numpy()
    return result


def no_versions(store: model_store.ModelStore) -> None:
    """Nothing registered, and no staging folder left behind."""
    assert "ext" not in store.models() or store.versions("ext") == []
    folder = store.root / "ext"
    if folder.exists():
        assert not [p for p in folder.iterdir() if p.name.startswith(".")], list(folder.iterdir())
        if (folder / "versions").exists():
            assert list((folder / "versions").iterdir()) == []


def test_torchscript_file_imported_over_http_is_served_with_the_same_answers(
    store: model_store.ModelStore,
) -> None:
    torch.manual_seed(3)
    model = OneShotRegressor(ModelConfig(hidden_size=6, num_layers=1)).eval()  # forward only, no forward_state
    with make_client(store) as client:
        response = client.post(URL + "?promote=always&source=elsewhere", content=torchscript_file(model), headers=ZIP)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["version"] == 1 and body["promoted"] is True
        manifest = body["manifest"]
        assert manifest["data"]["kind"] == "imported" and manifest["data"]["format"] == "torchscript"
        assert manifest["data"]["source"] == "elsewhere" and len(manifest["data"]["sha256"]) == 64
        assert manifest["metrics"]["worst_mse"] > 0 and "mse_by_step" in manifest["metrics"]
        assert manifest["sequence"] is None  # no forward_state: one-shot only
        x = sines()
        answer = client.post("/predict", json={"inputs": x.tolist(), "model": "ext"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1
        assert np.allclose(np.array(answer.json()["outputs"]), in_process(model, x), atol=1e-6)
        sequence = client.post(
            "/v2/models/ext/infer",
            json={
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": [0.0]}],
                "parameters": {"sequence_id": "s1", "sequence_start": True},
            },
        )
        assert sequence.status_code == 409, sequence.text
    assert store.aliases("ext") == {"production": 1}


def test_the_command_imports_a_torchscript_file_with_auto_format(tmp_path: Path, store: model_store.ModelStore) -> None:
    model = eager(4)
    path = tmp_path / "mine.pt"
    path.write_bytes(torchscript_file(model))
    done = subprocess.run(
        [sys.executable, "-m", "training", "import", str(path), "--store", str(store.root), "--model", "ext", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["version"] == 1 and result["promoted"] is False  # --promote defaults to never
    assert result["manifest"]["data"]["source"] == "mine.pt"
    # LSTMRegressor's forward_state passed the chunked parity check: the version serves sequences too.
    assert result["manifest"]["sequence"]["method"] == "forward_state"
    with make_client(store) as client:
        x = sines(50, 2)
        answer = client.post("/predict", json={"inputs": x.tolist(), "model": "ext"})
        assert answer.status_code == 200, answer.text
        assert np.allclose(np.array(answer.json()["outputs"]), in_process(model, x), atol=1e-6)
        step = client.post(
            "/v2/models/ext/infer",
            json={
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 1], "data": [0.0, 0.1]}],
                "parameters": {"sequence_id": "s1", "sequence_start": True},
            },
        )
        assert step.status_code == 200, step.text


def test_a_forward_state_that_does_not_chain_fails_the_sequence_check(store: model_store.ModelStore) -> None:
    torch.manual_seed(6)
    data = torchscript_file(BrokenState(ModelConfig(hidden_size=6, num_layers=1)).eval())
    with pytest.raises(ImportCheckError) as raised:
        import_model(store, "ext", data)
    assert raised.value.check == "sequence"
    no_versions(store)


def test_the_command_names_a_failed_check_with_exit_status_3(tmp_path: Path, store: model_store.ModelStore) -> None:
    path = tmp_path / "two.pt"
    path.write_bytes(torchscript_file(eager(input_size=2)))
    done = subprocess.run(
        [sys.executable, "-m", "training", "import", str(path), "--store", str(store.root), "--model", "ext"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3
    assert "import check 'input' failed" in done.stderr
    no_versions(store)


def bad_files(tmp_path: Path) -> dict[str, tuple[bytes, str, str]]:
    """name -> (file, format query, the check that must fail)."""
    return {
        "not a zip": (b"this is not a model at all", "torchscript", "format"),
        "not onnx": (b"this is not a model at all", "onnx", "format"),
        "a zip that is not TorchScript": (zip_bytes(tmp_path), "auto", "load"),
        "input size 2": (torchscript_file(eager(input_size=2)), "auto", "input"),
        "output size 2": (torchscript_file(eager(output_size=2)), "auto", "output"),
        "NaN outputs": (torchscript_file(NaNModel()), "auto", "finite"),
    }


def zip_bytes(tmp_path: Path) -> bytes:
    import zipfile

    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    return path.read_bytes()


@pytest.mark.parametrize(
    "case", ["not a zip", "not onnx", "a zip that is not TorchScript", "input size 2", "output size 2", "NaN outputs"]
)
def test_each_bad_file_fails_its_check_and_publishes_nothing(
    case: str, tmp_path: Path, store: model_store.ModelStore
) -> None:
    data, fmt, check = bad_files(tmp_path)[case]
    with pytest.raises(ImportCheckError) as raised:
        import_model(store, "ext", data, None if fmt == "auto" else cast(ImportFormat, fmt))
    assert raised.value.check == check
    no_versions(store)


@pytest.mark.parametrize("case", ["not a zip", "NaN outputs"])  # refused before loading, and after running
def test_a_bad_file_over_http_is_a_422_naming_its_check_and_nothing_is_registered(
    case: str, tmp_path: Path, store: model_store.ModelStore
) -> None:
    """The route answers what the checks above find, through the lstm-train import child (one per post)."""
    data, fmt, check = bad_files(tmp_path)[case]
    with make_client(store) as client:
        response = client.post(
            f"{URL}?format={fmt}", content=data, headers={"content-type": "application/octet-stream"}
        )
        assert response.status_code == 422, response.text
        assert f"import check {check!r} failed" in response.json()["error"]
        assert client.get("/models").json()["models"] == []
    no_versions(store)


def test_a_pickle_is_refused_and_never_unpickled(tmp_path: Path, store: model_store.ModelStore) -> None:
    marker = tmp_path / "unpickled"
    data = pickle.dumps(Marker(marker))
    pickle.loads(data).close()  # the file is what it claims: unpickling it makes the marker
    assert marker.exists()
    marker.unlink()
    for fmt in ("torchscript", "onnx", None):  # in this process: had it been unpickled, the marker would be back
        with pytest.raises(ImportCheckError) as raised:
            import_model(store, "ext", data, fmt)
        assert raised.value.check == "format"
    with make_client(store) as client:  # and over HTTP, through the child
        response = client.post(f"{URL}?format=auto", content=data, headers={"content-type": "application/zip"})
        assert response.status_code == 422, response.text
        assert "import check 'format' failed" in response.json()["error"]
    assert not marker.exists()
    no_versions(store)


def test_a_file_over_the_limit_is_a_413(store: model_store.ModelStore) -> None:
    data = torchscript_file(eager())
    with make_client(store, import_max_bytes=1024) as client:
        assert len(data) > 1024
        response = client.post(URL, content=data, headers=ZIP)
        assert response.status_code == 413, response.text
        assert "LSTM_IMPORT_MAX_BYTES" in response.json()["error"]
    no_versions(store)


def test_importing_needs_the_token_when_one_is_set(store: model_store.ModelStore) -> None:
    data = torchscript_file(eager())
    with make_client(store, api_token="s3cret-token") as client:
        assert client.post(URL, content=data, headers=ZIP).status_code == 401
        wrong = client.post(URL, content=data, headers={**ZIP, "authorization": "Bearer nope"})
        assert wrong.status_code == 403
    no_versions(store)


def test_import_max_bytes_has_bounds() -> None:
    from service.config import Settings

    with pytest.raises(ValueError):
        Settings(import_max_bytes=10)
    assert os.environ.get("LSTM_IMPORT_MAX_BYTES") is None
