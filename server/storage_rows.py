"""What the server's two storage backends share, without I/O: the records they store and
answer with, how a row becomes a record, and the decisions they make on what they read.

Owns the record types (``User``, ``IncomingChunk``, ``PendingChunk``, ``StoredChunk``,
``RefreshProof``), the answers (``StoreOutcome``, ``RefreshOutcome``, ``Admission``), the
column lists both backends select, and the pure rules:

- refresh rotation (``refresh_refusal``): an unknown token, a revoked session, or a token
  spent before (a reuse: the session is revoked, so both holders are locked out);
- installation binding: whether a guest may use a ``clientId`` (``guest_may_use``),
  whether a user's handshake may (``user_admission``), and what a logout leaves behind
  (``logout_handover``);
- a batch's chunks that repeat a ``chunkId`` of the same batch (``repeats_in_batch``).

Rules it keeps: every function here is a function of its arguments; the backends read
the facts in their own transactions (``server/storage.py`` for SQLite,
``server/storage_postgres.py`` for PostgreSQL), ask here, and write what is decided.

Must not: open a database, run SQL, or know which backend asks.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GUEST = "guest"
USER = "user"

USER_COLUMNS = "id, username, password_hash"
STORED_CHUNK_COLUMNS = (
    "client_id, chunk_id, seq, text, source_path, source_offset, sent_at, received_at, identity"
)


class StorageError(Exception):
    """The data dir cannot be used; the message is one sentence for a person."""


def now_ms() -> int:
    return int(time.time() * 1000)


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
class PendingChunk:
    """A chunk waiting for its commit, with the session it must still be live in (a
    user's connection), or None (a guest's)."""

    chunk: IncomingChunk
    session_id: str | None = None


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


class Admission(enum.Enum):
    """Whether a handshake's credentials may use the ``clientId`` it names."""

    OK = "ok"
    MISMATCH = "mismatch"
    """The id belongs to someone else, or the token to another id."""
    UNKNOWN_GUEST = "unknown_guest"
    SESSION_ENDED = "session_ended"
    """The user's session is revoked, or the user was deleted."""


class StoreOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    SESSION_ENDED = "session_ended"


@dataclass(frozen=True, slots=True)
class RefreshProof:
    """A refresh token shown at login as proof of a user who owns the ``clientId``."""

    user_id: str
    session_id: str
    jti: str


# ------------------------------------------------------------------------ rows


def _text(value: str | bytes | memoryview | None) -> str | None:
    """A text column: PostgreSQL keeps chunk text, ``chunkId`` and source path as
    ``bytea`` (their UTF-8, since its ``text`` holds no U+0000); SQLite as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()
    return value


def user_from_row(row: Sequence[Any] | None) -> User | None:
    """A ``User`` from a row of ``USER_COLUMNS``."""
    return None if row is None else User(row[0], row[1], row[2])


def stored_chunk_from_row(row: Sequence[Any]) -> StoredChunk:
    """A ``StoredChunk`` from a row of ``STORED_CHUNK_COLUMNS``, of either backend."""
    text = _text(row[3])
    assert text is not None
    return StoredChunk(
        client_id=row[0],
        chunk_id=_text(row[1]),
        seq=row[2],
        text=text,
        source_path=_text(row[4]),
        source_offset=row[5],
        sent_at=row[6],
        received_at=row[7],
        identity=row[8],
    )


# ------------------------------------------------------------------- decisions


def refresh_refusal(used: bool, revoked: bool) -> str | None:
    """Why a known refresh token cannot be spent, or None when it can.

    Reuse of a spent refresh token means two parties hold it; the caller revokes the
    whole session (refresh-token family), which locks both out instead of guessing which
    one is genuine. An unknown token (no row) is ``RefreshOutcome.UNKNOWN``."""
    if revoked:
        return RefreshOutcome.REVOKED
    if used:
        return RefreshOutcome.REUSED
    return None


def guest_may_use(
    issued_for: str | None, guest_id: str, client_id: str, owners: set[tuple[str, str]]
) -> bool:
    """The guest was issued for ``client_id`` (``issued_for``: its row's id, None when
    there is no such guest) and owns it, or may take it as a guest from before binding
    existed (no guest owns the id yet: first use binds)."""
    if issued_for is None or issued_for != client_id:
        return False
    if (GUEST, guest_id) in owners:
        return True
    return not any(kind == GUEST for kind, _ in owners)


def user_admission(user_id: str, owners: set[tuple[str, str]]) -> tuple[Admission, bool]:
    """A user's handshake, in a live session: the id must be theirs, or free. The second
    value: bind the id to the user (it was free: an id first seen with a user token, or
    one from before binding existed)."""
    if (USER, user_id) in owners:
        return Admission.OK, False
    if owners:
        return Admission.MISMATCH, False
    return Admission.OK, True


def logout_handover(user_id: str, owners: set[tuple[str, str]]) -> tuple[bool, bool]:
    """After a logout with the session's current token: whether to take the id from the
    user, and whether a new guest must then own it (no guest does, so the installation
    keeps its id)."""
    if (USER, user_id) not in owners:
        return False, False
    return True, not any(kind == GUEST for kind, _ in owners)


def repeats_in_batch(
    batch: Sequence[PendingChunk], live_sessions: set[str]
) -> list[StoreOutcome | None]:
    """Per chunk of a batch: ``SESSION_ENDED`` when its session is not live,
    ``DUPLICATE`` when an earlier chunk of the batch has its ``chunkId`` (as it would be
    one batch later), None for a chunk to insert."""
    outcomes: list[StoreOutcome | None] = []
    seen: set[tuple[str, str]] = set()
    for pending in batch:
        if pending.session_id is not None and pending.session_id not in live_sessions:
            outcomes.append(StoreOutcome.SESSION_ENDED)
            continue
        chunk = pending.chunk
        if chunk.chunk_id is not None:
            key = (chunk.client_id, chunk.chunk_id)
            if key in seen:
                outcomes.append(StoreOutcome.DUPLICATE)
                continue
            seen.add(key)
        outcomes.append(None)
    return outcomes
