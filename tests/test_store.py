"""The model store: round trips, atomic publishing, safe concurrency, integrity, names, aliases."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch

import model_store
from model_store import store as store_module
from tests.conftest import save_tiny, tiny_module


def test_save_then_load_round_trips_module_and_manifest(store: model_store.ModelStore) -> None:
    saved = save_tiny(store, metrics={"worst_mse": 0.5}, data={"kind": "test"}, extra_files={"report.png": b"png"})
    loaded = store.load("lstm", 1)
    x = torch.randn(9, 3, 1)
    assert torch.equal(loaded.module(x), tiny_module(0)(x))
    assert loaded.manifest == saved
    assert saved.version == 1
    assert saved.metrics == {"worst_mse": 0.5}
    assert saved.torch_version == torch.__version__
    assert saved.inputs[0].shape == (-1, -1, 1)
    assert saved.sha256 == model_store.sha256_hex((store.root / "lstm/versions/1/model.pt").read_bytes())
    assert store.version_file("lstm", 1, "report.png").read_bytes() == b"png"
    assert json.loads((store.root / "lstm/versions/1/manifest.json").read_bytes())["version"] == 1


def test_versions_count_up_and_models_are_listed(store: model_store.ModelStore) -> None:
    for seed in range(3):
        save_tiny(store, seed=seed)
    save_tiny(store, name="other")
    assert store.versions("lstm") == [1, 2, 3]
    assert store.models() == ["lstm", "other"]
    assert store.versions("missing") == []


def test_resolve_prefers_production_alias_then_newest(store: model_store.ModelStore) -> None:
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    assert store.resolve("lstm") == 2
    store.set_alias("lstm", "production", 1)
    assert store.resolve("lstm") == 1
    assert store.resolve("lstm", "production") == 1
    assert store.resolve("lstm", 2) == 2
    assert store.resolve("lstm", "2") == 2
    with pytest.raises(model_store.VersionNotFoundError):
        store.resolve("lstm", 7)
    with pytest.raises(model_store.VersionNotFoundError):
        store.resolve("lstm", "staging")
    with pytest.raises(model_store.ModelNotFoundError):
        store.resolve("nope")


def test_alias_file_is_replaced_whole(store: model_store.ModelStore) -> None:
    save_tiny(store)
    save_tiny(store)
    store.set_alias("lstm", "production", 2)
    store.set_alias("lstm", "canary", 1)
    assert json.loads((store.root / "lstm/aliases.json").read_bytes()) == {"canary": 1, "production": 2}
    leftovers = [p.name for p in (store.root / "lstm").iterdir() if p.name.startswith(".aliases")]
    assert leftovers == []
    store.remove_alias("lstm", "canary")
    assert store.aliases("lstm") == {"production": 2}


def test_alias_to_missing_version_is_refused(store: model_store.ModelStore) -> None:
    save_tiny(store)
    with pytest.raises(model_store.VersionNotFoundError):
        store.set_alias("lstm", "production", 5)
    assert store.aliases("lstm") == {}


def test_delete_refuses_aliased_version_and_never_reuses_numbers(store: model_store.ModelStore) -> None:
    save_tiny(store)
    save_tiny(store)
    store.set_alias("lstm", "production", 2)
    with pytest.raises(model_store.VersionInUseError, match="production"):
        store.delete("lstm", 2)
    store.set_alias("lstm", "production", 1)
    store.delete("lstm", 2)
    assert store.versions("lstm") == [1]
    assert save_tiny(store).version == 3
    with pytest.raises(model_store.VersionNotFoundError):
        store.delete("lstm", 2)


def test_half_written_version_is_invisible(store: model_store.ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    save_tiny(store)
    real_write = store_module._write_file

    def failing_write(path: Path, data: bytes) -> None:
        if path.name == "manifest.json":
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(store_module, "_write_file", failing_write)
    with pytest.raises(OSError, match="No space"):
        save_tiny(store, seed=1)
    assert store.versions("lstm") == [1]
    assert [p.name for p in (store.root / "lstm").iterdir() if p.name.startswith(".staging")] == []
    monkeypatch.undo()
    assert save_tiny(store, seed=2).version == 2


def test_staging_folder_of_a_dead_writer_is_never_listed(store: model_store.ModelStore) -> None:
    save_tiny(store)
    staging = store.root / "lstm" / ".staging-deadbeef"
    staging.mkdir()
    (staging / "model.pt").write_bytes(b"partial")
    half = store.root / "lstm" / "versions" / "9"
    half.mkdir()  # a folder without a manifest is not a version
    assert store.versions("lstm") == [1]
    assert store.resolve("lstm") == 1


def _save_many(root: str, seed: int, count: int) -> list[int]:
    store = model_store.ModelStore(root)
    return [save_tiny(store, seed=seed * 100 + i).version for i in range(count)]


def test_concurrent_saves_from_processes_get_distinct_versions(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(_save_many, [(root, seed, 3) for seed in range(4)])
    allocated = sorted(v for batch in results for v in batch)
    assert allocated == list(range(1, 13))
    store = model_store.ModelStore(root)
    assert store.versions("lstm") == allocated
    seeds = {store.manifest("lstm", v).params["seed"] for v in allocated}
    assert len(seeds) == 12  # nothing overwritten
    for version in allocated:
        store.load("lstm", version)  # every checkpoint matches its manifest


def test_tampered_checkpoint_is_refused(store: model_store.ModelStore) -> None:
    save_tiny(store)
    path = store.root / "lstm/versions/1/model.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(model_store.IntegrityError, match="sha256"):
        store.load("lstm", 1)


def test_pickled_checkpoint_is_refused_even_with_matching_hash(store: model_store.ModelStore) -> None:
    save_tiny(store)
    version_dir = store.root / "lstm/versions/1"
    torch.save({"weights": torch.zeros(3)}, version_dir / "model.pt")  # a pickle, not TorchScript
    manifest = json.loads((version_dir / "manifest.json").read_bytes())
    manifest["sha256"] = model_store.sha256_hex((version_dir / "model.pt").read_bytes())
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(model_store.IntegrityError, match="TorchScript"):
        store.load("lstm", 1)


@pytest.mark.parametrize("name", ["", "A", "../etc", "a/b", ".hidden", "-x", "x" * 65, "lstm\n", "é"])
def test_bad_names_are_refused(store: model_store.ModelStore, name: str) -> None:
    with pytest.raises(model_store.InvalidNameError, match="expected"):
        save_tiny(store, name=name)
    with pytest.raises(model_store.InvalidNameError):
        store.versions(name)
    assert not store.root.exists() or list(store.root.iterdir()) == []


@pytest.mark.parametrize("version", [0, -1, True, 2**40])
def test_bad_versions_are_refused(store: model_store.ModelStore, version: int) -> None:
    save_tiny(store)
    with pytest.raises(model_store.InvalidNameError):
        store.manifest("lstm", version)


def test_bad_alias_names_are_refused(store: model_store.ModelStore) -> None:
    save_tiny(store)
    with pytest.raises(model_store.InvalidNameError):
        store.set_alias("lstm", "../production", 1)


def test_version_file_only_serves_files_the_manifest_lists(store: model_store.ModelStore) -> None:
    save_tiny(store)
    with pytest.raises(FileNotFoundError):
        store.version_file("lstm", 1, "../aliases.json")
    assert os.path.basename(store.version_file("lstm", 1, "model.pt")) == "model.pt"
