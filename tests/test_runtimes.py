"""Which runtime serves a version (LSTM_RUNTIME): ONNX Runtime when its ONNX file verifies, else TorchScript."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import model_store
from service import runtimes
from service.predictor import Predictor
from tests.conftest import make_client, save_tiny, wait_for
from tests.test_sequences import URL, body, chunked

TOLERANCE = 1e-5


def sines(seq: int, batch: int) -> np.ndarray:
    t = 0.3 * np.arange(seq)[:, None] + np.linspace(0, 3, batch)[None, :]
    return np.sin(t)[..., None].astype(np.float32)  # (seq, batch, 1)


def torchscript_answer(store: model_store.ModelStore, version: int, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        output: np.ndarray = store.load("lstm", version).module(torch.from_numpy(x)).numpy()
    return output


def corrupt(store: model_store.ModelStore, version: int, filename: str = "model.onnx", name: str = "lstm") -> None:
    """Flip one byte of a version's file (its manifest keeps the old sha256)."""
    path = store.version_file(name, version, filename)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def served_runtime(store: model_store.ModelStore, choice: runtimes.RuntimeChoice = "auto") -> Predictor:
    predictor = Predictor(store, runtime=choice)
    predictor.refresh()
    return predictor


@pytest.mark.parametrize(("onnx", "choice", "expected"), [
    (True, "auto", "onnxruntime"),
    (False, "auto", "torchscript"),
    (True, "torchscript", "torchscript"),
    (True, "onnxruntime", "onnxruntime"),
])  # fmt: skip
def test_runtime_follows_the_setting_and_the_files(
    store: model_store.ModelStore, onnx: bool, choice: runtimes.RuntimeChoice, expected: str
) -> None:
    manifest = save_tiny(store, seed=3, onnx=onnx)
    served = served_runtime(store, choice).current("lstm")
    assert served is not None and served.runtime_name == expected
    for seq, batch in ((1, 1), (20, 5), (333, 17)):
        x = sines(seq, batch)
        assert float(np.abs(served(x) - torchscript_answer(store, manifest.version, x)).max()) <= TOLERANCE


def test_auto_without_onnx_file_says_why_torchscript_serves(store: model_store.ModelStore) -> None:
    save_tiny(store)
    served = served_runtime(store).current("lstm")
    assert served is not None and served.runtime_name == "torchscript"
    assert served.runtime_note is not None and "exported before ONNX files" in served.runtime_note


def test_a_corrupt_onnx_file_is_never_served(store: model_store.ModelStore) -> None:
    manifest = save_tiny(store, onnx=True)
    corrupt(store, manifest.version)
    auto = served_runtime(store).current("lstm")
    assert auto is not None and auto.runtime_name == "torchscript"
    assert auto.runtime_note is not None and "sha256" in auto.runtime_note
    strict = served_runtime(store, "onnxruntime")
    assert strict.current("lstm") is None
    failure = strict.failures()["lstm"]
    assert failure.version == manifest.version and "sha256" in failure.error and "onnxruntime" in failure.error


def test_an_onnx_file_of_other_weights_fails_verification(store: model_store.ModelStore) -> None:
    """A file whose sha256 matches (the manifest rewritten with it) but that answers unlike the checkpoint."""
    save_tiny(store, seed=1, onnx=True)
    target = save_tiny(store, seed=2, onnx=True)
    other = store.read_version_file("lstm", 1, "model.onnx")
    store.version_file("lstm", target.version, "model.onnx").write_bytes(other)
    path = store.version_file("lstm", target.version, "manifest.json")
    raw = json.loads(path.read_text())
    raw["onnx"]["sha256"] = model_store.sha256_hex(other)
    path.write_text(json.dumps(raw))
    served = served_runtime(store).current("lstm")
    assert served is not None and served.version == target.version and served.runtime_name == "torchscript"
    assert served.runtime_note is not None and "answers unlike" in served.runtime_note


def test_onnx_steps_match_torchscript_steps(store: model_store.ModelStore) -> None:
    save_tiny(store, seed=5, stateful=True, onnx=True, num_layers=2, hidden_size=6)
    served = served_runtime(store).current("lstm")
    assert served is not None and served.stateful and served.runtime_name == "onnxruntime"
    assert served.module is not None
    reference = runtimes.TorchScriptRuntime(served.module, "forward_state")
    x = sines(40, 3)
    h, c = served.initial_state(3)
    h_ref, c_ref = h, c
    for start, stop in ((0, 1), (1, 12), (12, 40)):
        y, h, c = served.step(x[start:stop], h, c)
        y_ref, h_ref, c_ref = reference.step(x[start:stop], h_ref, c_ref)
        for mine, theirs in ((y, y_ref), (h, h_ref), (c, c_ref)):
            assert float(np.abs(mine - theirs).max()) <= TOLERANCE


