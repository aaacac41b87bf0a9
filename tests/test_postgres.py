"""model_store.postgres against a real PostgreSQL server: versioned migrations, errors, URLs."""

from __future__ import annotations

import threading

import psycopg
import pytest

from model_store import StorageError
from model_store.postgres import Migration, connect, database_errors, migrate, redacted
from tests.postgres_server import PostgresServer

FIRST = Migration(1, "0001_things.sql", "CREATE TABLE things (id integer PRIMARY KEY); INSERT INTO things VALUES (1);")
SECOND = Migration(2, "0002_more.sql", "ALTER TABLE things ADD COLUMN label text;")


def test_migrations_apply_once_in_order(database_url: str) -> None:
    assert migrate(database_url, "test", [FIRST]) == ["0001_things.sql"]
    assert migrate(database_url, "test", [FIRST, SECOND]) == ["0002_more.sql"]
    assert migrate(database_url, "test", [FIRST, SECOND]) == []
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT id, label FROM things").fetchall() == [(1, None)]
        rows = conn.execute("SELECT component, version FROM lstm_schema ORDER BY version").fetchall()
    assert rows == [("test", 1), ("test", 2)]


def test_replicas_migrating_together_apply_each_file_once(database_url: str) -> None:
    applied: list[list[str]] = []
    threads = [
        threading.Thread(target=lambda: applied.append(migrate(database_url, "test", [FIRST]))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(applied) == [[], [], [], ["0001_things.sql"]]


def test_a_failed_migration_leaves_nothing_applied(database_url: str) -> None:
    broken = Migration(2, "0002_broken.sql", "ALTER TABLE things ADD COLUMN a text; SELECT no_such_function();")
    migrate(database_url, "test", [FIRST])
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate(database_url, "test", [FIRST, broken])
    with psycopg.connect(database_url) as conn:
        columns = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'things'")
        assert [name for (name,) in columns] == ["id"]
    assert migrate(database_url, "test", [FIRST, SECOND]) == ["0002_more.sql"]


def test_an_unreachable_database_is_a_storage_error_without_the_password() -> None:
    url = "postgresql://user:secret@127.0.0.1:1/nothing"
    with pytest.raises(StorageError) as caught:
        connect(url)
    assert "secret" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)


def test_a_server_that_stops_mid_session_is_a_storage_error() -> None:
    server = PostgresServer()
    server.start()
    try:
        conn = connect(server.url(), autocommit=True)
        server.stop()
        with pytest.raises(StorageError, match="the database at"), database_errors("reading", server.url()):
            conn.execute("SELECT 1")
    finally:
        server.close()


def test_redacted_hides_only_the_password() -> None:
    assert redacted("postgresql://me:pw@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redacted("postgresql://me@db/x") == "postgresql://me@db/x"
