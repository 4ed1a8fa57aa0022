"""The PostgreSQL backend of :class:`server.storage.Store`: several server nodes, one
database (``--database postgresql://…``), through asyncpg.

Same tables as the SQLite backend, plus the signing secret (``server_secret``, so every
node signs and checks the same tokens) and ``schema_version``. ``log-monitor-server
migrate`` creates or upgrades the schema (:func:`migrate`, under an advisory lock, so
several nodes or commands running it at once do it once); ``serve`` refuses a database
whose schema is missing or older, and says to run ``migrate``.

What keeps nodes from stepping on each other:

- **Chunks**: ``id`` is an identity column, unique across nodes; a chunk's ``chunkId`` is
  unique per ``clientId`` (a unique index) and ``INSERT … ON CONFLICT DO NOTHING`` makes a
  resend a duplicate, whichever node it reaches. A batch is one multi-row insert in one
  transaction.
- **Refresh rotation**: a conditional update (``SET used = true … WHERE NOT used``) spends a
  token; two nodes presenting it at once are serialized on its row, and the second finds
  it spent: exactly one rotation wins, and the other is a reuse (the session is revoked).
- **Installation binding**: each question about a ``clientId`` takes a transaction-scoped
  advisory lock on that id first, so two handshakes racing for it, on any nodes, are
  answered one after the other (what ``BEGIN IMMEDIATE`` does for SQLite).

Chunk text, ``chunkId`` and source path are ``bytea`` (their UTF-8): PostgreSQL's ``text``
cannot hold U+0000, and the protocol lets a chunk carry it; ``dump`` stays byte exact.

This module keeps the SQL and the I/O; the records, the row mapping and the decisions
(rotation, binding, repeats within a batch) are ``server/storage_rows.py``'s, shared with
the SQLite backend.
"""

from __future__ import annotations

import abc
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from server.storage import Store
from server.storage_rows import (
    GUEST,
    STORED_CHUNK_COLUMNS,
    USER,
    USER_COLUMNS,
    Admission,
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
    repeats_in_batch,
    stored_chunk_from_row,
    user_admission,
    user_from_row,
)

SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id TEXT NOT NULL,
    chunk_id BYTEA,
    seq BIGINT,
    text BYTEA NOT NULL,
    source_path BYTEA,
    source_offset BIGINT,
    sent_at BIGINT,
    received_at BIGINT NOT NULL,
    identity TEXT NOT NULL,
    owner_id TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_by_chunk_id
    ON chunks (client_id, chunk_id) WHERE chunk_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS chunks_by_client_seq ON chunks (client_id, seq, id);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS users_by_name ON users (lower(username));
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    jti TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE IF NOT EXISTS guests (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS guests_by_client_id ON guests (client_id);
CREATE TABLE IF NOT EXISTS client_owners (
    client_id TEXT NOT NULL,
    owner_kind TEXT NOT NULL CHECK (owner_kind IN ('guest', 'user')),
    owner_id TEXT NOT NULL,
    bound_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, owner_kind, owner_id)
);
CREATE TABLE IF NOT EXISTS server_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret BYTEA NOT NULL
);
"""

# Version n's script upgrades version n - 1; 1 creates everything.
_MIGRATIONS = {1: _SCHEMA_V1}

# One number for "the schema is being changed", shared by every node and command.
_MIGRATION_LOCK = 0x6C6F676D  # "logm"


def shown_url(url: str) -> str:
    """The database URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, ""))


def _storable(text: str) -> str:
    """``text`` for a PostgreSQL ``text`` column, which holds no U+0000 (a hostname from a
    query string can carry %00)."""
    return text.replace("\x00", "\ufffd")


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise StorageError(f"cannot connect to the database {shown_url(url)}: {exc}") from None


async def schema_version(connection: asyncpg.Connection) -> int:
    exists = await connection.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    version = await connection.fetchval("SELECT max(version) FROM schema_version")
    return int(version or 0)


