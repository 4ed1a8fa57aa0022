"""Everything the reference server keeps on disk: chunks, users, sessions, guests, its secret.

One SQLite database in WAL mode (``server.sqlite3``) under the data dir, plus the JWT
signing secret in ``secret.key`` (mode 0600, created on first start). All database work
runs on one dedicated thread (:class:`ServerStore`'s executor): SQLite allows one writer at
a time anyway, and a single FIFO thread means chunks are committed in the order the
socket handlers submitted them. ``synchronous=FULL``: an acknowledgement promises the
chunk is stored, so the commit must survive a power cut, not only a killed process.

This module decides nothing about the protocol; it stores and answers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

DATABASE_NAME = "server.sqlite3"
SECRET_NAME = "secret.key"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    chunk_id TEXT,
    seq INTEGER,
    text TEXT NOT NULL,
    source_path TEXT,
    source_offset INTEGER,
    sent_at INTEGER,
    received_at INTEGER NOT NULL,
    identity TEXT NOT NULL,
    owner_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_by_chunk_id
    ON chunks (client_id, chunk_id) WHERE chunk_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS chunks_by_client_seq ON chunks (client_id, seq, id);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS guests (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""

P = ParamSpec("P")
T = TypeVar("T")


class StorageError(Exception):
    """The data dir cannot be used; the message is one sentence for a person."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class IncomingChunk:
    client_id: str
    chunk_id: str | None
    seq: int | None
    text: str
    source_path: str | None
    source_offset: int | None
    sent_at: int | None
    identity: str
    owner_id: str | None


@dataclass(frozen=True, slots=True)
class StoredChunk:
    client_id: str
    chunk_id: str | None
    seq: int | None
    text: str
    source_path: str | None
    source_offset: int | None
    sent_at: int | None
    received_at: int
    identity: str


class RefreshOutcome:
    """Why a refresh token was refused, or the session it continues."""

    OK = "ok"
    UNKNOWN = "unknown"
    REUSED = "reused"
    REVOKED = "revoked"


def now_ms() -> int:
    return int(time.time() * 1000)


def load_or_create_secret(data_dir: Path) -> bytes:
    """The HS256 signing secret; created with mode 0600 the first time the server starts."""
    path = data_dir / SECRET_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) < 32:
            raise StorageError(
                f"{path} is shorter than 32 bytes; remove it to make a new one."
            ) from None
        if os.name == "posix" and path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return secret
    secret = secrets.token_bytes(64)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
        handle.flush()
        os.fsync(handle.fileno())
    return secret


def open_data_dir(data_dir: Path) -> Path:
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StorageError(f"cannot create the data dir {data_dir}: {exc.strerror}") from None
    return data_dir


