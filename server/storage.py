"""What the reference server keeps: chunks, users, sessions, guests, installation
bindings, its signing secret; the :class:`Store` interface and its SQLite backend.

:class:`Store` is what the rest of the server uses, with two backends: SQLite here (the
embedded default: one file under the data dir) and PostgreSQL in
``server/storage_postgres.py`` (several nodes sharing one database). Both answer every
question the same way; the tests run the server suite on both.

SQLite: one database in WAL mode (``server.sqlite3``) under the data dir, plus the JWT
signing secret in ``secret.key`` (mode 0600, created on first start). All database work
runs on one dedicated thread (:class:`SqliteStore`'s executor): SQLite allows one writer at
a time anyway, and a single FIFO thread means chunks are committed in the order the
socket handlers submitted them. ``synchronous=FULL``: an acknowledgement promises the
chunk is stored, so the commit must survive a power cut, not only a killed process.
Chunks come in batches (:meth:`Store.commit_chunks`, fed by ``server/group_commit.py``):
one transaction, so one fsync, for every chunk of the batch. The schema is created or
upgraded when the file is opened (``PRAGMA user_version`` holds its version), so data
dirs from before versions keep working.

Installation binding (PROTOCOL.md, "Installation binding") is kept in ``client_owners``:
the guests and users a ``clientId`` belongs to. Each question about it (may this guest
use that id, may this user, may this login take it) is one method that reads and writes
in one transaction, so two handshakes racing for the same id cannot both win. Rows from
before the table existed have no owners: the first successful use binds them.

The records, the answers and the decisions both backends share (refresh rotation, who
may use a ``clientId``) are in ``server/storage_rows.py``, without I/O; each backend keeps
its SQL and its I/O. Here: :class:`Database` (the file, chunks, users, sessions, refresh
tokens) on :class:`SqliteBinding` (the installation binding questions).

This module decides nothing about the protocol; it stores and answers.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import os
import secrets
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from server.storage_rows import (
    GUEST,
    STORED_CHUNK_COLUMNS,
    USER,
    USER_COLUMNS,
    Admission,
    IncomingChunk,
    PendingChunk,
    RefreshOutcome,
    RefreshProof,
    StorageError,
    StoredChunk,
    StoreOutcome,
    User,
    guest_may_use,
    logout_handover,
    now_ms,
    refresh_refusal,
    stored_chunk_from_row,
    user_admission,
    user_from_row,
)

__all__ = [
    "DATABASE_NAME",
    "GUEST",
    "POSTGRESQL_SCHEMES",
    "SCHEMA_VERSION",
    "SECRET_NAME",
    "USER",
    "Admission",
    "Database",
    "IncomingChunk",
    "PendingChunk",
    "RefreshOutcome",
    "RefreshProof",
    "ServerStore",
    "SqliteBinding",
    "SqliteStore",
    "StorageError",
    "Store",
    "StoreOutcome",
    "StoredChunk",
    "User",
    "is_postgresql_url",
    "load_or_create_secret",
    "now_ms",
    "open_data_dir",
    "open_store",
]

DATABASE_NAME = "server.sqlite3"
SECRET_NAME = "secret.key"

SCHEMA_VERSION = 1
"""The schema this server writes. Version 1 is the layout below; data dirs from before
versions (``user_version`` 0) have it already, or the part the script adds."""

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
CREATE INDEX IF NOT EXISTS guests_by_client_id ON guests (client_id);
CREATE TABLE IF NOT EXISTS client_owners (
    client_id TEXT NOT NULL,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('guest', 'user')),
    owner_id TEXT NOT NULL,
    bound_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, owner_kind, owner_id)
) WITHOUT ROWID;
"""

P = ParamSpec("P")
T = TypeVar("T")


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


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; nested uses join the outer transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._outermost = False

    def __enter__(self) -> None:
        self._outermost = not self._db.in_transaction
        if self._outermost:
            self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._outermost:
            return
        if exc_type is not None:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # A failed COMMIT (disk full, I/O error) can leave the transaction open:
            # end it, so the next one starts clean.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


