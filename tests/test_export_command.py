"""lstm-train export: ONNX files added to an old version, its checkpoint untouched, then served by ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import model_store
from service.predictor import Predictor
from tests.conftest import save_tiny
from tests.test_cli import TINY_FLAGS
from training.__main__ import main


def test_export_adds_onnx_to_an_old_version_which_then_serves_with_onnxruntime(
    store: model_store.ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    old = save_tiny(store, seed=7, stateful=True, hidden_size=5)  # a version published before ONNX files
    save_tiny(store, seed=8)  # version 2 stays as it is
    before = {f: store.read_version_file("lstm", 1, f) for f in ("model.pt",)}
    assert main(["export", "--store", str(store.root), "--version", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["version"] == 1 and printed["onnx"]["error"] is None
    assert printed["pt2"]["error"] is None and printed["pt2"]["state_file"] == "model_state.pt2"
    manifest = store.manifest("lstm", 1)
    assert manifest.onnx is not None and manifest.onnx.to_dict() == printed["onnx"]
    assert manifest.sha256 == old.sha256 and store.read_version_file("lstm", 1, "model.pt") == before["model.pt"]
    assert manifest.sequence == old.sequence and manifest.params == old.params
    assert store.manifest("lstm", 2).onnx is None
    predictor = Predictor(store, runtime="onnxruntime")
    served = predictor.load_version("lstm", 1)
    assert served.runtime_name == "onnxruntime" and served.stateful
    x = np.random.default_rng(0).standard_normal((50, 3, 1)).astype(np.float32)
    with torch.inference_mode():
        expected = store.load("lstm", 1).module(torch.from_numpy(x)).numpy()
    assert float(np.abs(served(x) - expected).max()) <= 1e-5


def test_export_defaults_to_the_serving_version_and_names_its_files(
    store: model_store.ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    store.set_alias("lstm", model_store.PRODUCTION, 1)
    assert main(["export", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "exported lstm version 1 to model.onnx, model_state.onnx, model.pt2, model_state.pt2" in out
    assert store.manifest("lstm", 1).onnx is not None and store.manifest("lstm", 2).onnx is None


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [(["--version", "9"], "has no version 9"), (["--model", "Nope!"], "invalid model name"), ([], "not found")],
)
def test_export_errors_exit_1_and_say_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragment: str
) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    if flags:
        save_tiny(store)
    assert main(["export", "--store", str(store.root), *flags]) == 1
    assert fragment in capsys.readouterr().err


def test_export_refuses_a_version_whose_checkpoint_does_not_verify(
    store: model_store.ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    save_tiny(store)
    path = store.version_file("lstm", 1, "model.pt")
    path.write_bytes(path.read_bytes() + b"\0")
    assert main(["export", "--store", str(store.root)]) == 1
    assert "sha256" in capsys.readouterr().err
    assert store.manifest("lstm", 1).onnx is None


def test_training_publishes_onnx_files_beside_the_checkpoint(tmp_path: Path) -> None:
    assert main(["--store", str(tmp_path), *TINY_FLAGS]) == 0
    store = model_store.ModelStore(tmp_path)
    manifest = store.manifest("lstm", 1)
    assert manifest.onnx is not None and manifest.onnx.error is None
    assert manifest.onnx.parity_max_abs_diff is not None and manifest.onnx.parity_max_abs_diff <= 1e-5
    served = Predictor(store, runtime="onnxruntime").load_version("lstm", 1)
    assert served.runtime_name == "onnxruntime" and served.stateful