class Database:
    """Synchronous access to ``server.sqlite3``; used from one thread at a time."""

    def __init__(self, data_dir: Path) -> None:
        path = open_data_dir(data_dir) / DATABASE_NAME
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the server database {path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    # chunks

    def store_chunk(self, chunk: IncomingChunk) -> bool:
        """Commit one chunk; False when its ``chunk_id`` was stored before (a resend)."""
        cursor = self._db.execute(
            "INSERT INTO chunks (client_id, chunk_id, seq, text, source_path, source_offset,"
            " sent_at, received_at, identity, owner_id) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT DO NOTHING",
            (
                chunk.client_id,
                chunk.chunk_id,
                chunk.seq,
                chunk.text,
                chunk.source_path,
                chunk.source_offset,
                chunk.sent_at,
                now_ms(),
                chunk.identity,
                chunk.owner_id,
            ),
        )
        return cursor.rowcount == 1

    def client_ids(self) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT client_id FROM chunks ORDER BY client_id")
        return [row[0] for row in rows]

    def iter_chunks(self, client_id: str) -> Iterator[StoredChunk]:
        # seq orders chunks as the client committed them; chunks from a base client carry
        # no seq and keep the order they arrived in.
        rows = self._db.execute(
            "SELECT client_id, chunk_id, seq, text, source_path, source_offset, sent_at,"
            " received_at, identity FROM chunks WHERE client_id = ?"
            " ORDER BY seq IS NULL, seq, id",
            (client_id,),
        )
        for row in rows:
            yield StoredChunk(*row)

    def chunk_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    # users and sessions

    def add_user(self, username: str, password_hash: str) -> User:
        user = User(id=str(uuid.uuid4()), username=username, password_hash=password_hash)
        try:
            self._db.execute(
                "INSERT INTO users (id, username, password_hash, created_at) VALUES (?,?,?,?)",
                (user.id, user.username, user.password_hash, now_ms()),
            )
        except sqlite3.IntegrityError:
            raise StorageError(f"a user named {username!r} exists already.") from None
        return user

    def set_password(self, username: str, password_hash: str) -> bool:
        cursor = self._db.execute(
            "UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, username)
        )
        return cursor.rowcount == 1

    def find_user(self, username: str) -> User | None:
        row = self._db.execute(
            "SELECT id, username, password_hash FROM users WHERE username = ?", (username,)
        ).fetchone()
        return User(*row) if row else None

    def user_by_id(self, user_id: str) -> User | None:
        row = self._db.execute(
            "SELECT id, username, password_hash FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return User(*row) if row else None

    def start_session(
        self, session_id: str, user_id: str, refresh_jti: str, refresh_expires_at: int
    ) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO sessions (id, user_id, created_at) VALUES (?,?,?)",
                (session_id, user_id, now_ms()),
            )
            self._db.execute(
                "INSERT INTO refresh_tokens (jti, session_id, expires_at) VALUES (?,?,?)",
                (refresh_jti, session_id, refresh_expires_at),
            )

    def rotate_refresh(
        self, old_jti: str, session_id: str, new_jti: str, new_expires_at: int
    ) -> str:
        """Spend ``old_jti`` and record ``new_jti``; a second use revokes the whole session.

        Reuse of a spent refresh token means two parties hold it; revoking the session
        (refresh-token family) locks both out instead of guessing which one is genuine.
        """
        with self._transaction():
            row = self._db.execute(
                "SELECT r.used, s.revoked FROM refresh_tokens r JOIN sessions s"
                " ON s.id = r.session_id WHERE r.jti = ? AND r.session_id = ?",
                (old_jti, session_id),
            ).fetchone()
            if row is None:
                return RefreshOutcome.UNKNOWN
            used, revoked = row
            if revoked:
                return RefreshOutcome.REVOKED
            if used:
                self._db.execute("UPDATE sessions SET revoked = 1 WHERE id = ?", (session_id,))
                return RefreshOutcome.REUSED
            self._db.execute("UPDATE refresh_tokens SET used = 1 WHERE jti = ?", (old_jti,))
            self._db.execute(
                "INSERT INTO refresh_tokens (jti, session_id, expires_at) VALUES (?,?,?)",
                (new_jti, session_id, new_expires_at),
            )
        return RefreshOutcome.OK

    def revoke_session(self, session_id: str) -> None:
        self._db.execute("UPDATE sessions SET revoked = 1 WHERE id = ?", (session_id,))

    def revoke_user_sessions(self, user_id: str) -> int:
        cursor = self._db.execute(
            "UPDATE sessions SET revoked = 1 WHERE user_id = ? AND revoked = 0", (user_id,)
        )
        return cursor.rowcount

    def session_is_live(self, session_id: str) -> bool:
        row = self._db.execute(
            "SELECT revoked FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return row is not None and row[0] == 0

    # guests

    def add_guest(self, client_id: str, hostname: str) -> str:
        guest_id = str(uuid.uuid4())
        self._db.execute(
            "INSERT INTO guests (id, client_id, hostname, created_at) VALUES (?,?,?,?)",
            (guest_id, client_id, hostname, now_ms()),
        )
        return guest_id

    def guest_exists(self, guest_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM guests WHERE id = ?", (guest_id,)).fetchone()
            is not None
        )

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self._db = db

        def __enter__(self) -> None:
            self._db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> Database._Transaction:
        return Database._Transaction(self._db)


class ServerStore:
    """The server's :class:`Database` behind one FIFO thread, for asyncio callers."""

    def __init__(self, data_dir: Path) -> None:
        self.database = Database(data_dir)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-store")

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: function(*args, **kwargs))

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.database.close()
