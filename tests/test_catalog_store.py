"""CatalogStore on a real PostgreSQL, with its files in a folder and in a real S3 endpoint (moto's server): the
folder store's behaviour, publishing by commit, race-safe numbers, checked reads, the cache, the change feed."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import torch

import model_store
from model_store.blobs import Blobs, FolderBlobs, key_of
from model_store.catalog_store import CatalogStore
from model_store.s3_blobs import S3Blobs, parse_url
from service.poller import Poller
from service.predictor import Predictor
from tests.conftest import save_tiny, tiny_module, wait_for
from tests.postgres_server import PostgresServer
from tests.s3_server import S3Server

REPORT = b"\x89PNG\r\n\x1a\nfake"


def quick_s3(location: str) -> S3Blobs:
    """S3Blobs that give up soon on a paused server (one attempt, short timeouts)."""
    return S3Blobs.from_url(location, connect_timeout=1, read_timeout=2, attempts=1)


@pytest.fixture(params=["folder", "s3"])
def catalog(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Iterator[CatalogStore]:
    """A CatalogStore on a fresh database, its objects in a folder or in a fresh bucket (then with a cache)."""
    if request.param == "folder":
        store = CatalogStore(database_url, FolderBlobs(tmp_path / "objects"))
    else:
        store = CatalogStore(database_url, quick_s3(request.getfixturevalue("s3_bucket")), tmp_path / "cache")
    yield store
    store.close()


def rows(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


# ---- the folder store's behaviour ------------------------------------------------------


def test_save_then_load_round_trips_module_manifest_and_files(catalog: CatalogStore) -> None:
    saved = save_tiny(catalog, metrics={"worst_mse": 0.5}, data={"kind": "test"}, extra_files={"report.png": REPORT})
    loaded = catalog.load("lstm", 1)
    x = torch.randn(9, 3, 1)
    assert torch.equal(loaded.module(x), tiny_module(0)(x))
    assert loaded.manifest == saved == catalog.manifest("lstm", 1)
    assert saved.version == 1 and saved.files == ("model.pt", "manifest.json", "report.png")
    assert catalog.read_version_file("lstm", 1, "report.png") == REPORT
    assert model_store.Manifest.from_json(catalog.read_version_file("lstm", 1, "manifest.json")) == saved
    with pytest.raises(FileNotFoundError):
        catalog.read_version_file("lstm", 1, "../aliases.json")
    assert catalog.read_checked("lstm", 1, "report.png", model_store.sha256_hex(REPORT)) == REPORT
    with pytest.raises(model_store.IntegrityError):
        catalog.read_checked("lstm", 1, "report.png", "0" * 64)


def test_versions_count_up_and_models_are_listed(catalog: CatalogStore) -> None:
    for seed in range(3):
        save_tiny(catalog, seed=seed)
    save_tiny(catalog, name="other")
    assert catalog.versions("lstm") == [1, 2, 3]
    assert catalog.models() == ["lstm", "other"]
    assert catalog.versions("missing") == []
    report = catalog.inspect("lstm")
    assert [m.version for m in report.manifests] == [1, 2, 3] and report.damaged == []


def test_resolve_prefers_production_alias_then_newest(catalog: CatalogStore) -> None:
    save_tiny(catalog, seed=1)
    save_tiny(catalog, seed=2)
    assert catalog.resolve("lstm") == 2
    assert catalog.set_alias("lstm", "production", 1) is None
    assert catalog.resolve("lstm") == 1
    assert catalog.resolve("lstm", "production") == 1
    assert catalog.resolve("lstm", 2) == catalog.resolve("lstm", "2") == 2
    assert catalog.load("lstm").manifest.version == 1
    with pytest.raises(model_store.VersionNotFoundError):
        catalog.resolve("lstm", 7)
    with pytest.raises(model_store.VersionNotFoundError):
        catalog.resolve("lstm", "staging")
    with pytest.raises(model_store.ModelNotFoundError):
        catalog.resolve("nope")


def test_aliases_are_set_moved_and_removed(catalog: CatalogStore) -> None:
    save_tiny(catalog)
    save_tiny(catalog)
    catalog.set_alias("lstm", "production", 2)
    catalog.set_alias("lstm", "canary", 1)
    catalog.set_alias("lstm", "canary", 2)
    assert catalog.aliases("lstm") == {"canary": 2, "production": 2}
    catalog.remove_alias("lstm", "canary")
    assert catalog.aliases("lstm") == {"production": 2}
    with pytest.raises(model_store.VersionNotFoundError, match="no alias 'canary'"):
        catalog.remove_alias("lstm", "canary")
    with pytest.raises(model_store.VersionNotFoundError):
        catalog.set_alias("lstm", "production", 5)
    with pytest.raises(model_store.ModelNotFoundError):
        catalog.set_alias("nope", "production", 1)
    with pytest.raises(model_store.ModelNotFoundError):
        catalog.remove_alias("nope", "production")
    with pytest.raises(model_store.InvalidNameError):
        catalog.set_alias("lstm", "../production", 1)
    assert catalog.aliases("lstm") == {"production": 2}


def test_delete_refuses_aliased_version_and_never_reuses_numbers(catalog: CatalogStore) -> None:
    save_tiny(catalog)
    save_tiny(catalog)
    catalog.set_alias("lstm", "production", 2)
    with pytest.raises(model_store.VersionInUseError, match="production"):
        catalog.delete("lstm", 2)
    catalog.set_alias("lstm", "production", 1)
    catalog.delete("lstm", 2)
    assert catalog.versions("lstm") == [1]
    assert save_tiny(catalog).version == 3
    with pytest.raises(model_store.VersionNotFoundError):
        catalog.delete("lstm", 2)
    with pytest.raises(model_store.VersionNotFoundError):
        catalog.manifest("lstm", 2)
    with pytest.raises(model_store.ModelNotFoundError):
        catalog.delete("nope", 1)


@pytest.mark.parametrize("name", ["", "A", "../etc", "a/b", ".hidden", "-x", "x" * 65, "lstm\n", "é"])
def test_bad_names_are_refused(catalog: CatalogStore, name: str, database_url: str) -> None:
    with pytest.raises(model_store.InvalidNameError, match="expected"):
        save_tiny(catalog, name=name)
    with pytest.raises(model_store.InvalidNameError):
        catalog.versions(name)
    assert rows(database_url, "SELECT * FROM catalog_models") == []


@pytest.mark.parametrize("version", [0, -1, True, 2**40])
def test_bad_versions_are_refused(catalog: CatalogStore, version: int) -> None:
    save_tiny(catalog)
    with pytest.raises(model_store.InvalidNameError):
        catalog.manifest("lstm", version)


def test_extra_files_are_kept_whatever_they_are_and_onnx_files_are_added(catalog: CatalogStore) -> None:
    """Files are generic: whatever the manifest lists (a format's files added later too) is an object."""
    saved = save_tiny(catalog, onnx=True, extra_files={"tokenizer.json": b"{}", "report.png": REPORT})
    assert saved.onnx is not None and saved.onnx.file is not None
    onnx_bytes = catalog.read_checked("lstm", 1, saved.onnx.file, saved.onnx.sha256 or "")
    assert catalog.read_version_file("lstm", 1, "tokenizer.json") == b"{}"
    # Re-export to a new entry that names only model.onnx: the old state file is unlisted, the rest kept.
    entry = model_store.OnnxExport(file="model.onnx", sha256=model_store.sha256_hex(onnx_bytes + b" "))
    with pytest.raises(model_store.IntegrityError, match="checkpoint"):
        catalog.add_onnx("lstm", 1, entry, {"model.onnx": onnx_bytes + b" "}, "0" * 64)
    updated = catalog.add_onnx("lstm", 1, entry, {"model.onnx": onnx_bytes + b" "}, saved.sha256)
    assert updated == catalog.manifest("lstm", 1)
    assert "model_state.onnx" not in updated.files and {"tokenizer.json", "report.png"} <= set(updated.files)
    assert catalog.read_checked("lstm", 1, "model.onnx", entry.sha256 or "") == onnx_bytes + b" "
    with pytest.raises(FileNotFoundError):
        catalog.read_version_file("lstm", 1, "model_state.onnx")


# ---- publishing is the commit ------------------------------------------------------------


class FailingBlobs:
    """Blobs whose `fail_after`-th put fails, as a full bucket or a lost connection would."""

    def __init__(self, blobs: Blobs, fail_after: int) -> None:
        self.blobs, self.left = blobs, fail_after

    def put(self, key: str, data: bytes) -> None:
        self.left -= 1
        if self.left < 0:
            raise model_store.storage_error(f"writing {key}", "the bucket is full")
        self.blobs.put(key, data)

    def get(self, key: str) -> bytes:
        return self.blobs.get(key)

    def describe(self) -> str:
        return self.blobs.describe()


def test_a_save_that_fails_while_uploading_publishes_nothing(database_url: str, tmp_path: Path) -> None:
    objects = FolderBlobs(tmp_path / "objects")
    good = CatalogStore(database_url, objects)
    save_tiny(good)
    failing = CatalogStore(database_url, FailingBlobs(objects, fail_after=1))
    with pytest.raises(model_store.StorageError, match="full"):
        save_tiny(failing, seed=1, extra_files={"report.png": REPORT})
    assert good.versions("lstm") == [1]
    assert len(list((tmp_path / "objects" / "sha256").iterdir())) == 2  # version 1's, and the orphan upload
    assert save_tiny(good, seed=2).version == 2  # no number was taken
    good.close()
    failing.close()


def test_a_save_whose_commit_fails_leaves_only_unreferenced_objects(tmp_path: Path) -> None:
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("commit")
        store = CatalogStore(url, FolderBlobs(tmp_path / "objects"), pool_timeout=3)
        save_tiny(store)
        server.stop()  # the database goes away after the uploads would have been done
        with pytest.raises(model_store.StorageError, match="database"):
            save_tiny(store, seed=1)
        with pytest.raises(model_store.StorageError, match="database"):
            store.versions("lstm")
        with pytest.raises(model_store.StorageError):
            store.set_alias("lstm", "production", 1)
        assert len(list((tmp_path / "objects" / "sha256").iterdir())) == 2  # the second save's object, unnamed
        server.start()
        assert wait_for(lambda: _answers(store), timeout=60)  # the pool replaces its broken connections
        assert store.versions("lstm") == [1]
        assert save_tiny(store, seed=2).version == 2
        store.close()
    finally:
        server.close()


def _answers(store: CatalogStore) -> bool:
    try:
        store.versions("lstm")
    except model_store.StorageError:
        return False
    return True


def test_an_unreachable_database_is_a_storage_error_at_open(tmp_path: Path) -> None:
    server = PostgresServer()  # never started: nothing listens on its port
    with pytest.raises(model_store.StorageError, match="database"):
        CatalogStore(server.url(), FolderBlobs(tmp_path / "objects"))


def _save_many(url: str, objects: str, seed: int, count: int) -> list[int]:
    store = CatalogStore(url, FolderBlobs(objects), pool_size=1)
    try:
        return [save_tiny(store, seed=seed * 100 + i).version for i in range(count)]
    finally:
        store.close()


def test_concurrent_saves_from_processes_get_distinct_versions(database_url: str, tmp_path: Path) -> None:
    objects = str(tmp_path / "objects")
    CatalogStore(database_url, FolderBlobs(objects)).close()  # migrated once, so the children race on saves only
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_save_many, [(database_url, objects, seed, 3) for seed in range(4)])
    allocated = sorted(v for batch in results for v in batch)
    assert allocated == list(range(1, 13))
    store = CatalogStore(database_url, FolderBlobs(objects))
    assert store.versions("lstm") == allocated
    assert len({store.manifest("lstm", v).params["seed"] for v in allocated}) == 12  # nothing overwritten
    for version in allocated:
        store.load("lstm", version)
    store.close()