class SqliteBinding:
    """Installation binding on ``server.sqlite3`` (PROTOCOL.md, "Installation binding"):
    each question reads and writes in one ``BEGIN IMMEDIATE`` transaction, so two
    handshakes racing for the same id cannot both win; ``storage_rows`` decides."""

    _db: sqlite3.Connection

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def session_is_live(self, session_id: str) -> bool:
        """The session exists, is not revoked, and its user still exists."""
        row = self._db.execute(
            "SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE s.id = ? AND s.revoked = 0",
            (session_id,),
        ).fetchone()
        return row is not None

    def revoke_session(self, session_id: str) -> None:
        self._db.execute("UPDATE sessions SET revoked = 1 WHERE id = ?", (session_id,))

    def guest_exists(self, guest_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM guests WHERE id = ?", (guest_id,)).fetchone()
            is not None
        )

    def _insert_guest(self, guest_id: str, client_id: str, hostname: str) -> None:
        self._db.execute(
            "INSERT INTO guests (id, client_id, hostname, created_at) VALUES (?,?,?,?)",
            (guest_id, client_id, hostname, now_ms()),
        )
        self._bind(client_id, GUEST, guest_id)

    def owners(self, client_id: str) -> set[tuple[str, str]]:
        """``(kind, id)`` of every guest and user ``client_id`` belongs to."""
        rows = self._db.execute(
            "SELECT owner_kind, owner_id FROM client_owners WHERE client_id = ?", (client_id,)
        )
        return {(kind, owner) for kind, owner in rows}

    def _bind(self, client_id: str, kind: str, owner_id: str) -> None:
        self._db.execute(
            "INSERT INTO client_owners (client_id, owner_kind, owner_id, bound_at)"
            " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
            (client_id, kind, owner_id, now_ms()),
        )

    def _is_claimed(self, client_id: str) -> bool:
        """Someone owns ``client_id``, or a guest was issued for it before binding existed."""
        if self.owners(client_id):
            return True
        row = self._db.execute(
            "SELECT 1 FROM guests WHERE client_id = ? LIMIT 1", (client_id,)
        ).fetchone()
        return row is not None

    def _guest_may_use(self, guest_id: str, client_id: str, owners: set[tuple[str, str]]) -> bool:
        row = self._db.execute("SELECT client_id FROM guests WHERE id = ?", (guest_id,)).fetchone()
        return guest_may_use(None if row is None else row[0], guest_id, client_id, owners)

    def claim_for_new_guest(self, client_id: str, hostname: str) -> str | None:
        """A new guest owning ``client_id``, or None when the id is claimed already."""
        guest_id = str(uuid.uuid4())
        with self._transaction():
            if self._is_claimed(client_id):
                return None
            self._insert_guest(guest_id, client_id, hostname)
        return guest_id

    def admit_guest(self, guest_id: str, client_id: str) -> Admission:
        with self._transaction():
            if not self.guest_exists(guest_id):
                return Admission.UNKNOWN_GUEST
            owners = self.owners(client_id)
            if not self._guest_may_use(guest_id, client_id, owners):
                return Admission.MISMATCH
            self._bind(client_id, GUEST, guest_id)
        return Admission.OK

    def admit_user(self, user_id: str, session_id: str, client_id: str) -> Admission:
        """A user's handshake: the session must be live and the id theirs, or free."""
        with self._transaction():
            if not self.session_is_live(session_id):
                return Admission.SESSION_ENDED
            admission, bind = user_admission(user_id, self.owners(client_id))
            if bind:
                self._bind(client_id, USER, user_id)
        return admission

    def bind_at_login(
        self,
        user_id: str,
        client_id: str,
        guest_proof: str | None,
        refresh_proof: RefreshProof | None,
    ) -> bool:
        """Let the user signing in use ``client_id``; False when it is not theirs to take.

        A claimed id is shared with the user only when the login shows the credentials of
        one of its owners: the token of a guest that may use it, or a live, unspent
        refresh token of a user who owns it. The owners keep it: the installation's own
        guest token goes on working after the user signs out."""
        with self._transaction():
            owners = self.owners(client_id)
            if (USER, user_id) in owners:
                return True
            if self._is_claimed(client_id):
                proven = False
                if guest_proof is not None and self._guest_may_use(guest_proof, client_id, owners):
                    self._bind(client_id, GUEST, guest_proof)
                    proven = True
                elif (
                    refresh_proof is not None
                    and (USER, refresh_proof.user_id) in owners
                    and self._refresh_is_current(refresh_proof)
                ):
                    proven = True
                if not proven:
                    return False
            self._bind(client_id, USER, user_id)
        return True

    def end_session(
        self, session_id: str, jti: str, user_id: str, client_id: str | None
    ) -> str | None:
        """Logout: revoke the session and take ``client_id`` from the user.

        When the token was the session's current one, the user owned ``client_id`` and no
        guest owns it (the user signed in before the installation ever connected), a new
        guest is made its owner and returned, so the installation keeps its id; otherwise
        None (an installation whose guest owns the id goes on with its own guest token).
        """
        with self._transaction():
            current = self._refresh_is_current(RefreshProof(user_id, session_id, jti))
            self.revoke_session(session_id)
            if not current or not client_id:
                return None
            unbind, new_guest = logout_handover(user_id, self.owners(client_id))
            if not unbind:
                return None
            self._db.execute(
                "DELETE FROM client_owners WHERE client_id = ? AND owner_kind = ? AND owner_id = ?",
                (client_id, USER, user_id),
            )
            if not new_guest:
                return None
            guest_id = str(uuid.uuid4())
            self._insert_guest(guest_id, client_id, "")
        return guest_id

    def _refresh_is_current(self, proof: RefreshProof) -> bool:
        """The refresh token is unspent, in a live session of ``proof.user_id``."""
        row = self._db.execute(
            "SELECT 1 FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
            " JOIN users u ON u.id = s.user_id"
            " WHERE r.jti = ? AND r.session_id = ? AND r.used = 0 AND s.revoked = 0"
            " AND s.user_id = ?",
            (proof.jti, proof.session_id, proof.user_id),
        ).fetchone()
        return row is not None


