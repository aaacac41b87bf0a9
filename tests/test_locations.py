"""Store locations: which backend each (location, database URL) opens, the settings that carry them, the commands
that refuse what cannot be opened, and the flags that hand a store to an lstm-train child."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import model_store
import training.__main__
from model_store import locations
from model_store.blobs import FolderBlobs
from model_store.catalog_store import CatalogStore
from model_store.s3_blobs import S3Blobs
from service.config import Settings
from tests.conftest import save_tiny, tiny_module
from training import store_settings
from training.store_settings import StoreSettings


def test_a_path_or_file_url_without_a_database_is_the_folder_store(tmp_path: Path) -> None:
    for location in (tmp_path, str(tmp_path), f"file://{tmp_path}", f"file://localhost{tmp_path}"):
        store = model_store.open_store(location)
        assert isinstance(store, model_store.ModelStore) and store.root == tmp_path
        assert store.describe() == str(tmp_path)
        opened: model_store.Store = store
        assert opened.changes() is None  # a folder tells no one: readers poll it


def test_a_path_with_a_database_keeps_rows_there_and_objects_in_the_folder(database_url: str, tmp_path: Path) -> None:
    store = model_store.open_store(tmp_path, database_url)
    assert isinstance(store, CatalogStore) and isinstance(store.blobs, FolderBlobs)
    assert store.blobs.root == tmp_path / locations.OBJECTS_FOLDER and store.cache_dir is None
    saved = save_tiny(store)
    assert (tmp_path / "objects" / "sha256" / saved.sha256).is_file()
    assert model_store.ModelStore(tmp_path).models() == []  # no folder-store layout beside the objects
    store.close()
    with_password = model_store.open_store(tmp_path, database_url.replace("postgres@", "postgres:secret@", 1))
    assert "secret" not in with_password.describe() and "***" in with_password.describe()  # trust: any password
    with_password.close()


def test_s3_with_a_database_keeps_objects_in_the_bucket_cached_per_replica(
    database_url: str, s3_bucket: str, tmp_path: Path
) -> None:
    store = model_store.open_store(s3_bucket, database_url, tmp_path / "cache", s3_attempts=1, pool_size=2)
    assert isinstance(store, CatalogStore) and isinstance(store.blobs, S3Blobs)
    assert store.describe().startswith(s3_bucket) and "catalog postgresql://" in store.describe()
    saved = save_tiny(store)
    store.load("lstm", 1)
    assert (tmp_path / "cache" / "sha256" / saved.sha256).is_file()
    assert store.changes() is not None
    store.close()


def test_what_cannot_be_opened_is_a_value_error_saying_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs LSTM_DATABASE_URL"):
        model_store.open_store("s3://models/lstm")
    with pytest.raises(ValueError, match="postgresql://"):
        model_store.open_store(tmp_path, "mysql://db/models")
    with pytest.raises(ValueError, match="expected a folder, file://PATH or s3://BUCKET/PREFIX"):
        model_store.open_store("s4://models/lstm")
    with pytest.raises(ValueError, match="not a host"):
        model_store.open_store("file://elsewhere/models")
    with pytest.raises(ValueError, match="bucket name"):
        model_store.open_store("s3://Bad_Bucket/x", "postgresql://127.0.0.1:1/none")


@pytest.mark.parametrize(
    "location", ["model-store", "/srv/store", "file:///srv/store", "s3://models/lstm", "s4://x/y", "file://h/x"]
)
def test_the_torch_free_folder_of_agrees_with_the_store_s(location: str) -> None:
    def outcome(function: object) -> object:
        try:
            return function(location)  # type: ignore[operator]
        except ValueError:
            return ValueError

    assert outcome(store_settings.folder_of) == outcome(locations.folder_of)


def test_settings_take_a_path_as_its_text_and_refuse_s3_without_a_database() -> None:
    assert Settings(store_dir=Path("/srv/store")).store_dir == "/srv/store"
    assert Settings(store_dir="s3://models/lstm", database_url="postgresql://db/x").store_folder is None
    with pytest.raises(ValueError, match="needs LSTM_DATABASE_URL"):
        Settings(store_dir="s3://models/lstm")
    with pytest.raises(ValueError, match="postgresql://"):
        Settings(database_url="sqlite:///x.db")


def test_a_child_gets_the_store_its_database_and_s3_limits_as_flags() -> None:
    folder = StoreSettings(store_dir="/srv/store")
    assert folder.store_flags() == ["--store", "/srv/store"]
    s3 = StoreSettings(store_dir="s3://models/lstm", database_url="postgresql://db/x", cache_dir=Path("/c"))
    flags = s3.store_flags()
    assert flags[:6] == [
        "--store",
        "s3://models/lstm",
        "--database-url",
        "postgresql://db/x",
        "--database-pool-size",
        "1",
    ]
    assert flags[flags.index("--cache-dir") + 1] == "/c" and "--s3-attempts" in flags
    parsed = training.__main__.parse_args([*flags, "--model", "lstm"])  # what the child makes of them
    settings = training.__main__.settings_of(parsed)
    assert (settings.store_dir, settings.database_url, settings.cache_dir) == (
        s3.store_dir,
        s3.database_url,
        Path("/c"),
    )
    assert (settings.s3_attempts, settings.database_pool_size) == (s3.s3_attempts, 1)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300)


def test_the_commands_refuse_an_s3_store_without_a_database_before_starting() -> None:
    for command in (("-m", "service"), ("-m", "training"), ("-m", "training", "export"), ("-m", "service.lstm_worker")):
        done = run(*command, "--store", "s3://models/lstm")
        assert done.returncode == 2, (command, done.stderr)
        assert "needs LSTM_DATABASE_URL" in done.stderr and "Traceback" not in done.stderr


def test_lstm_train_says_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    done = run("-m", "training", "export", "--store", str(tmp_path), "--database-url", "postgresql://127.0.0.1:1/x")
    assert done.returncode == 1 and "database" in done.stderr and "Traceback" not in done.stderr


def test_lstm_serve_says_at_start_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    url = "postgresql://someone:hunter2@127.0.0.1:1/models"
    done = run("-m", "service", "--store", str(tmp_path), "--database-url", url, "--port", "0", "--no-grpc")
    assert done.returncode == 1, done.stderr
    assert "cannot reach the store's database at postgresql://127.0.0.1:1/models" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_lstm_train_import_and_export_publish_into_the_catalog(
    database_url: str, s3_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "mine.pt"
    path.write_bytes(model_store.to_bytes(tiny_module(3, hidden_size=6, stateful=True)))
    reach = ["--store", s3_bucket, "--database-url", database_url, "--cache-dir", str(tmp_path / "cache")]
    imported = run("-m", "training", "import", str(path), *reach, "--model", "ext", "--promote", "always", "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout.splitlines()[-1])["version"] == 1
    exported = run("-m", "training", "export", *reach, "--model", "ext", "--json")
    assert exported.returncode == 0, exported.stderr
    store = model_store.open_store(s3_bucket, database_url)
    manifest = store.manifest("ext", 1)
    assert store.aliases("ext") == {"production": 1}
    assert manifest.onnx is not None and manifest.onnx.file in manifest.files
    assert store.read_checked("ext", 1, manifest.onnx.file, manifest.onnx.sha256 or "")  # in the bucket, intact
    store.close()