async def migrate(url: str) -> tuple[int, int]:
    """Create or upgrade the schema; returns the versions before and after."""
    connection = await _connect(url)
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            before = await schema_version(connection)
            if before > SCHEMA_VERSION:
                raise StorageError(
                    f"the database has schema version {before}; this server knows versions"
                    f" up to {SCHEMA_VERSION}: run a newer log-monitor-server."
                )
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            for version in range(before + 1, SCHEMA_VERSION + 1):
                await connection.execute(_MIGRATIONS[version])
                await connection.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    version,
                    now_ms(),
                )
            # The signing secret: made once, by whichever migrate comes first.
            await connection.execute(
                "INSERT INTO server_secret (id, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
                secrets.token_bytes(64),
            )
    except asyncpg.PostgresError as exc:
        raise StorageError(f"cannot migrate the database {shown_url(url)}: {exc}") from None
    finally:
        await connection.close()
    return before, SCHEMA_VERSION


class PostgresBinding(abc.ABC):
    """Installation binding on PostgreSQL (PROTOCOL.md, "Installation binding"): each
    question takes the ``clientId``'s advisory lock in its transaction first, so two
    handshakes racing for the id, on any nodes, are answered one after the other."""

    @property
    @abc.abstractmethod
    def pool(self) -> asyncpg.Pool: ...

    async def claim_for_new_guest(self, client_id: str, hostname: str) -> str | None:
        guest_id = str(uuid.uuid4())
        async with self.pool.acquire() as connection, connection.transaction():
            await _lock_client_id(connection, client_id)
            if await _is_claimed(connection, client_id):
                return None
            await _insert_guest(connection, guest_id, client_id, hostname)
        return guest_id

    async def admit_guest(self, guest_id: str, client_id: str) -> Admission:
        guest_id = _storable(guest_id)
        async with self.pool.acquire() as connection, connection.transaction():
            await _lock_client_id(connection, client_id)
            exists = await connection.fetchval("SELECT 1 FROM guests WHERE id = $1", guest_id)
            if not exists:
                return Admission.UNKNOWN_GUEST
            owners = await _owners(connection, client_id)
            if not await _guest_may_use(connection, guest_id, client_id, owners):
                return Admission.MISMATCH
            await _bind(connection, client_id, GUEST, guest_id)
        return Admission.OK

    async def admit_user(self, user_id: str, session_id: str, client_id: str) -> Admission:
        async with self.pool.acquire() as connection, connection.transaction():
            await _lock_client_id(connection, client_id)
            if not await _session_is_live(connection, session_id):
                return Admission.SESSION_ENDED
            admission, bind = user_admission(user_id, await _owners(connection, client_id))
            if bind:
                await _bind(connection, client_id, USER, user_id)
        return admission

    async def bind_at_login(
        self,
        user_id: str,
        client_id: str,
        guest_proof: str | None,
        refresh_proof: RefreshProof | None,
    ) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            await _lock_client_id(connection, client_id)
            owners = await _owners(connection, client_id)
            if (USER, user_id) in owners:
                return True
            if await _is_claimed(connection, client_id):
                proven = False
                if guest_proof is not None and await _guest_may_use(
                    connection, _storable(guest_proof), client_id, owners
                ):
                    await _bind(connection, client_id, GUEST, _storable(guest_proof))
                    proven = True
                elif (
                    refresh_proof is not None
                    and (USER, refresh_proof.user_id) in owners
                    and await _refresh_is_current(connection, refresh_proof)
                ):
                    proven = True
                if not proven:
                    return False
            await _bind(connection, client_id, USER, user_id)
        return True

    async def end_session(
        self, session_id: str, jti: str, user_id: str, client_id: str | None
    ) -> str | None:
        session_id, jti, user_id = _storable(session_id), _storable(jti), _storable(user_id)
        async with self.pool.acquire() as connection, connection.transaction():
            if client_id:
                await _lock_client_id(connection, client_id)
            current = await _refresh_is_current(connection, RefreshProof(user_id, session_id, jti))
            await connection.execute("UPDATE sessions SET revoked = TRUE WHERE id = $1", session_id)
            if not current or not client_id:
                return None
            unbind, new_guest = logout_handover(user_id, await _owners(connection, client_id))
            if not unbind:
                return None
            await connection.execute(
                "DELETE FROM client_owners WHERE client_id = $1 AND owner_kind = $2"
                " AND owner_id = $3",
                client_id,
                USER,
                user_id,
            )
            if not new_guest:
                return None
            guest_id = str(uuid.uuid4())
            await _insert_guest(connection, guest_id, client_id, "")
        return guest_id


