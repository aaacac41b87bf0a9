"""Store locations: the `Store` interface the service and training use, and `open_store`, which picks its backend.

A location is what `--store` / LSTM_STORE_DIR holds:

- a path (or file://PATH) and no database URL: ModelStore, the folder store (the embedded default);
- a path and a postgresql:// URL: CatalogStore, rows in PostgreSQL and files as objects in PATH/objects;
- s3://BUCKET/PREFIX and a postgresql:// URL: CatalogStore, files as objects in the bucket, cached per replica
  in `cache_dir`;
- s3:// without a database URL is refused: a bucket holds immutable objects, and the versions and aliases that
  name them need a database that several replicas can change safely.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from model_store import torchscript
from model_store.blobs import FolderBlobs
from model_store.change_feed import ChangeFeed
from model_store.errors import DamagedModelError
from model_store.manifest import Manifest, OnnxExport, Pt2Export, SequenceSupport, TensorSpec
from model_store.postgres import is_postgres_url
from model_store.store import LoadedModel, ModelReport, ModelStore, Scan

S3_SCHEME = "s3"
FILE_SCHEME = "file"
OBJECTS_FOLDER = "objects"  # below a folder location, where a database-backed store keeps its files
NEEDS_DATABASE = "an s3:// store needs LSTM_DATABASE_URL=postgresql://... (its versions and aliases are rows there)"


class Store(Protocol):
    """What the service and training use of a model store, whichever backend holds it."""

    def describe(self) -> str:
        """Where the store is, for messages (a folder, or 's3://bucket/prefix + postgresql://host/db')."""
        ...

    def changes(self) -> ChangeFeed | None:
        """A feed of the models that change, for a backend that can tell (None: poll for changes)."""
        ...

    def close(self) -> None:
        """Let go of what the store holds open (a database pool); the store is not used after."""
        ...

    def scan(self) -> Scan: ...

    def models(self) -> list[str]: ...

    def versions(self, name: str) -> list[int]: ...

    def manifest(self, name: str, version: int) -> Manifest: ...

    def read_version_file(self, name: str, version: int, filename: str) -> bytes: ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def inspect(self, name: str) -> ModelReport: ...

    def resolve(self, name: str, ref: int | str | None = None) -> int: ...

    def load(self, name: str, ref: int | str | None = None) -> LoadedModel: ...

    def read_checked(self, name: str, version: int, filename: str, sha256: str) -> bytes: ...

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
    ) -> Manifest: ...

    def add_onnx(
        self,
        name: str,
        version: int,
        onnx: OnnxExport,
        files: Mapping[str, bytes],
        checkpoint: str,
        pt2: Pt2Export | None = None,
    ) -> Manifest: ...

    def set_alias(self, name: str, alias: str, version: int) -> DamagedModelError | None: ...

    def remove_alias(self, name: str, alias: str) -> None: ...

    def delete(self, name: str, version: int) -> None: ...


def is_s3(location: str | os.PathLike[str]) -> bool:
    return urlsplit(os.fspath(location)).scheme == S3_SCHEME


def folder_of(location: str | os.PathLike[str]) -> Path | None:
    """The folder a location names (a path or file://PATH), or None for an s3:// one; ValueError for any other
    scheme (a typo such as s4:// must not become a folder named 's4:')."""
    text = os.fspath(location)
    parts = urlsplit(text)
    if parts.scheme == S3_SCHEME:
        return None
    if parts.scheme == FILE_SCHEME:
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file:// store location names a local folder, not a host: {text!r}")
        return Path(unquote(parts.path))
    if parts.scheme and "://" in text:
        raise ValueError(f"unknown store location {text!r}: expected a folder, file://PATH or s3://BUCKET/PREFIX")
    return Path(text)


def open_store(
    location: str | os.PathLike[str],
    database_url: str | None = None,
    cache_dir: Path | None = None,
    *,
    s3_connect_timeout: float = 5.0,
    s3_read_timeout: float = 30.0,
    s3_attempts: int = 3,
    pool_size: int = 4,
) -> Store:
    """The store at `location` (module docstring); ValueError, saying what is expected, for a location or
    database URL it cannot open. The S3 limits apply to an s3:// location only, `pool_size` (connections kept to
    the database) to a database-backed store only."""
    if database_url and not is_postgres_url(database_url):
        raise ValueError(f"LSTM_DATABASE_URL must be a postgresql:// URL, not {database_url.split(':', 1)[0]}:...")
    folder = folder_of(location)
    if folder is not None and not database_url:
        return ModelStore(folder)
    if not database_url:
        raise ValueError(NEEDS_DATABASE)
    from model_store.catalog_store import CatalogStore  # psycopg's pool is loaded only by who needs it

    if folder is not None:
        return CatalogStore(database_url, FolderBlobs(folder / OBJECTS_FOLDER), cache_dir=None, pool_size=pool_size)
    from model_store.s3_blobs import S3Blobs  # boto3 too

    blobs = S3Blobs.from_url(
        os.fspath(location), connect_timeout=s3_connect_timeout, read_timeout=s3_read_timeout, attempts=s3_attempts
    )
    return CatalogStore(database_url, blobs, cache_dir=cache_dir, pool_size=pool_size)