class Database(SqliteBinding):
    """Synchronous access to ``server.sqlite3``; used from one thread at a time."""

    def __init__(self, data_dir: Path) -> None:
        path = open_data_dir(data_dir) / DATABASE_NAME
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"the server database {path} has schema version {version}; this server"
                    f" knows versions up to {SCHEMA_VERSION}: run a newer log-monitor-server."
                )
            # Every open: tables added since (client_owners) appear in older files.
            self._db.executescript(_SCHEMA)
            if version < SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open the server database {path}: {exc}") from None
        self.path = path

    def close(self) -> None:
        self._db.close()

    # chunks

    def store_chunk(self, chunk: IncomingChunk, session_id: str | None = None) -> StoreOutcome:
        """Commit one chunk; ``DUPLICATE`` when its ``chunk_id`` was stored before.

        With ``session_id`` (a user's connection) the chunk is stored only while that
        session is live, so a ``revoke`` or ``delete-user`` stops an open connection at
        its next chunk rather than when its access token expires.
        """
        if session_id is not None and not self.session_is_live(session_id):
            return StoreOutcome.SESSION_ENDED
        return self._insert_chunk(chunk)

    def commit_chunks(self, batch: Sequence[PendingChunk]) -> list[StoreOutcome]:
        """Store a batch in one transaction (one fsync); an outcome per chunk, in order.

        If the commit fails, nothing of the batch is stored and the error is raised: every
        chunk of it is answered with an error and sent again."""
        outcomes: list[StoreOutcome] = []
        live: dict[str, bool] = {}
        with self._transaction():
            for pending in batch:
                session_id = pending.session_id
                if session_id is not None:
                    if session_id not in live:
                        live[session_id] = self.session_is_live(session_id)
                    if not live[session_id]:
                        outcomes.append(StoreOutcome.SESSION_ENDED)
                        continue
                outcomes.append(self._insert_chunk(pending.chunk))
        return outcomes

    def _insert_chunk(self, chunk: IncomingChunk) -> StoreOutcome:
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
        return StoreOutcome.STORED if cursor.rowcount == 1 else StoreOutcome.DUPLICATE

    def client_ids(self) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT client_id FROM chunks ORDER BY client_id")
        return [row[0] for row in rows]

    def iter_chunks(self, client_id: str) -> Iterator[StoredChunk]:
        # seq orders chunks as the client committed them; chunks from a base client carry
        # no seq and keep the order they arrived in.
        rows = self._db.execute(
            f"SELECT {STORED_CHUNK_COLUMNS} FROM chunks WHERE client_id = ?"
            " ORDER BY seq IS NULL, seq, id",
            (client_id,),
        )
        for row in rows:
            yield stored_chunk_from_row(row)

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
            f"SELECT {USER_COLUMNS} FROM users WHERE username = ?", (username,)
        ).fetchone()
        return user_from_row(row)

    def user_by_id(self, user_id: str) -> User | None:
        row = self._db.execute(
            f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return user_from_row(row)

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
        """Spend ``old_jti`` and record ``new_jti``; a second use revokes the whole session
        (``storage_rows.refresh_refusal``)."""
        with self._transaction():
            row = self._db.execute(
                "SELECT r.used, s.revoked FROM refresh_tokens r JOIN sessions s"
                " ON s.id = r.session_id WHERE r.jti = ? AND r.session_id = ?",
                (old_jti, session_id),
            ).fetchone()
            if row is None:
                return RefreshOutcome.UNKNOWN
            refusal = refresh_refusal(used=bool(row[0]), revoked=bool(row[1]))
            if refusal == RefreshOutcome.REUSED:
                self.revoke_session(session_id)
            if refusal is not None:
                return refusal
            self._db.execute("UPDATE refresh_tokens SET used = 1 WHERE jti = ?", (old_jti,))
            self._db.execute(
                "INSERT INTO refresh_tokens (jti, session_id, expires_at) VALUES (?,?,?)",
                (new_jti, session_id, new_expires_at),
            )
        return RefreshOutcome.OK

    def revoke_user_sessions(self, user_id: str) -> int:
        cursor = self._db.execute(
            "UPDATE sessions SET revoked = 1 WHERE user_id = ? AND revoked = 0", (user_id,)
        )
        return cursor.rowcount

    def delete_user(self, username: str) -> tuple[User, int] | None:
        """Delete a user and end every session of theirs; None when there is no such user.

        Their chunks stay (they are data, not credentials), and so do the bindings of
        their ``clientId``s: an installation bound only to a deleted user is bound to no
        one who can prove it, so it takes a new id rather than its id going to the next
        peer who asks.
        """
        with self._transaction():
            user = self.find_user(username)
            if user is None:
                return None
            ended = self.revoke_user_sessions(user.id)
            self._db.execute("DELETE FROM users WHERE id = ?", (user.id,))
        return user, ended


class Store(abc.ABC):
    """The server's storage, for asyncio callers: one interface, two backends.

    Every method that decides something (binding, rotation, admission) reads and writes in
    one transaction of the backend, so callers on any node racing for the same row get
    one answer each, as if they had come one after another.
    """

    backend: str
    """``"sqlite"`` or ``"postgresql"``."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (the SQLite backend is open from its constructor)."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Close at once, from outside any event loop (what ``aclose`` does gracefully)."""

    @property
    def database(self) -> Database:
        """SQLite's synchronous :class:`Database`, for tools and tests that set up a store
        before serving; the PostgreSQL backend has none."""
        raise StorageError(f"the {self.backend} store has no synchronous database.")

    @abc.abstractmethod
    async def signing_secret(self) -> bytes:
        """The HS256 secret every node signs and checks tokens with."""

    @abc.abstractmethod
    async def commit_chunks(self, batch: Sequence[PendingChunk]) -> list[StoreOutcome]: ...

    @abc.abstractmethod
    async def client_ids(self) -> list[str]: ...

    @abc.abstractmethod
    def iter_chunks(self, client_id: str) -> AsyncIterator[StoredChunk]:
        """Chunks of ``client_id`` in ``seq`` order (chunks without one last)."""

    @abc.abstractmethod
    async def chunk_count(self) -> int: ...

    @abc.abstractmethod
    async def add_user(self, username: str, password_hash: str) -> User: ...

    @abc.abstractmethod
    async def set_password(self, username: str, password_hash: str) -> bool: ...

    @abc.abstractmethod
    async def find_user(self, username: str) -> User | None: ...

    @abc.abstractmethod
    async def user_by_id(self, user_id: str) -> User | None: ...

    @abc.abstractmethod
    async def start_session(
        self, session_id: str, user_id: str, refresh_jti: str, refresh_expires_at: int
    ) -> None: ...

    @abc.abstractmethod
    async def rotate_refresh(
        self, old_jti: str, session_id: str, new_jti: str, new_expires_at: int
    ) -> str: ...

    @abc.abstractmethod
    async def revoke_user_sessions(self, user_id: str) -> int: ...

    @abc.abstractmethod
    async def delete_user(self, username: str) -> tuple[User, int] | None: ...

    @abc.abstractmethod
    async def session_is_live(self, session_id: str) -> bool: ...

    @abc.abstractmethod
    async def claim_for_new_guest(self, client_id: str, hostname: str) -> str | None: ...

    @abc.abstractmethod
    async def admit_guest(self, guest_id: str, client_id: str) -> Admission: ...

    @abc.abstractmethod
    async def admit_user(self, user_id: str, session_id: str, client_id: str) -> Admission: ...

    @abc.abstractmethod
    async def bind_at_login(
        self,
        user_id: str,
        client_id: str,
        guest_proof: str | None,
        refresh_proof: RefreshProof | None,
    ) -> bool: ...

    @abc.abstractmethod
    async def end_session(
        self, session_id: str, jti: str, user_id: str, client_id: str | None
    ) -> str | None: ...


class SqliteStore(Store):
    """The SQLite :class:`Database` behind one FIFO thread, for asyncio callers."""

    backend = "sqlite"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._database = Database(data_dir)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-store")

    @property
    def database(self) -> Database:
        return self._database

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: function(*args, **kwargs))

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.database.close()

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def signing_secret(self) -> bytes:
        return load_or_create_secret(self.data_dir)

    async def commit_chunks(self, batch: Sequence[PendingChunk]) -> list[StoreOutcome]:
        return await self.run(self.database.commit_chunks, batch)

    async def client_ids(self) -> list[str]:
        return await self.run(self.database.client_ids)

    async def iter_chunks(self, client_id: str) -> AsyncIterator[StoredChunk]:
        rows = self.database.iter_chunks(client_id)
        while True:
            # A page at a time on the store's thread: a dump of millions of chunks never
            # sits in memory whole.
            page = await self.run(lambda: list(itertools.islice(rows, 1000)))
            if not page:
                return
            for row in page:
                yield row

    async def chunk_count(self) -> int:
        return await self.run(self.database.chunk_count)

    async def add_user(self, username: str, password_hash: str) -> User:
        return await self.run(self.database.add_user, username, password_hash)

    async def set_password(self, username: str, password_hash: str) -> bool:
        return await self.run(self.database.set_password, username, password_hash)

    async def find_user(self, username: str) -> User | None:
        return await self.run(self.database.find_user, username)

    async def user_by_id(self, user_id: str) -> User | None:
        return await self.run(self.database.user_by_id, user_id)

    async def start_session(
        self, session_id: str, user_id: str, refresh_jti: str, refresh_expires_at: int
    ) -> None:
        await self.run(
            self.database.start_session, session_id, user_id, refresh_jti, refresh_expires_at
        )

    async def rotate_refresh(
        self, old_jti: str, session_id: str, new_jti: str, new_expires_at: int
    ) -> str:
        return await self.run(
            self.database.rotate_refresh, old_jti, session_id, new_jti, new_expires_at
        )

    async def revoke_user_sessions(self, user_id: str) -> int:
        return await self.run(self.database.revoke_user_sessions, user_id)

    async def delete_user(self, username: str) -> tuple[User, int] | None:
        return await self.run(self.database.delete_user, username)

    async def session_is_live(self, session_id: str) -> bool:
        return await self.run(self.database.session_is_live, session_id)

    async def claim_for_new_guest(self, client_id: str, hostname: str) -> str | None:
        return await self.run(self.database.claim_for_new_guest, client_id, hostname)

    async def admit_guest(self, guest_id: str, client_id: str) -> Admission:
        return await self.run(self.database.admit_guest, guest_id, client_id)

    async def admit_user(self, user_id: str, session_id: str, client_id: str) -> Admission:
        return await self.run(self.database.admit_user, user_id, session_id, client_id)

    async def bind_at_login(
        self,
        user_id: str,
        client_id: str,
        guest_proof: str | None,
        refresh_proof: RefreshProof | None,
    ) -> bool:
        return await self.run(
            self.database.bind_at_login, user_id, client_id, guest_proof, refresh_proof
        )

    async def end_session(
        self, session_id: str, jti: str, user_id: str, client_id: str | None
    ) -> str | None:
        return await self.run(self.database.end_session, session_id, jti, user_id, client_id)


ServerStore = SqliteStore
"""The name the embedded default's callers know."""

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")


def is_postgresql_url(database: str | None) -> bool:
    return database is not None and database.startswith(POSTGRESQL_SCHEMES)


def open_store(database: str | None, data_dir: Path) -> Store:
    """The store a ``--database`` names: a PostgreSQL URL, or None for SQLite in
    ``data_dir``. Not yet connected: call :meth:`Store.open` on the loop that uses it."""
    if database is None:
        return SqliteStore(open_data_dir(data_dir))
    if is_postgresql_url(database):
        from server.storage_postgres import PostgresStore

        return PostgresStore(database)
    raise StorageError(
        "--database takes a postgresql:// URL (without it, the data dir's SQLite file is used)."
    )