class PostgresStore(PostgresBinding, Store):
    """The PostgreSQL backend; see the module docstring."""

    backend = "postgresql"

    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        connection = await _connect(self.url)
        try:
            version = await schema_version(connection)
        finally:
            await connection.close()
        if version != SCHEMA_VERSION:
            state = "has no schema" if version == 0 else f"has schema version {version}"
            raise StorageError(
                f"the database {shown_url(self.url)} {state}; this server needs version"
                f" {SCHEMA_VERSION}: run log-monitor-server migrate --database URL."
            )
        self._pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self._pool_size, timeout=10
        )

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("the database is not open.")
        return self._pool

    async def signing_secret(self) -> bytes:
        secret = await self.pool.fetchval("SELECT secret FROM server_secret WHERE id = 1")
        if secret is None or len(secret) < 32:
            raise StorageError("the database has no signing secret: run migrate.")
        return bytes(secret)

    # chunks

    async def commit_chunks(self, batch: Sequence[PendingChunk]) -> list[StoreOutcome]:
        async with self.pool.acquire() as connection, connection.transaction():
            session_ids = list({p.session_id for p in batch if p.session_id is not None})
            live: set[str] = set()
            if session_ids:
                rows = await connection.fetch(
                    "SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id"
                    " WHERE s.id = ANY($1::text[]) AND NOT s.revoked",
                    session_ids,
                )
                live = {row["id"] for row in rows}
            # One row per chunkId: a second copy in the same batch is a duplicate of the
            # first (one multi-row insert cannot say which copy it kept).
            outcomes = repeats_in_batch(batch, live)
            inserted = [index for index, outcome in enumerate(outcomes) if outcome is None]
            if inserted:
                chunks = [batch[i].chunk for i in inserted]
                stored = await connection.fetch(
                    "INSERT INTO chunks (" + STORED_CHUNK_COLUMNS + ", owner_id)"
                    " SELECT c, i, s, t, p, o, a, $8, d, w FROM unnest("
                    "$1::text[], $2::bytea[], $3::int8[], $4::bytea[], $5::bytea[],"
                    " $6::int8[], $7::int8[], $9::text[], $10::text[])"
                    " WITH ORDINALITY AS u(c, i, s, t, p, o, a, d, w, n) ORDER BY n"
                    " ON CONFLICT DO NOTHING RETURNING client_id, chunk_id",
                    [c.client_id for c in chunks],
                    [None if c.chunk_id is None else c.chunk_id.encode() for c in chunks],
                    [c.seq for c in chunks],
                    [c.text.encode() for c in chunks],
                    [None if c.source_path is None else c.source_path.encode() for c in chunks],
                    [c.source_offset for c in chunks],
                    [c.sent_at for c in chunks],
                    now_ms(),
                    [c.identity for c in chunks],
                    [c.owner_id for c in chunks],
                )
                stored_ids = {
                    (row["client_id"], bytes(row["chunk_id"]).decode())
                    for row in stored
                    if row["chunk_id"] is not None
                }
                for index in inserted:
                    chunk = batch[index].chunk
                    if chunk.chunk_id is None or (chunk.client_id, chunk.chunk_id) in stored_ids:
                        outcomes[index] = StoreOutcome.STORED
                    else:
                        outcomes[index] = StoreOutcome.DUPLICATE
        return [outcome or StoreOutcome.DUPLICATE for outcome in outcomes]

    async def client_ids(self) -> list[str]:
        rows = await self.pool.fetch("SELECT DISTINCT client_id FROM chunks ORDER BY client_id")
        return [row["client_id"] for row in rows]

    async def iter_chunks(self, client_id: str) -> AsyncIterator[StoredChunk]:
        async with self.pool.acquire() as connection, connection.transaction():
            # A server-side cursor: a dump of millions of chunks never sits in memory.
            async for row in connection.cursor(
                "SELECT " + STORED_CHUNK_COLUMNS + " FROM chunks WHERE client_id = $1"
                " ORDER BY seq IS NULL, seq, id",
                client_id,
                prefetch=1000,
            ):
                yield stored_chunk_from_row(row)

    async def chunk_count(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM chunks"))

    # users and sessions

    async def add_user(self, username: str, password_hash: str) -> User:
        user = User(id=str(uuid.uuid4()), username=username, password_hash=password_hash)
        try:
            await self.pool.execute(
                "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1,$2,$3,$4)",
                user.id,
                user.username,
                user.password_hash,
                now_ms(),
            )
        except asyncpg.UniqueViolationError:
            raise StorageError(f"a user named {username!r} exists already.") from None
        return user

    async def set_password(self, username: str, password_hash: str) -> bool:
        status = await self.pool.execute(
            "UPDATE users SET password_hash = $1 WHERE lower(username) = lower($2)",
            password_hash,
            username,
        )
        return bool(status == "UPDATE 1")

    async def find_user(self, username: str) -> User | None:
        if "\x00" in username:
            return None  # no user has one (add-user takes printable names only)
        row = await self.pool.fetchrow(
            f"SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1)", username
        )
        return user_from_row(row)

    async def user_by_id(self, user_id: str) -> User | None:
        row = await self.pool.fetchrow(
            f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", _storable(user_id)
        )
        return user_from_row(row)

    async def start_session(
        self, session_id: str, user_id: str, refresh_jti: str, refresh_expires_at: int
    ) -> None:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO sessions (id, user_id, created_at) VALUES ($1,$2,$3)",
                session_id,
                user_id,
                now_ms(),
            )
            await connection.execute(
                "INSERT INTO refresh_tokens (jti, session_id, expires_at) VALUES ($1,$2,$3)",
                refresh_jti,
                session_id,
                refresh_expires_at,
            )

    async def rotate_refresh(
        self, old_jti: str, session_id: str, new_jti: str, new_expires_at: int
    ) -> str:
        old_jti, session_id = _storable(old_jti), _storable(session_id)
        async with self.pool.acquire() as connection, connection.transaction():
            # The conditional update is the whole race: of two nodes spending the token at
            # once, the second waits for the first's row lock, then finds it used.
            spent = await connection.fetchval(
                "UPDATE refresh_tokens r SET used = TRUE FROM sessions s"
                " WHERE r.jti = $1 AND r.session_id = $2 AND s.id = r.session_id"
                " AND NOT r.used AND NOT s.revoked RETURNING 1",
                old_jti,
                session_id,
            )
            if spent:
                await connection.execute(
                    "INSERT INTO refresh_tokens (jti, session_id, expires_at) VALUES ($1,$2,$3)",
                    new_jti,
                    session_id,
                    new_expires_at,
                )
                return RefreshOutcome.OK
            row = await connection.fetchrow(
                "SELECT r.used, s.revoked FROM refresh_tokens r JOIN sessions s"
                " ON s.id = r.session_id WHERE r.jti = $1 AND r.session_id = $2",
                old_jti,
                session_id,
            )
            if row is None:
                return RefreshOutcome.UNKNOWN
            # The conditional update did not spend it: spent before, or its session revoked.
            refusal = refresh_refusal(used=True, revoked=bool(row["revoked"]))
            if refusal == RefreshOutcome.REUSED:
                await connection.execute(
                    "UPDATE sessions SET revoked = TRUE WHERE id = $1", session_id
                )
            return refusal or RefreshOutcome.REUSED

    async def revoke_user_sessions(self, user_id: str) -> int:
        status = await self.pool.execute(
            "UPDATE sessions SET revoked = TRUE WHERE user_id = $1 AND NOT revoked", user_id
        )
        return int(status.split()[-1])

    async def delete_user(self, username: str) -> tuple[User, int] | None:
        if "\x00" in username:
            return None
        async with self.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"SELECT {USER_COLUMNS} FROM users WHERE lower(username) = lower($1) FOR UPDATE",
                username,
            )
            user = user_from_row(row)
            if user is None:
                return None
            status = await connection.execute(
                "UPDATE sessions SET revoked = TRUE WHERE user_id = $1 AND NOT revoked", user.id
            )
            await connection.execute("DELETE FROM users WHERE id = $1", user.id)
        return user, int(status.split()[-1])

    async def session_is_live(self, session_id: str) -> bool:
        return await _session_is_live(self.pool, session_id)


