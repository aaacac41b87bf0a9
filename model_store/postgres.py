"""PostgreSQL plumbing shared by every component that keeps rows there: connections, versioned migrations, errors.

Each component (the store's catalog, the training jobs) owns a folder of migration files named `NNNN_what.sql`.
`migrate` applies the ones a database has not seen, in order, each in its own transaction, under an advisory
lock, so replicas starting together apply each file once; what was applied is recorded in `lstm_schema`. A
migration is never edited once released: a change is a new file.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg

from model_store.errors import StorageError

MIGRATION_LOCK = 0x6C73746D  # 'lstm': the advisory lock that serialises migrations across replicas
MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
CONNECT_TIMEOUT_SECONDS = 10


def is_postgres_url(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in ("postgresql", "postgres")


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@contextlib.contextmanager
def database_errors(doing: str, url: str) -> Iterator[None]:
    """Turn a failure of the database itself (unreachable, shut down, out of space) into a StorageError naming
    `doing`; errors of our own SQL pass unchanged, as bugs."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"{doing}: the database at {redacted(url)} failed: {detail}") from exc


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """A new connection (StorageError when the server cannot be reached)."""
    with database_errors("connecting", url):
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_in(package: str) -> list[Migration]:
    """The migration files of a package folder (e.g. 'model_store.migrations'), in order."""
    found = []
    for entry in importlib.resources.files(package).iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{package} has two migrations with one number: {[m.name for m in found]}")
    return found


def migrate(url: str, component: str, migrations: list[Migration]) -> list[str]:
    """Apply the migrations of `component` the database has not seen; return the names applied."""
    applied: list[str] = []
    with database_errors(f"migrating the {component} schema", url), connect(url, autocommit=True) as conn:
        # A session lock for the whole run (the table's creation included): a replica starting at the same time
        # waits here, then finds every file applied. It is released when the connection closes, whatever happens.
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS lstm_schema (component text NOT NULL, version integer NOT NULL, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        for migration in migrations:
            with conn.transaction():
                seen = conn.execute(
                    "SELECT 1 FROM lstm_schema WHERE component = %s AND version = %s",
                    (component, migration.version),
                ).fetchone()
                if seen:
                    continue
                conn.execute(migration.sql.encode())  # bytes: several statements in one simple query
                conn.execute(
                    "INSERT INTO lstm_schema (component, version, name) VALUES (%s, %s, %s)",
                    (component, migration.version, migration.name),
                )
                applied.append(migration.name)
    return applied