def test_endpoints_say_which_runtime_serves(store: model_store.ModelStore) -> None:
    save_tiny(store, seed=1)  # version 1: exported before ONNX files
    save_tiny(store, seed=2, onnx=True)  # version 2 serves (the newest)
    with make_client(store) as client:
        assert wait_for(lambda: client.get("/v2/models/lstm/ready").status_code == 200)
        (model,) = client.get("/models").json()["models"]
        assert model["serving_version"] == 2 and model["runtime"] == "onnxruntime"
        assert [v["onnx"] for v in model["versions"]] == [False, True]
        assert client.get("/v2/models/lstm").json()["platform"] == "onnxruntime_onnx"
        metrics = client.get("/metrics").text
        assert 'lstm_served_runtime{model="lstm",runtime="onnxruntime"} 1.0' in metrics
        assert 'lstm_served_runtime{model="lstm",runtime="torchscript"} 0.0' in metrics
        x = sines(30, 4)
        body = client.post("/predict", json={"inputs": x.tolist()}).json()
        assert body["version"] == 2
        assert float(np.abs(np.array(body["outputs"]) - torchscript_answer(store, 2, x)).max()) <= TOLERANCE
        old = client.post("/predict", json={"inputs": x.tolist(), "version": 1}).json()  # the old version serves
        assert float(np.abs(np.array(old["outputs"]) - torchscript_answer(store, 1, x)).max()) <= TOLERANCE
        assert client.get("/v2/models/lstm/versions/1").json()["platform"] == "pytorch_torchscript"
        manifest = client.get("/models/lstm/versions/2").json()
        assert manifest["onnx"]["file"] == "model.onnx" and manifest["onnx"]["error"] is None


def test_strict_onnxruntime_reports_a_corrupt_file_and_serves_nothing(store: model_store.ModelStore) -> None:
    name = "strict-onnx"  # a model of its own: the load-failure counter is the process's, shared by every test
    manifest = save_tiny(store, name=name, onnx=True)
    corrupt(store, manifest.version, name=name)
    with make_client(store, runtime="onnxruntime") as client:
        assert wait_for(lambda: client.get("/models").json()["models"][0]["load_error"] is not None)
        (model,) = client.get("/models").json()["models"]
        assert model["serving_version"] is None and "sha256" in model["load_error"]["error"]
        response = client.post("/predict", json={"inputs": sines(5, 1).tolist(), "model": name})
        assert response.status_code == 503 and "sha256" in response.text
        assert f'lstm_model_load_failures_total{{model="{name}"}} 1.0' in client.get("/metrics").text


def test_auto_runs_large_calls_in_torchscript_and_onnxruntime_runs_all(store: model_store.ModelStore) -> None:
    save_tiny(store, seed=6, stateful=True, onnx=True)
    auto = Predictor(store, runtime="auto", onnx_max_elements=200).load_version("lstm", 1)
    strict = Predictor(store, runtime="onnxruntime", onnx_max_elements=200).load_version("lstm", 1)
    assert isinstance(auto.runtime, runtimes.OnnxRuntime) and isinstance(strict.runtime, runtimes.OnnxRuntime)
    assert auto.runtime_note is not None and "more than 200 elements run in TorchScript" in auto.runtime_note
    small, large, one_long = sines(50, 4), sines(50, 5), sines(300, 1)
    assert np.array_equal(auto(one_long), auto.runtime.forward.run(one_long)[0])  # one sequence: always ONNX
    torchscript = auto.runtime.fallback
    assert torchscript is not None
    onnx = auto.runtime.forward
    assert not np.array_equal(onnx.run(large)[0], torchscript(large)), "the engines must differ for this test to tell"
    assert np.array_equal(auto(small), onnx.run(small)[0])
    assert np.array_equal(auto(large), torchscript(large))
    assert np.array_equal(strict(large), onnx.run(large)[0])
    h, c = auto.initial_state(5)
    assert all(np.array_equal(a, b) for a, b in zip(auto.step(large, h, c), torchscript.step(large, h, c), strict=True))


def test_sequences_over_oip_step_through_the_onnx_state_file(store: model_store.ModelStore) -> None:
    """Chunked through model_state.onnx equals one-shot through TorchScript (three chunkings, JSON and binary)."""
    save_tiny(store, seed=4, stateful=True, onnx=True, hidden_size=6)
    with make_client(store) as client:
        assert wait_for(lambda: client.get("/v2/models/lstm/ready").status_code == 200)
        assert client.get("/models").json()["models"][0]["runtime"] == "onnxruntime"
        for index, cuts in enumerate(([1, 2, 30], [17], [])):
            x = np.sin(index + 0.3 * np.arange(41)).astype(np.float32)
            expected = torchscript_answer(store, 1, x.reshape(-1, 1, 1)).reshape(-1)
            got = chunked(client, x, cuts, sequence_id=f"s{index}", binary=index == 1)
            assert float(np.abs(got - expected).max()) <= TOLERANCE
        assert client.post(URL, json=body(np.zeros(3, np.float32))).status_code == 200
