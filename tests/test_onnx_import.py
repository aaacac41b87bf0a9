"""Bring your own ONNX model: checked like a TorchScript import, published without a checkpoint, served by ONNX
Runtime whatever LSTM_RUNTIME=auto would pick, refused clearly by LSTM_RUNTIME=torchscript."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import model_store
from model_store import onnx_runtime
from model_store.imported import ImportCheckError, ImportFormat
from service import runtimes
from service.predictor import Predictor
from tests.conftest import make_client, save_tiny
from tests.test_import import in_process, no_versions, sines
from training.__main__ import main
from training.importing import import_model
from training.model import LSTMRegressor, ModelConfig

URL = "/models/ext/versions"
OCTETS = {"content-type": "application/octet-stream"}


def eager(seed: int = 0, **config: int) -> LSTMRegressor:
    torch.manual_seed(seed)
    return LSTMRegressor(ModelConfig(hidden_size=6, num_layers=1, **config)).eval()


def onnx_file(model: nn.Module, input_size: int = 1) -> bytes:
    return onnx_runtime.export_forward(model, input_size)


class NaNModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")  # (seq, batch, 1), every element NaN


def test_an_onnx_file_over_http_is_published_without_a_checkpoint_and_served_by_onnxruntime(
    store: model_store.ModelStore,
) -> None:
    model = eager(5)
    data = onnx_file(model)
    with make_client(store) as client:  # LSTM_RUNTIME=auto
        response = client.post(URL + "?promote=always&source=lab", content=data, headers=OCTETS)
        assert response.status_code == 201, response.text
        manifest = response.json()["manifest"]
        assert manifest["format"] == "onnx" and "model.pt" not in manifest["files"]
        assert manifest["data"]["format"] == "onnx" and manifest["data"]["sha256"] == model_store.sha256_hex(data)
        assert manifest["sha256"] == manifest["onnx"]["sha256"] == model_store.sha256_hex(data)
        assert manifest["metrics"]["worst_mse"] > 0 and manifest["sequence"] is None
        assert store.read_version_file("ext", 1, "model.onnx") == data  # the bytes uploaded, as they came
        x = sines(40, 3)
        answer = client.post("/predict", json={"inputs": x.tolist(), "model": "ext"})
        assert answer.status_code == 200, answer.text
        assert np.abs(np.array(answer.json()["outputs"]) - in_process(model, x)).max() <= 1e-5
        (listed,) = client.get("/models").json()["models"]
        assert listed["runtime"] == "onnxruntime" and listed["runtime_note"] == runtimes.IMPORTED_NOTE
        assert listed["versions"][0]["onnx"] is True and listed["versions"][0]["sequences"] is False
        assert client.get("/v2/models/ext").json()["platform"] == "onnxruntime_onnx"
        sequence = client.post(
            "/v2/models/ext/infer",
            json={
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 1], "data": [0.0]}],
                "parameters": {"sequence_id": "s1", "sequence_start": True},
            },
        )
        assert sequence.status_code == 409, sequence.text  # nothing is known of an ONNX file's state


def test_the_format_comes_from_the_content_not_the_name(tmp_path: Path, store: model_store.ModelStore) -> None:
    path = tmp_path / "mine.pt"  # an ONNX file named like a TorchScript one
    path.write_bytes(onnx_file(eager(2)))
    done = subprocess.run(
        [sys.executable, "-m", "training", "import", str(path), "--store", str(store.root), "--model", "ext", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["manifest"]["data"]["format"] == "onnx" and result["manifest"]["format"] == "onnx"
    assert store.manifest("ext", 1).onnx is not None


def bad_onnx_files() -> dict[str, tuple[bytes, str]]:
    """name -> (file, the check that must fail)."""
    return {
        "wrong output shape": (onnx_file(eager(output_size=2)), "output"),
        "wrong input shape": (onnx_file(eager(input_size=2), input_size=2), "input"),
        "NaN outputs": (onnx_file(NaNModel()), "finite"),
        "not a model": (b"\x08\x07\x12\x03not a model at all", "format"),
    }


@pytest.mark.parametrize("case", ["wrong output shape", "wrong input shape", "NaN outputs", "not a model"])
@pytest.mark.parametrize("fmt", ["onnx", None])  # None: detected (not a zip, so ONNX), the same check
def test_each_bad_onnx_file_fails_its_check_and_publishes_nothing(
    case: str, fmt: ImportFormat | None, store: model_store.ModelStore
) -> None:
    data, check = bad_onnx_files()[case]
    with pytest.raises(ImportCheckError) as raised:
        import_model(store, "ext", data, fmt)
    assert raised.value.check == check
    no_versions(store)


def test_a_bad_onnx_file_over_http_is_a_422_naming_its_check(store: model_store.ModelStore) -> None:
    """The route answers what the checks above find, through the lstm-train import child (one per post, so one)."""
    data, check = bad_onnx_files()["wrong output shape"]
    with make_client(store) as client:
        response = client.post(URL, content=data, headers=OCTETS)
        assert response.status_code == 422, response.text
        assert f"import check {check!r} failed" in response.json()["error"]
        assert client.get("/models").json()["models"] == []
    no_versions(store)


def test_an_onnx_file_over_the_limit_fails_the_size_check(store: model_store.ModelStore) -> None:
    data = onnx_file(eager())
    with pytest.raises(ImportCheckError) as raised:
        import_model(store, "ext", data, max_bytes=len(data) - 1)
    assert raised.value.check == "size"
    with make_client(store, import_max_bytes=1024) as client:
        assert len(data) > 1024
        response = client.post(URL, content=data, headers=OCTETS)
        assert response.status_code == 413 and "LSTM_IMPORT_MAX_BYTES" in response.json()["error"]
    no_versions(store)


def test_runtime_selection_for_an_onnx_only_version(store: model_store.ModelStore) -> None:
    model = eager(7)
    import_model(store, "ext", onnx_file(model))
    x = sines(25, 2)
    for choice in ("auto", "onnxruntime"):
        served = Predictor(store, runtime=choice, onnx_max_elements=8).load_version("ext", 1)
        assert served.runtime_name == "onnxruntime" and served.module is None and not served.stateful
        big = sines(50, 4)  # over auto's element limit: still ONNX Runtime, there is no TorchScript to hand it to
        assert np.abs(served(big) - in_process(model, big)).max() <= 1e-5
        assert np.abs(served(x) - in_process(model, x)).max() <= 1e-5
    refusing = Predictor(store, runtime="torchscript")
    refusing.refresh()
    assert refusing.current("ext") is None
    failure = refusing.failures()["ext"]
    assert failure.version == 1 and "LSTM_RUNTIME=torchscript cannot serve ext version 1" in failure.error
    with make_client(store, runtime="torchscript") as client:
        answer = client.post("/predict", json={"inputs": x.tolist(), "model": "ext"})
        assert answer.status_code == 503 and "LSTM_RUNTIME=torchscript cannot serve" in answer.json()["error"]
        (listed,) = client.get("/models").json()["models"]
        assert "imported ONNX model" in listed["load_error"]["error"]


def test_a_corrupt_onnx_only_file_is_never_served(store: model_store.ModelStore) -> None:
    import_model(store, "ext", onnx_file(eager(1)))
    path = store.version_file("ext", 1, "model.onnx")
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    predictor = Predictor(store)
    predictor.refresh()
    assert predictor.current("ext") is None and "sha256" in predictor.failures()["ext"].error


def test_an_onnx_only_incumbent_is_scored_for_if_better(store: model_store.ModelStore) -> None:
    import_model(store, "ext", onnx_file(eager(3)), promote="always")
    result = import_model(store, "ext", onnx_file(eager(4)), promote="if_better")
    assert "serving version 1's" in result.promotion_reason  # scored through its ONNX file, not "cannot be loaded"


def test_export_refuses_an_onnx_only_version_clearly(
    store: model_store.ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    import_model(store, "ext", onnx_file(eager(3)))
    assert main(["export", "--store", str(store.root), "--model", "ext"]) == 1
    assert "no TorchScript checkpoint" in capsys.readouterr().err


def test_old_versions_without_the_format_field_serve_as_torchscript(store: model_store.ModelStore) -> None:
    manifest = save_tiny(store)
    path = store.version_file("lstm", manifest.version, "manifest.json")
    raw = json.loads(path.read_text())
    for key in ("format", "pt2", "onnx"):
        del raw[key]  # what the first versions hold
    path.write_text(json.dumps(raw))
    predictor = Predictor(store)
    predictor.refresh()
    served = predictor.current("lstm")
    assert served is not None and served.runtime_name == "torchscript" and served.module is not None


@pytest.fixture(scope="module")
def imported_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, runtimes.Runtime]:
    store = model_store.ModelStore(tmp_path_factory.mktemp("imported") / "store")
    model = LSTMRegressor(ModelConfig(hidden_size=8, num_layers=2)).eval()
    import_model(store, "ext", onnx_file(model))
    served = Predictor(store).load_version("ext", 1)
    return model, served.engine


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 600), batch=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_a_served_onnx_import_matches_the_eager_model_at_any_shape(
    imported_onnx: tuple[nn.Module, runtimes.Runtime], seq: int, batch: int, seed: int
) -> None:
    model, runtime = imported_onnx
    x = np.random.default_rng(seed).standard_normal((seq, batch, 1)).astype(np.float32)  # (seq, batch, 1)
    y = runtime(x)
    assert y.shape == (seq, batch, 1) and y.dtype == np.float32
    assert float(np.abs(y - in_process(model, x)).max()) <= 1e-5


def test_the_store_publishes_a_version_without_a_checkpoint_only_with_its_onnx_file(
    store: model_store.ModelStore,
) -> None:
    specs = {"inputs": (model_store.sequence_spec("input", 1),), "outputs": (model_store.sequence_spec("output", 1),)}
    with pytest.raises(ValueError, match="needs its ONNX file"):
        store.save("ext", None, **specs)  # type: ignore[arg-type]
    data = onnx_file(eager(8))
    entry = model_store.OnnxExport(file="model.onnx", sha256=model_store.sha256_hex(data), exporter="imported")
    with pytest.raises(ValueError, match="not among the files given"):
        store.save("ext", None, onnx=entry, **specs)  # type: ignore[arg-type]
    manifest = store.save("ext", None, onnx=entry, extra_files={"model.onnx": data}, **specs)  # type: ignore[arg-type]
    assert manifest.format == "onnx" and not manifest.has_checkpoint and manifest.sha256 == entry.sha256
    assert manifest.files == ("manifest.json", "model.onnx")
    assert not (store.root / "ext" / "versions" / "1" / "model.pt").exists()
    with pytest.raises(model_store.IntegrityError, match="no TorchScript checkpoint"):
        store.load("ext", 1)


def test_an_onnx_file_whose_weights_point_at_files_is_refused(
    tmp_path: Path, store: model_store.ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ONNX initializer may name "external data": a file to read its bytes from. An upload must never make the
    server read its files into a model, relative or absolute; ONNX Runtime refuses external data in a model given
    as bytes, and the import says which check failed."""
    from onnx import TensorProto, helper, numpy_helper

    (tmp_path / "secret").write_bytes(b"ABCD")
    monkeypatch.chdir(tmp_path)
    for location in ("secret", str(tmp_path / "secret"), "../" * 8 + "etc/hostname"):
        weight = numpy_helper.from_array(np.zeros((1,), np.float32), "w")
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "4")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["seq", "batch", 1])
        y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["seq", "batch", 1])
        graph = helper.make_graph([helper.make_node("Add", ["input", "w"], ["output"])], "g", [x], [y], [weight])
        data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        with pytest.raises(ImportCheckError) as raised:
            import_model(store, "ext", data)
        assert raised.value.check == "format", location
    no_versions(store)
