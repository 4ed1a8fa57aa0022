"""``log-monitor-server migrate`` and the commands on both backends: a PostgreSQL database
gets its schema from ``migrate`` (``serve`` refuses one without it, in one sentence), an
SQLite data dir from before schema versions keeps its data and is upgraded, and
``add-user``, ``revoke``, ``delete-user`` and ``dump`` work the same on both."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

from harness.server_process import ServerProcess, server_cli
from server.local_cluster import LocalPostgres
from tests.support.cluster_parts import backend, postgres_engine, server_database

__all__ = ["backend", "postgres_engine", "server_database"]  # fixtures of cluster_parts

_numbers = itertools.count(1)

# The layout of server.sqlite3 before schema versions and installation binding.
OLD_SQLITE_SCHEMA = """
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, chunk_id TEXT, seq INTEGER,
    text TEXT NOT NULL, source_path TEXT, source_offset INTEGER, sent_at INTEGER,
    received_at INTEGER NOT NULL, identity TEXT NOT NULL, owner_id TEXT
);
CREATE UNIQUE INDEX chunks_by_chunk_id ON chunks (client_id, chunk_id) WHERE chunk_id IS NOT NULL;
CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE sessions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, created_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE refresh_tokens (jti TEXT PRIMARY KEY, session_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE guests (id TEXT PRIMARY KEY, client_id TEXT NOT NULL, hostname TEXT NOT NULL,
    created_at INTEGER NOT NULL);
INSERT INTO chunks (client_id, chunk_id, seq, text, received_at, identity)
    VALUES ('old-client', 'old-client:1', 1, 'kept from before
', 0, 'guest');
"""


def test_postgresql_serve_needs_migrate_which_is_idempotent(
    tmp_path: Path, postgres_engine: LocalPostgres
) -> None:
    url = postgres_engine.create_database(f"migrate_{next(_numbers)}")
    refused = server_cli(tmp_path / "d", "serve", "--port", "0", database=url)
    assert refused.returncode == 1
    message = refused.stderr.decode().strip().splitlines()[-1]
    assert message == (
        f"log-monitor-server: the database {url} has no schema; this server needs version 1:"
        " run log-monitor-server migrate --database URL."
    )
    assert b"Traceback" not in refused.stderr

    first = server_cli(tmp_path / "d", "migrate", database=url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode().strip() == f"{url}: schema version 0 -> 1"
    second = server_cli(tmp_path / "d", "migrate", database=url)
    assert second.stdout.decode().strip() == f"{url}: schema version 1, nothing to do"
    server = ServerProcess(tmp_path / "node", database=url).start()
    server.stop()


def test_an_sqlite_data_dir_from_before_schema_versions_keeps_its_data(tmp_path: Path) -> None:
    data = tmp_path / "server"
    data.mkdir()
    with sqlite3.connect(data / "server.sqlite3") as db:
        db.executescript(OLD_SQLITE_SCHEMA)
    migrated = server_cli(data, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.decode().strip() == f"{data / 'server.sqlite3'}: schema version 1"
    with sqlite3.connect(data / "server.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "client_owners" in tables
    assert server_cli(data, "dump").stdout == b"kept from before\n"
    # A file from a newer server is refused, not rewritten.
    with sqlite3.connect(data / "server.sqlite3") as db:
        db.execute("PRAGMA user_version=7")
    newer = server_cli(data, "dump")
    assert newer.returncode == 1
    assert b"schema version 7" in newer.stderr
    assert b"Traceback" not in newer.stderr


def test_user_commands_work_on_both_backends(tmp_path: Path, server_database: str | None) -> None:
    data = tmp_path / "server"

    def cli(*args: str, input_text: str | None = None) -> str:
        result = server_cli(data, *args, input_text=input_text, database=server_database)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode().strip()

    assert cli("add-user", "Bob", "--password-stdin", input_text="pw\n").startswith(
        "user Bob created ("
    )
    duplicate = server_cli(
        data, "add-user", "bob", "--password-stdin", input_text="pw\n", database=server_database
    )
    assert duplicate.returncode == 1
    assert duplicate.stderr.decode().strip() == (
        "log-monitor-server: a user named 'bob' exists already."
    )
    assert cli("add-user", "bob", "--update", "--password-stdin", input_text="pw2\n") == (
        "password of bob changed"
    )
    assert cli("revoke", "bob") == "revoked 0 session(s) of Bob"
    assert cli("delete-user", "bob") == "deleted user Bob; ended 0 session(s)"
    missing = server_cli(data, "revoke", "bob", database=server_database)
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == "log-monitor-server: no user named 'bob'."
    assert cli("dump") == ""


def test_a_database_that_cannot_be_used_is_one_sentence(tmp_path: Path) -> None:
    not_postgres = server_cli(tmp_path / "d", "dump", database="mysql://x")
    assert not_postgres.returncode == 1
    assert b"--database takes a postgresql:// URL" in not_postgres.stderr
    # Nothing listens on port 1; the password is never shown.
    unreachable = server_cli(
        tmp_path / "d", "dump", database="postgresql://someone:hunter2@127.0.0.1:1/db"
    )
    assert unreachable.returncode == 1
    error = unreachable.stderr.decode()
    assert error.startswith(
        "log-monitor-server: cannot connect to the database postgresql://someone@127.0.0.1:1/db"
    )
    assert "hunter2" not in error
    assert "Traceback" not in error
