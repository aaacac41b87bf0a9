"""CatalogStore: the model store of several machines, its versions and aliases as PostgreSQL rows.

Versions, aliases and manifests are rows; every file of a version is an immutable object (Blobs: a shared folder
or an S3 bucket) named by its sha256.

Publishing a version uploads its files first, then commits one transaction that allocates its number and inserts
its rows: the commit is the publish. A save that dies before the commit leaves unreferenced objects and no
version; readers see all of a version or nothing of it. Numbers come from a per-model counter row updated in
that transaction, so concurrent saves (any process, any machine) wait for each other there and get distinct
numbers, and a deleted number is never handed out again. Every object read (from the bucket or from this
replica's cache) is checked against the sha256 its key names before it is used.

Every change of what is served (save, add_onnx, set_alias, remove_alias, delete) is one transaction that also
sends `NOTIFY lstm_store, '<model>'`, which ChangeFeed (`changes()`) delivers to every replica at commit. A
failure of the database (down, unreachable, out of connections) is a StorageError; the service keeps serving
what it loaded. The errors are the folder store's: ModelNotFoundError, VersionNotFoundError, VersionInUseError,
IntegrityError (bytes that are not what the manifest says), DamagedVersionError (a version's object missing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import torch
from psycopg_pool import ConnectionPool

from model_store import torchscript
from model_store.blob_cache import CachedBlobs
from model_store.blobs import Blobs, check_digest, key_of
from model_store.change_feed import CHANNEL, ChangeFeed
from model_store.errors import (
    DamagedModelError,
    DamagedVersionError,
    IntegrityError,
    ModelNotFoundError,
    VersionInUseError,
    VersionNotFoundError,
)
from model_store.manifest import (
    CHECKPOINT_FILE,
    FORMAT,
    MANIFEST_FILE,
    ONNX_FORMAT,
    Manifest,
    OnnxExport,
    Pt2Export,
    SequenceSupport,
    TensorSpec,
)
from model_store.names import check_name, check_version, is_version_text
from model_store.postgres import CONNECT_TIMEOUT_SECONDS, database_errors, migrate, migrations_in, redacted
from model_store.store import (
    PRODUCTION,
    LoadedModel,
    ModelReport,
    Scan,
    check_new_files,
    no_checkpoint,
    plain_name,
    sha256_hex,
    with_exports,
)

COMPONENT = "catalog"
MIGRATIONS = "model_store.migrations"
POOL_SIZE = 4  # connections per process: reads are short, and the service calls the store from a few threads
POOL_TIMEOUT_SECONDS = 10.0  # how long a call waits for a connection before it is a StorageError

Connection = psycopg.Connection[tuple[Any, ...]]
RowLock = Literal["", " FOR UPDATE", " FOR KEY SHARE"]  # the clause _version_row appends to its SELECT


class CatalogStore:
    """Named models, immutable numbered versions and aliases in PostgreSQL at `url`, their files in `blobs`,
    read through a copy in `cache_dir` when one is given (model_store/blob_cache.py)."""

    def __init__(
        self,
        url: str,
        blobs: Blobs,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        pool_size: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT_SECONDS,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"the database pool needs at least one connection, not {pool_size}")
        self.url = url
        self.blobs = blobs
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._reader: Blobs = blobs if cache_dir is None else CachedBlobs(blobs, cache_dir)
        migrate(url, COMPONENT, migrations_in(MIGRATIONS))
        # Autocommit: a read is one statement; a write is an explicit transaction (`_transaction`). `check` tests
        # a pooled connection before handing it out, so one broken by a database restart is replaced, not used.
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=pool_timeout,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
            check=ConnectionPool.check_connection,
            open=True,
            name="lstm-catalog",
        )

    def describe(self) -> str:
        return f"{self.blobs.describe()} (catalog {redacted(self.url)})"

    def changes(self) -> ChangeFeed:
        """A new feed of the models that change (start it, and close it when done)."""
        return ChangeFeed(self.url)

    def close(self) -> None:
        self._pool.close()

    # ---- database plumbing --------------------------------------------------------------

    @contextmanager
    def _connection(self, doing: str) -> Iterator[Connection]:
        with database_errors(doing, self.url), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _transaction(self, doing: str, notify: str | None = None) -> Iterator[Connection]:
        """One transaction; with `notify`, it tells the replicas listening that this model changed, at commit."""
        with self._connection(doing) as conn, conn.transaction():
            yield conn
            if notify is not None:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, notify))

    def _versions(self, conn: Connection, name: str) -> list[int]:
        rows = conn.execute(
            "SELECT version FROM catalog_versions WHERE model = %s ORDER BY version", (name,)
        ).fetchall()
        return [int(row[0]) for row in rows]

    def _raise_missing(self, conn: Connection, name: str, version: int) -> None:
        if not self._versions(conn, name):
            raise ModelNotFoundError(f"model {name!r} not found")
        raise VersionNotFoundError(f"model {name!r} has no version {version}")

    def _version_row(self, conn: Connection, name: str, version: int, lock: RowLock = "") -> str:
        """The manifest text of a version, its row locked as `lock` says until the transaction ends;
        ModelNotFoundError or VersionNotFoundError when there is none."""
        row = conn.execute(
            f"SELECT manifest FROM catalog_versions WHERE model = %s AND version = %s{lock}", (name, version)
        ).fetchone()
        if row is None:
            self._raise_missing(conn, name, version)
        assert row is not None  # _raise_missing always raises
        return str(row[0])

    def _aliases_of(self, conn: Connection, name: str) -> dict[str, int]:
        rows = conn.execute("SELECT alias, version FROM catalog_aliases WHERE model = %s ORDER BY alias", (name,))
        return {str(alias): int(version) for alias, version in rows.fetchall()}

    # ---- objects ------------------------------------------------------------------------

    def _object(self, name: str, version: int, filename: str, sha256: str) -> bytes:
        """The checked bytes of a version's file; DamagedVersionError when its object is missing."""
        key = key_of(sha256)
        try:
            return check_digest(key, self._reader.get(key), self._reader.describe())
        except FileNotFoundError:
            raise DamagedVersionError(
                name, f"versions/{version}/{filename}", f"missing (no object {key} in {self.blobs.describe()})", version
            ) from None

    def _upload(self, files: Mapping[str, bytes]) -> dict[str, str]:
        """Put every file's object (before the row that names it is committed); {file name: sha256}."""
        digests = {filename: sha256_hex(content) for filename, content in files.items()}
        for filename, content in files.items():
            self.blobs.put(key_of(digests[filename]), content)
        return digests

    # ---- reading -----------------------------------------------------------------------

    def scan(self) -> Scan:
        with self._connection("listing the store's models") as conn:
            rows = conn.execute("SELECT DISTINCT model FROM catalog_versions ORDER BY model").fetchall()
        return Scan([str(row[0]) for row in rows], [])

    def models(self) -> list[str]:
        return self.scan().models

    def versions(self, name: str) -> list[int]:
        check_name(name)
        with self._connection(f"listing the versions of {name!r}") as conn:
            return self._versions(conn, name)

    def _manifest_text(self, name: str, version: int) -> str:
        check_name(name)
        check_version(version)
        with self._connection(f"reading the manifest of {name!r} version {version}") as conn:
            return self._version_row(conn, name, version)

    def manifest(self, name: str, version: int) -> Manifest:
        return _parse_manifest(name, version, self._manifest_text(name, version))

    def read_version_file(self, name: str, version: int, filename: str) -> bytes:
        """The bytes of a file the version was published with; FileNotFoundError for one it was not (or whose
        object is gone), as the folder store."""
        text = self._manifest_text(name, version)
        manifest = _parse_manifest(name, version, text)
        if filename not in manifest.files or not plain_name(filename):
            raise FileNotFoundError(f"{name} version {version} has no file {filename!r}")
        if filename == MANIFEST_FILE:
            return text.encode()
        with self._connection(f"reading {filename} of {name!r} version {version}") as conn:
            row = conn.execute(
                "SELECT sha256 FROM catalog_files WHERE model = %s AND version = %s AND filename = %s",
                (name, version, filename),
            ).fetchone()
        if row is None:
            raise FileNotFoundError(f"{name} version {version} has no file {filename!r}")
        try:
            return self._object(name, version, filename, str(row[0]))
        except DamagedVersionError as exc:
            raise FileNotFoundError(str(exc)) from None

    def aliases(self, name: str) -> dict[str, int]:
        check_name(name)
        with self._connection(f"reading the aliases of {name!r}") as conn:
            return self._aliases_of(conn, name)

    def inspect(self, name: str) -> ModelReport:
        check_name(name)
        with self._connection(f"reading model {name!r}") as conn:
            rows = conn.execute(
                "SELECT version, manifest FROM catalog_versions WHERE model = %s ORDER BY version", (name,)
            ).fetchall()
            aliases = self._aliases_of(conn, name)
        manifests, damaged = [], []
        for version, text in rows:
            try:
                manifests.append(_parse_manifest(name, int(version), str(text)))
            except DamagedModelError as exc:
                damaged.append(exc)
        return ModelReport(name=name, manifests=manifests, aliases=aliases, damaged=damaged)

    def resolve(self, name: str, ref: int | str | None = None) -> int:
        """The version `ref` names: None the serving one (alias production, else the newest), digits a version,
        another string an alias."""
        check_name(name)
        with self._connection(f"resolving {name!r}") as conn:
            versions = self._versions(conn, name)
            if not versions:
                raise ModelNotFoundError(f"model {name!r} not found")
            if ref is not None and (isinstance(ref, int) or is_version_text(ref)):
                version = check_version(int(ref))
                if version not in versions:
                    raise VersionNotFoundError(f"model {name!r} has no version {version}; it has {versions}")
                return version
            if ref is not None:
                check_name(ref, "alias")
            aliases = self._aliases_of(conn, name)
        if ref is None:
            return aliases.get(PRODUCTION, versions[-1])
        if ref not in aliases:
            raise VersionNotFoundError(f"model {name!r} has no alias {ref!r}; it has {sorted(aliases)}")
        return aliases[ref]

    def load(self, name: str, ref: int | str | None = None) -> LoadedModel:
        """Load a version after checking its checkpoint against the manifest's sha256."""
        version = self.resolve(name, ref)
        manifest = self.manifest(name, version)
        if not manifest.has_checkpoint:
            raise IntegrityError(no_checkpoint(name, version))
        data = self._object(name, version, CHECKPOINT_FILE, manifest.sha256)
        try:
            module = torchscript.from_bytes(data)
        except Exception as exc:  # whatever a hash-matching but hostile archive makes the loader raise
            raise IntegrityError(f"{name} version {version} cannot be served: {exc}") from None
        return LoadedModel(manifest=manifest, module=module)

    def read_checked(self, name: str, version: int, filename: str, sha256: str) -> bytes:
        """A file of the version, refused (IntegrityError) unless it matches `sha256` (the manifest's checksum)."""
        try:
            data = self.read_version_file(name, version, filename)
        except FileNotFoundError:
            raise DamagedVersionError(name, f"versions/{version}/{filename}", "missing", version) from None
        digest = sha256_hex(data)
        if digest != sha256:
            raise IntegrityError(
                f"{name} version {version}: {filename} sha256 {digest} does not match the manifest's {sha256}; "
                "refusing to load it"
            )
        return data

    # ---- writing -----------------------------------------------------------------------

    def save(
        self,
        name: str,
        module: torchscript.ScriptModule | None,
        *,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        extra_files: Mapping[str, bytes] | None = None,
        sequence: SequenceSupport | None = None,
        onnx: OnnxExport | None = None,
        pt2: Pt2Export | None = None,
    ) -> Manifest:
        """Publish a new version of `name` whole, or not at all: its objects, then its rows in one transaction.
        `module` None publishes an imported ONNX model without a checkpoint (`onnx` names its file)."""
        check_name(name)
        extra = dict(extra_files or {})
        check_new_files(module is not None, extra, onnx, pt2, sequence)
        checkpoint = {} if module is None else {CHECKPOINT_FILE: torchscript.to_bytes(module)}
        files = {**checkpoint, **extra}
        digests = self._upload(files)
        main_file = CHECKPOINT_FILE if module is not None else onnx.file if onnx is not None else None
        assert main_file is not None, "check_new_files: a version without a module has its ONNX file"
        draft = Manifest(
            name=name,
            version=1,
            created_at="",
            sha256=digests[main_file],
            torch_version=torch.__version__,
            inputs=inputs,
            outputs=outputs,
            params=dict(params or {}),
            metrics=dict(metrics or {}),
            data=dict(data or {}),
            files=(*checkpoint, MANIFEST_FILE, *sorted(extra)),
            format=FORMAT if module is not None else ONNX_FORMAT,
            sequence=sequence,
            onnx=onnx,
            pt2=pt2,
        )
        with self._transaction(f"saving a version of {name!r}", notify=name) as conn:
            # The counter row is locked until the commit: a concurrent save of this model waits here.
            row = conn.execute(
                "INSERT INTO catalog_models (name, next_version) VALUES (%s, 2) ON CONFLICT (name) DO UPDATE "
                "SET next_version = catalog_models.next_version + 1 RETURNING next_version - 1",
                (name,),
            ).fetchone()
            assert row is not None
            version = check_version(int(row[0]))
            manifest = replace(draft, version=version, created_at=datetime.now(UTC).isoformat(timespec="milliseconds"))
            conn.execute(
                "INSERT INTO catalog_versions (model, version, manifest) VALUES (%s, %s, %s)",
                (name, version, manifest.to_json().decode()),
            )
            self._insert_files(conn, name, version, files, digests)
        return manifest

    @staticmethod
    def _insert_files(
        conn: Connection, name: str, version: int, files: Mapping[str, bytes], digests: Mapping[str, str]
    ) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO catalog_files (model, version, filename, sha256, size) VALUES (%s, %s, %s, %s, %s)",
                [(name, version, filename, digests[filename], len(content)) for filename, content in files.items()],
            )

    def add_onnx(
        self,
        name: str,
        version: int,
        onnx: OnnxExport,
        files: Mapping[str, bytes],
        checkpoint: str,
        pt2: Pt2Export | None = None,
    ) -> Manifest:
        """Give a published version ONNX files (or record why it has none), and `.pt2` files if `pt2` is given,
        leaving its checkpoint as it is; `checkpoint` is the sha256 the files were exported from, which the
        manifest must still name."""
        check_name(name)
        check_version(version)
        check_new_files(True, dict(files), onnx, pt2, None)
        digests = self._upload(files)
        with self._transaction(f"adding ONNX files to {name!r} version {version}", notify=name) as conn:
            manifest = _parse_manifest(name, version, self._version_row(conn, name, version, " FOR UPDATE"))
            if manifest.sha256 != checkpoint:
                raise IntegrityError(
                    f"{name} version {version}'s checkpoint is {manifest.sha256}, not the {checkpoint} exported from"
                )
            updated, stale = with_exports(manifest, files, onnx, pt2)
            conn.execute(
                "UPDATE catalog_versions SET manifest = %s WHERE model = %s AND version = %s",
                (updated.to_json().decode(), name, version),
            )
            conn.execute(
                "DELETE FROM catalog_files WHERE model = %s AND version = %s AND filename = ANY(%s)",
                (name, version, sorted(stale | set(files))),
            )
            self._insert_files(conn, name, version, files, digests)
        return updated

    def set_alias(self, name: str, alias: str, version: int) -> DamagedModelError | None:
        """Point `alias` at an existing version (None: there is no alias file here to find damaged)."""
        check_name(name)
        check_name(alias, "alias")
        check_version(version)
        with self._transaction(f"setting alias {alias!r} of {name!r}", notify=name) as conn:
            # FOR KEY SHARE: a delete of this version waits for the commit (and then finds the alias).
            self._version_row(conn, name, version, " FOR KEY SHARE")
            conn.execute(
                "INSERT INTO catalog_aliases (model, alias, version) VALUES (%s, %s, %s) "
                "ON CONFLICT (model, alias) DO UPDATE SET version = EXCLUDED.version",
                (name, alias, version),
            )
        return None

    def remove_alias(self, name: str, alias: str) -> None:
        """Drop `alias`; the model then serves its newest version unless another alias says otherwise."""
        check_name(name)
        check_name(alias, "alias")
        with self._transaction(f"removing alias {alias!r} of {name!r}", notify=name) as conn:
            if not self._versions(conn, name):
                raise ModelNotFoundError(f"model {name!r} not found")
            gone = conn.execute(
                "DELETE FROM catalog_aliases WHERE model = %s AND alias = %s RETURNING version", (name, alias)
            ).fetchone()
            if gone is None:
                aliases = self._aliases_of(conn, name)
                raise VersionNotFoundError(f"model {name!r} has no alias {alias!r}; it has {sorted(aliases)}")

    def delete(self, name: str, version: int) -> None:
        """Delete a version; refused while an alias points at it. Its number is never reused; its objects stay
        (another version may share them; an unreferenced object costs space, never correctness)."""
        check_name(name)
        check_version(version)
        with self._transaction(f"deleting {name!r} version {version}", notify=name) as conn:
            self._version_row(conn, name, version, " FOR UPDATE")
            holders = sorted(alias for alias, target in self._aliases_of(conn, name).items() if target == version)
            if holders:
                raise VersionInUseError(f"{name} version {version} is aliased by {holders}; point them elsewhere first")
            conn.execute("DELETE FROM catalog_versions WHERE model = %s AND version = %s", (name, version))


def _parse_manifest(name: str, version: int, text: str) -> Manifest:
    try:
        return Manifest.from_json(text)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        problem = f"not a valid manifest ({type(exc).__name__}: {str(exc)[:120]})"
        raise DamagedVersionError(name, f"versions/{version}/{MANIFEST_FILE}", problem, version) from None