def test_concurrent_saves_from_threads_into_s3_get_distinct_versions(database_url: str, s3_bucket: str) -> None:
    store = CatalogStore(database_url, quick_s3(s3_bucket), pool_size=4)
    got: list[int] = []
    errors: list[BaseException] = []
    # Scripted here, not in the threads: torch.jit.script parses Python source, and CPython 3.11.7's AST
    # constructor is not thread-safe (SystemError "AST constructor recursion depth mismatch", gh-106905).
    modules = [tiny_module(seed) for seed in range(6)]

    def save(seed: int) -> None:
        try:
            saved = store.save(
                "lstm",
                modules[seed],
                inputs=(model_store.sequence_spec("input", 1),),
                outputs=(model_store.sequence_spec("output", 1),),
                params={"seed": seed},
            )
            got.append(saved.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(got) == list(range(1, 7)) == store.versions("lstm")
    assert sorted(store.manifest("lstm", v).params["seed"] for v in got) == list(range(6))
    store.close()


def test_concurrent_migrations_apply_the_schema_once(database_url: str, tmp_path: Path) -> None:
    stores: list[CatalogStore] = []
    threads = [
        threading.Thread(target=lambda: stores.append(CatalogStore(database_url, FolderBlobs(tmp_path))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stores) == 3
    assert rows(database_url, "SELECT component, version FROM lstm_schema") == [("catalog", 1)]
    for store in stores:
        store.close()


# ---- checked reads --------------------------------------------------------------------


def object_path(root: Path, sha256: str) -> Path:
    return root / key_of(sha256)


def test_a_missing_or_damaged_object_is_what_the_folder_store_says(database_url: str, tmp_path: Path) -> None:
    folder = model_store.ModelStore(tmp_path / "folder")
    catalog = CatalogStore(database_url, FolderBlobs(tmp_path / "objects"))
    for store in (folder, catalog):
        save_tiny(store, seed=1)
        save_tiny(store, seed=2)
    # A checkpoint that is not what the manifest says: IntegrityError from both.
    version_1 = catalog.manifest("lstm", 1)
    damaged = bytearray(object_path(tmp_path / "objects", version_1.sha256).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    object_path(tmp_path / "objects", version_1.sha256).write_bytes(bytes(damaged))
    (tmp_path / "folder/lstm/versions/1/model.pt").write_bytes(bytes(damaged))
    for store in (folder, catalog):
        with pytest.raises(model_store.IntegrityError, match="sha256"):
            store.load("lstm", 1)
    # A checkpoint that is gone: DamagedVersionError naming the version, from both.
    object_path(tmp_path / "objects", catalog.manifest("lstm", 2).sha256).unlink()
    (tmp_path / "folder/lstm/versions/2/model.pt").unlink()
    for store in (folder, catalog):
        with pytest.raises(model_store.DamagedVersionError) as caught:
            store.load("lstm", 2)
        assert caught.value.version == 2 and caught.value.path == "versions/2/model.pt"
    catalog.close()


def test_a_damaged_or_missing_s3_object_is_refused(database_url: str, s3_bucket: str, s3_server: S3Server) -> None:
    store = CatalogStore(database_url, quick_s3(s3_bucket))  # no cache: every read goes to S3
    saved = save_tiny(store, extra_files={"report.png": REPORT})
    bucket, prefix = parse_url(s3_bucket)
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key=f"{prefix}/{key_of(saved.sha256)}", Body=b"not the checkpoint")
    with pytest.raises(model_store.IntegrityError, match="sha256"):
        store.load("lstm", 1)
    client.delete_object(Bucket=bucket, Key=f"{prefix}/{key_of(saved.sha256)}")
    with pytest.raises(model_store.DamagedVersionError, match="missing"):
        store.load("lstm", 1)
    assert store.read_version_file("lstm", 1, "report.png") == REPORT  # the other files are intact
    store.close()


# ---- the replica's cache ----------------------------------------------------------------


def test_a_replica_loads_what_it_cached_while_s3_is_away(
    database_url: str, s3_bucket: str, s3_server: S3Server, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    writer = CatalogStore(database_url, quick_s3(s3_bucket))
    save_tiny(writer, seed=1)
    save_tiny(writer, seed=2)
    replica = CatalogStore(database_url, quick_s3(s3_bucket), cache)
    replica.load("lstm", 1)  # read through: now in the cache
    replica.close()
    s3_server.pause()
    try:
        restarted = CatalogStore(database_url, quick_s3(s3_bucket), cache)  # a restart of the replica
        assert restarted.load("lstm", 1).manifest.params == {"seed": 1}
        with pytest.raises(model_store.StorageError, match="s3://"):
            restarted.load("lstm", 2)  # never read: only S3 has it
    finally:
        s3_server.resume()
    assert restarted.load("lstm", 2).manifest.params == {"seed": 2}
    restarted.close()
    writer.close()


def test_a_damaged_cache_copy_is_fetched_again(database_url: str, s3_bucket: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    store = CatalogStore(database_url, quick_s3(s3_bucket), cache)
    saved = save_tiny(store)
    store.load("lstm", 1)
    copy = object_path(cache, saved.sha256)
    good = copy.read_bytes()
    copy.write_bytes(b"garbage")
    assert store.load("lstm", 1).manifest == saved
    assert copy.read_bytes() == good  # replaced by a checked copy
    assert [p.name for p in copy.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left
    store.close()


# ---- the change feed and the poller ----------------------------------------------------------


def _set_alias(url: str, objects: str, version: int) -> None:
    store = CatalogStore(url, FolderBlobs(objects), pool_size=1)
    store.set_alias("lstm", "production", version)
    store.close()


def test_the_change_feed_names_each_model_another_process_changes(database_url: str, tmp_path: Path) -> None:
    store = CatalogStore(database_url, FolderBlobs(tmp_path / "objects"))
    save_tiny(store)
    save_tiny(store, seed=1)
    heard: list[str] = []
    feed = store.changes()
    feed.start(heard.append)
    try:
        assert wait_for(lambda: heard == [""])  # connected: "something may have changed while away"
        process = multiprocessing.get_context("spawn").Process(
            target=_set_alias, args=(database_url, str(tmp_path / "objects"), 1)
        )
        process.start()
        process.join(120)
        assert process.exitcode == 0
        assert wait_for(lambda: heard == ["", "lstm"])
        with contextlib.suppress(model_store.VersionNotFoundError):
            store.set_alias("lstm", "production", 9)  # refused: rolled back, so nobody is told
        store.delete("lstm", 2)
        assert wait_for(lambda: heard == ["", "lstm", "lstm"])
    finally:
        feed.close()
        store.close()


def test_the_change_feed_reconnects_when_the_database_comes_back(tmp_path: Path) -> None:
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("feed")
        store = CatalogStore(url, FolderBlobs(tmp_path / "objects"))
        save_tiny(store)
        heard: list[str] = []
        feed = store.changes()
        feed.first_retry = feed.max_retry = 0.2
        feed.start(heard.append)
        assert wait_for(lambda: heard == [""])
        server.stop()
        assert wait_for(lambda: not feed.connected.is_set())
        server.start()
        assert wait_for(lambda: heard == ["", ""], timeout=90)  # back, and it says anything may have changed
        assert wait_for(lambda: _answers(store), timeout=60)
        store.set_alias("lstm", "production", 1)
        assert wait_for(lambda: heard == ["", "", "lstm"])
        feed.close()
        store.close()
    finally:
        server.close()


def test_the_poller_serves_a_promotion_at_once_on_the_notification(database_url: str, tmp_path: Path) -> None:
    store = CatalogStore(database_url, FolderBlobs(tmp_path / "objects"))
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    predictor = Predictor(store, version_cache=0)
    poller = Poller(predictor, interval=60.0, changes=store.changes())  # the periodic refresh never comes

    async def scenario() -> None:
        await poller.refresh()
        assert predictor.serving()["lstm"].version == 2
        task = asyncio.create_task(poller.run_forever())
        try:
            assert poller.changes is not None
            for _ in range(600):  # the feed's first "anything" wakes one refresh once it listens
                if poller.woken >= 1:
                    break
                await asyncio.sleep(0.1)
            await asyncio.to_thread(_set_alias, database_url, str(tmp_path / "objects"), 1)
            for _ in range(600):
                if predictor.serving()["lstm"].version == 1:
                    break
                await asyncio.sleep(0.1)
            assert predictor.serving()["lstm"].version == 1
            assert poller.woken >= 2
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    store.close()
