"""The settings that say where the model store is, shared by lstm-serve, lstm-worker and every lstm-train command.

`store_dir` (--store, LSTM_STORE_DIR) is a location: a folder (or file://PATH) for the folder store, or
s3://BUCKET/PREFIX, whose versions and aliases are rows in the PostgreSQL database of `database_url`
(model_store/locations.py says which backend each pair opens). This module imports no torch, so the service's
supervisor may import it; `open_store` imports the store itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    import model_store

DEFAULT_STORE = "model-store"
DEFAULT_CACHE = ".lstm-cache"
NEEDS_DATABASE = "an s3:// store needs LSTM_DATABASE_URL=postgresql://... (its versions and aliases are rows there)"
LOCATION_EXPECTED = "expected a folder, file://PATH or s3://BUCKET/PREFIX"


def _location_text(value: Any) -> Any:
    """A path given as a Path (tests, Settings(store_dir=tmp_path)) is its text: a location is a string."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


Location = Annotated[str, BeforeValidator(_location_text)]


def folder_of(location: str) -> Path | None:
    """The folder of a folder location (a path, file://PATH), None for s3://; ValueError for another scheme
    (a typo such as s4://bucket must not become a folder named 's4:'). model_store.locations.folder_of's twin
    without torch, for the processes that never open the store themselves."""
    parts = urlsplit(location)
    if parts.scheme == "s3":
        return None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file:// store location names a local folder, not a host: {location!r}")
        return Path(unquote(parts.path))
    if parts.scheme and "://" in location:
        raise ValueError(f"unknown store location {location!r}: {LOCATION_EXPECTED}")
    return Path(location)


class StoreSettings(BaseSettings):
    """Where the store is, and the limits of reaching it; the fields of every command that opens it."""

    model_config = SettingsConfigDict(env_prefix="LSTM_", extra="ignore")

    store_dir: Location = Field(
        DEFAULT_STORE,
        description="where the model store is: a folder (shared by all workers), or s3://BUCKET/PREFIX with "
        "LSTM_DATABASE_URL (docs/store.md)",
    )
    database_url: str | None = Field(
        None,
        description="unset: SQLite in the store folder (the embedded default); postgresql://...: versions, aliases "
        "and training jobs are rows in PostgreSQL (docs/scale-out.md); keep its password in PGPASSWORD or "
        "~/.pgpass rather than in the URL",
    )
    cache_dir: Path = Field(
        Path(DEFAULT_CACHE),
        description="with an s3:// store: this replica's copy of the files it has read (checked on every read, "
        "never pruned; docs/store.md), so a restart while S3 is away still loads them",
    )
    database_pool_size: int = Field(
        4, ge=1, le=64, description="connections to LSTM_DATABASE_URL each process keeps for the store"
    )
    s3_connect_timeout: float = Field(5.0, gt=0, le=300, description="seconds to connect to S3, per attempt")
    s3_read_timeout: float = Field(30.0, gt=0, le=3600, description="seconds to wait for S3's answer, per attempt")
    s3_attempts: int = Field(
        3, ge=1, le=20, description="attempts of each S3 request, the first included (with backoff between them)"
    )

    @model_validator(mode="after")
    def _location_opens(self) -> StoreSettings:
        folder = folder_of(self.store_dir)
        if folder is None and not self.database_url:
            raise ValueError(NEEDS_DATABASE)
        if self.database_url and urlsplit(self.database_url).scheme not in ("postgresql", "postgres"):
            raise ValueError("LSTM_DATABASE_URL must be a postgresql:// URL")
        return self

    @property
    def store_folder(self) -> Path | None:
        """The store's folder, or None when the store is in S3."""
        return folder_of(self.store_dir)

    def store_flags(self) -> list[str]:
        """The flags that hand this store to an lstm-train child (its environment holds no LSTM_ variables)."""
        return ["--store", self.store_dir, *self.reach_flags()]

    def reach_flags(self) -> list[str]:
        """store_flags() but --store: the database and S3 settings a child needs to reach the store."""
        flags: list[str] = []
        if self.database_url:
            flags += ["--database-url", self.database_url, "--database-pool-size", "1"]
        if self.store_folder is None:
            flags += [
                "--cache-dir", str(self.cache_dir),
                "--s3-connect-timeout", str(self.s3_connect_timeout),
                "--s3-read-timeout", str(self.s3_read_timeout),
                "--s3-attempts", str(self.s3_attempts),
            ]  # fmt: skip
        return flags


def database_problem(settings: StoreSettings, timeout: float = 10.0) -> str | None:
    """Why the store's database cannot be reached now (None: it answered, or there is none), so a server can say
    so in one line at start instead of failing in its first request's traceback. Torch-free, as the supervisor."""
    if not settings.database_url:
        return None
    import psycopg  # only for a database-backed store

    try:
        psycopg.connect(settings.database_url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as exc:
        parts = urlsplit(settings.database_url)
        shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()  # no user or password in messages
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot reach the store's database at {shown}: {detail}"
    return None


def open_store(settings: StoreSettings) -> model_store.Store:
    """The store these settings name (ValueError for one that cannot be opened; StorageError when it fails)."""
    import model_store

    return model_store.open_store(
        settings.store_dir,
        settings.database_url,
        settings.cache_dir,
        s3_connect_timeout=settings.s3_connect_timeout,
        s3_read_timeout=settings.s3_read_timeout,
        s3_attempts=settings.s3_attempts,
        pool_size=settings.database_pool_size,
    )