async def _session_is_live(executor: Any, session_id: str) -> bool:
    """``executor``: a connection, or the pool (asyncpg gives both the same methods)."""
    row = await executor.fetchval(
        "SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.id = $1 AND NOT s.revoked",
        _storable(session_id),
    )
    return row is not None


async def _lock_client_id(connection: asyncpg.Connection, client_id: str) -> None:
    """Serialize every binding question about ``client_id``, on every node, until the
    transaction ends."""
    await connection.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", client_id)


async def _owners(connection: asyncpg.Connection, client_id: str) -> set[tuple[str, str]]:
    rows = await connection.fetch(
        "SELECT owner_kind, owner_id FROM client_owners WHERE client_id = $1", client_id
    )
    return {(row["owner_kind"], row["owner_id"]) for row in rows}


async def _bind(connection: asyncpg.Connection, client_id: str, kind: str, owner_id: str) -> None:
    await connection.execute(
        "INSERT INTO client_owners (client_id, owner_kind, owner_id, bound_at)"
        " VALUES ($1,$2,$3,$4) ON CONFLICT DO NOTHING",
        client_id,
        kind,
        owner_id,
        now_ms(),
    )


async def _is_claimed(connection: asyncpg.Connection, client_id: str) -> bool:
    if await _owners(connection, client_id):
        return True
    row = await connection.fetchval("SELECT 1 FROM guests WHERE client_id = $1 LIMIT 1", client_id)
    return row is not None


async def _guest_may_use(
    connection: asyncpg.Connection, guest_id: str, client_id: str, owners: set[tuple[str, str]]
) -> bool:
    issued_for = await connection.fetchval("SELECT client_id FROM guests WHERE id = $1", guest_id)
    return guest_may_use(issued_for, guest_id, client_id, owners)


async def _insert_guest(
    connection: asyncpg.Connection, guest_id: str, client_id: str, hostname: str
) -> None:
    await connection.execute(
        "INSERT INTO guests (id, client_id, hostname, created_at) VALUES ($1,$2,$3,$4)",
        guest_id,
        client_id,
        _storable(hostname),
        now_ms(),
    )
    await _bind(connection, client_id, GUEST, guest_id)


async def _refresh_is_current(connection: asyncpg.Connection, proof: RefreshProof) -> bool:
    row = await connection.fetchval(
        "SELECT 1 FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
        " JOIN users u ON u.id = s.user_id"
        " WHERE r.jti = $1 AND r.session_id = $2 AND NOT r.used AND NOT s.revoked"
        " AND s.user_id = $3",
        _storable(proof.jti),
        _storable(proof.session_id),
        _storable(proof.user_id),
    )
    return row is not None
