"""torch.export `.pt2` files of a version: export with free seq and batch, parity at many shapes, the manifest entry."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import model_store
from model_store import onnx_runtime, pt2_export
from service.job_runner import child_environment, training_command
from service.jobs import Job
from tests.conftest import save_tiny, tiny_module
from training import preset, run
from training.export import ONNX_PARITY_TOLERANCE, PT2_SKIPPED, eager_of, export_version, pt2_files
from training.model import STATE_METHOD, LSTMRegressor, ModelConfig

HIDDEN, LAYERS = 8, 2
Programs = tuple[model_store.ScriptModule, Callable[..., Any], Callable[..., Any]]


@pytest.fixture(scope="module")
def exported() -> Programs:
    """A two-layer stateful tiny model scripted, and its two `.pt2` programs as torch.export.load reads them."""
    module = tiny_module(seed=5, hidden_size=HIDDEN, stateful=True, num_layers=LAYERS)
    eager, config = eager_of(module)
    entry, files = pt2_files(eager, config, seed=5, references=(module,))
    assert entry.error is None, entry.error
    assert entry.parity_max_abs_diff is not None and entry.parity_max_abs_diff <= ONNX_PARITY_TOLERANCE
    assert set(files) == {pt2_export.FORWARD_FILE, pt2_export.STATE_FILE} == set(entry.checksums())
    assert all(model_store.sha256_hex(files[name]) == digest for name, digest in entry.checksums().items())
    return module, pt2_export.load(files[pt2_export.FORWARD_FILE]), pt2_export.load(files[pt2_export.STATE_FILE])


def _assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert tuple(got.shape) == tuple(want.shape)  # the known failure: the example's (20, 5) baked in
    assert float((got - want).abs().max()) <= ONNX_PARITY_TOLERANCE


@pytest.mark.parametrize(("seq", "batch"), [(1, 1), (1, 9), (20, 5), (2000, 1), (777, 3)])
def test_pt2_forward_keeps_seq_and_batch_free(exported: Programs, seq: int, batch: int) -> None:
    module, forward, _ = exported
    x = torch.randn(seq, batch, 1, generator=torch.Generator().manual_seed(seq))  # (seq, batch, 1)
    with torch.inference_mode():
        _assert_close(forward(x), module(x))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 400), batch=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_pt2_forward_matches_torchscript_at_any_shape(exported: Programs, seq: int, batch: int, seed: int) -> None:
    module, forward, _ = exported
    x = torch.randn(seq, batch, 1, generator=torch.Generator().manual_seed(seed))  # (seq, batch, 1)
    with torch.inference_mode():
        _assert_close(forward(x), module(x))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 300), batch=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_pt2_state_carrying_program_matches_forward_state(exported: Programs, seq: int, batch: int, seed: int) -> None:
    module, _, state = exported
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(seq, batch, 1, generator=generator)  # (seq, batch, 1)
    h = torch.randn(LAYERS, batch, HIDDEN, generator=generator)  # (layers, batch, hidden)
    c = torch.randn(LAYERS, batch, HIDDEN, generator=generator)
    with torch.inference_mode():
        for got, want in zip(state(x, h, c), getattr(module, STATE_METHOD)(x, h, c), strict=True):
            _assert_close(got, want)


class _DataDependent(LSTMRegressor):
    """A forward torch.export cannot trace (Python branches on a tensor's value); its state method still exports."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.sum()) > 1e9:
            return x
        return super().forward(x)


def test_a_failed_pt2_export_is_recorded_not_fatal() -> None:
    config = ModelConfig(hidden_size=4)
    entry, files = pt2_files(_DataDependent(config), config, seed=0)
    assert entry.file is None and files == {}
    assert entry.error is not None and entry.error.startswith(".pt2 export failed")
    # The state-carrying export fails alone (a config that is not the model's): forward is kept.
    eager = LSTMRegressor(config)
    entry, files = pt2_files(eager, ModelConfig(hidden_size=5), seed=0)
    assert entry.file == pt2_export.FORWARD_FILE and entry.state_file is None
    assert set(files) == {pt2_export.FORWARD_FILE}
    assert entry.error is not None and STATE_METHOD in entry.error


def test_training_publishes_pt2_files_or_records_that_it_skipped_them(store: model_store.ModelStore) -> None:
    config = preset("tutorial").with_overrides({"hidden_size": 4, "max_epochs": 3})
    manifest = run(config, store).manifest
    assert manifest.pt2 is not None and manifest.pt2.error is None
    assert {"model.pt2", "model_state.pt2"} <= set(manifest.files)
    for filename, digest in manifest.pt2.checksums().items():
        assert model_store.sha256_hex(store.read_checked("lstm", manifest.version, filename, digest)) == digest
    skipped = run(config, store, export_pt2=False).manifest
    assert skipped.pt2 is not None and skipped.pt2.file is None and skipped.pt2.error == PT2_SKIPPED
    assert not {"model.pt2", "model_state.pt2"} & set(skipped.files)


def test_export_version_adds_pt2_files_and_keeps_the_checkpoint(store: model_store.ModelStore) -> None:
    old = save_tiny(store, seed=2, hidden_size=6, stateful=True)  # exported before .pt2 (and ONNX) files
    assert old.pt2 is None
    checkpoint = store.read_version_file("lstm", old.version, "model.pt")
    updated = export_version(store, "lstm", old.version)
    assert updated.pt2 is not None and updated.pt2.error is None and updated.sha256 == old.sha256
    assert store.read_version_file("lstm", old.version, "model.pt") == checkpoint
    module = store.load("lstm", old.version).module
    data = store.read_checked("lstm", old.version, "model.pt2", updated.pt2.sha256 or "")
    x = torch.randn(50, 3, 1)
    with torch.inference_mode():
        _assert_close(pt2_export.load(data)(x), module(x))


def test_save_refuses_a_pt2_entry_whose_files_do_not_match(store: model_store.ModelStore) -> None:
    entry = model_store.Pt2Export(file="model.pt2", sha256="0" * 64)
    with pytest.raises(ValueError, match=r"\.pt2 entry names 'model.pt2'"):
        save_tiny(store, pt2=entry)
    with pytest.raises(ValueError, match="does not have the sha256"):
        save_tiny(store, pt2=entry, extra_files={"model.pt2": b"not it"})
    assert store.versions("lstm") == []


def test_a_manifest_written_before_pt2_still_loads(store: model_store.ModelStore) -> None:
    manifest = save_tiny(store)
    path = store.version_file("lstm", manifest.version, "manifest.json")
    raw = json.loads(path.read_text())
    del raw["pt2"]  # what versions published before .pt2 files hold
    path.write_text(json.dumps(raw))
    assert store.manifest("lstm", manifest.version).pt2 is None
    assert store.load("lstm").manifest.sha256 == manifest.sha256


@pytest.fixture(scope="module")
def every_format(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, dict[str, Callable[..., Any]]]:
    """One published version's forward in every format it holds: eager, TorchScript, ONNX Runtime and `.pt2`."""
    store = model_store.ModelStore(tmp_path_factory.mktemp("formats") / "store")
    save_tiny(store, seed=9, hidden_size=HIDDEN, num_layers=LAYERS, stateful=True)
    manifest = export_version(store, "lstm", 1)
    assert manifest.onnx is not None and manifest.pt2 is not None
    module = store.load("lstm", 1).module
    eager, _ = eager_of(module)
    onnx = onnx_runtime.load(store.read_checked("lstm", 1, "model.onnx", manifest.onnx.sha256 or ""))
    pt2 = pt2_export.load(store.read_checked("lstm", 1, "model.pt2", manifest.pt2.sha256 or ""))
    return eager, {
        "torchscript": module,
        "onnx": lambda x: torch.from_numpy(onnx.run(x.numpy())[0]),
        "pt2": pt2,
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 800), batch=st.integers(1, 24), seed=st.integers(0, 2**16))
def test_every_format_of_a_version_answers_like_the_eager_model(
    every_format: tuple[nn.Module, dict[str, Callable[..., Any]]], seq: int, batch: int, seed: int
) -> None:
    eager, formats = every_format
    x = torch.randn(seq, batch, 1, generator=torch.Generator().manual_seed(seed))  # (seq, batch, 1)
    with torch.inference_mode():
        want = eager(x)
        for name, forward in formats.items():
            got = forward(x)
            assert tuple(got.shape) == (seq, batch, 1), name
            assert float((got - want).abs().max()) <= ONNX_PARITY_TOLERANCE, name


@pytest.mark.parametrize("pt2", [True, False])
def test_a_training_job_exports_the_pt2_files_unless_lstm_job_pt2_is_false(
    store: model_store.ModelStore, pt2: bool
) -> None:
    job = Job(
        id="j1", status="running", created_at=0.0, started_at=0.0, finished_at=None, model="lstm", preset="tutorial",
        promote="never", params={"hidden_size": 4, "max_epochs": 3}, dataset=None, epoch=0, max_epochs=3, loss=None,
        result=None, error=None, owner=None, cancel_requested=False,
    )  # fmt: skip
    command = training_command(job, str(store.root), torch_threads=1, dataset_path=None, pt2=pt2)
    # The child's environment, as the job runner gives it: no LSTM_ settings (so not the suite's LSTM_NO_PT2).
    done = subprocess.run(command, env=child_environment(), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    manifest = store.manifest("lstm", 1)
    assert manifest.pt2 is not None
    if pt2:
        assert manifest.pt2.error is None and {"model.pt2", "model_state.pt2"} <= set(manifest.files)
    else:
        assert manifest.pt2.error == PT2_SKIPPED and "model.pt2" not in manifest.files
