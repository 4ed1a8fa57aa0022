"""The connection machine's vocabulary: the events it is fed, the actions it returns, and
the values they carry (its config, its status, its counters, the chunks it sends).

Owns: these types, and nothing that decides. Every field is what ``connection/state.py``
and its parts (``connection/phases.py``, ``delivery_window.py``, ``token_refresh.py``)
read or write; ``connection/server_connection.py`` builds the events and executes the actions.

Must not: do I/O, import asyncio, socketio or aiohttp, or hold behaviour beyond checking
a config's numbers. It takes the ``Tokens`` value type (pure data) from ``credentials.py``.

Rules: events and actions are frozen values; anything that comes from a socket carries
the epoch of the socket it came from (rule 6 of ``connection/state.py``); a token is
never part of a ``repr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

import msgspec

from main_process.connection.backoff import BackoffPolicy
from main_process.credentials import Tokens

ConnectionStateName: TypeAlias = Literal["disconnected", "connecting", "connected", "error"]
Identity: TypeAlias = Literal["user", "guest"]
Credential: TypeAlias = Literal["user", "guest", "none"]

# ----------------------------------------------------------------------------- data


class ChunkOrigin(Protocol):
    """Where a chunk was read: the file and the byte offset where the chunk starts."""

    @property
    def path(self) -> str: ...

    @property
    def offset(self) -> int: ...


class OutgoingChunk(Protocol):
    """A chunk as the spool hands it out (``spool.OutgoingChunk`` fits)."""

    @property
    def seq(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def source(self) -> ChunkOrigin | None: ...


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    """A plain ``ChunkOrigin``."""

    path: str
    offset: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """A plain ``OutgoingChunk``, for tests and stores without a type of their own."""

    seq: int
    text: str
    source: ChunkLocation | None = None


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Every number of the connection; defaults from PROTOCOL.md."""

    window: int = 8
    ack_timeout: float = 30.0
    ping_interval: float = 20.0
    silence_timeout: float = 30.0
    handshake_timeout: float = 20.0
    """From opening a socket to ``authenticated``; past it the attempt counts as failed."""
    guest_token_reconnect_delay: float = 0.1
    retry_auth_reconnect_delay: float = 2.0
    """After a ``retry_auth`` that signs the user out (a refresh refused, or no refresh
    token); a successful refresh reconnects at once."""
    auth_reconnects_before_backoff: int = 3
    """Auth-driven reconnects in a row (no acknowledged chunk and no stable connection
    between) before backing off."""
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")
        for name in ("ack_timeout", "ping_interval", "silence_timeout", "handshake_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True)
class ConnectionStatus:
    """What viewers are told; ``app.py`` maps it onto the ipc ``Status`` message."""

    state: ConnectionStateName
    authenticated: bool
    identity: Identity | None
    username: str | None
    attempt: int
    next_retry_ms: int | None
    last_error: str | None


@dataclass(slots=True)
class ConnectionCounters:
    """Running totals, for status and logs. Mutated only by the machine."""

    sockets_opened: int = 0
    chunks_sent: int = 0
    chunks_acknowledged: int = 0
    chunks_dead_lettered: int = 0
    chunks_rejected_for_retry: int = 0
    stale_events: int = 0
    unexpected_acks: int = 0
    unknown_events: int = 0
    malformed_payloads: int = 0


# ----------------------------------------------------------------------------- events

# Events and actions are msgspec Structs, not dataclasses: a Struct class is made in C,
# where each frozen dataclass compiles six methods when its module is imported (the 34
# of them cost ~15 ms of every start of the main process).


def _repr_without(value: msgspec.Struct, hidden: tuple[str, ...]) -> str:
    """``value``'s repr without the fields named in ``hidden`` (tokens)."""
    shown = ", ".join(
        f"{name}={getattr(value, name)!r}" for name in value.__struct_fields__ if name not in hidden
    )
    return f"{type(value).__name__}({shown})"


class ConnectRequested(msgspec.Struct, frozen=True):
    """The user (or startup) wants a connection; also cancels a backoff wait."""


class DisconnectRequested(msgspec.Struct, frozen=True):
    """The user wants no connection until the next ``ConnectRequested``."""


class EnsureConnected(msgspec.Struct, frozen=True):
    """Connect if idle, unless the user asked to be disconnected."""


class ChunksAppended(msgspec.Struct, frozen=True):
    """The spool may hold chunks the machine has not loaded yet."""


class ChunksLoaded(msgspec.Struct, frozen=True):
    """Answer to ``LoadChunks``: up to ``limit`` chunks after ``after_seq``, in seq order."""

    epoch: int
    chunks: Sequence[OutgoingChunk]


class CredentialsChanged(msgspec.Struct, frozen=True):
    """Login or logout happened elsewhere; the caller already saved ``tokens``."""

    tokens: Tokens


class FatalError(msgspec.Struct, frozen=True):
    """Something the machine cannot retry its way out of (e.g. an unusable server URL)."""

    message: str


class SocketConnected(msgspec.Struct, frozen=True):
    """The server accepted the namespace handshake."""

    epoch: int


class ConnectFailed(msgspec.Struct, frozen=True):
    """The attempt failed before the namespace was connected (``connect_error``)."""

    epoch: int
    message: str


class SocketDisconnected(msgspec.Struct, frozen=True):
    epoch: int
    reason: str


class Authenticated(msgspec.Struct, frozen=True):
    epoch: int
    identity: Identity | None = None
    username: str | None = None


class GuestTokenReceived(msgspec.Struct, frozen=True):
    epoch: int
    token: str

    def __repr__(self) -> str:
        return _repr_without(self, ("token",))


class RetryAuthRequested(msgspec.Struct, frozen=True):
    epoch: int
    reason: str | None = None


class ServerActivity(msgspec.Struct, frozen=True):
    """A ``pong`` or any other sign of life (e.g. a ``processed_event``)."""

    epoch: int


class UnknownServerEvent(msgspec.Struct, frozen=True):
    epoch: int
    name: str


class MalformedPayload(msgspec.Struct, frozen=True):
    """A known event whose payload had the wrong shape; it was not acted on."""

    epoch: int
    event_name: str


class AckReceived(msgspec.Struct, frozen=True):
    """The server's acknowledgement of ``submit_log_chunk`` for ``seq``.

    ``error`` is ``None`` for delivered; see ``ack_error`` for the parsing rules.
    """

    epoch: int
    seq: int
    error: str | None = None
    message: str | None = None


class RefreshSucceeded(msgspec.Struct, frozen=True):
    request_id: int
    access_token: str
    refresh_token: str
    user_id: str | None = None
    username: str | None = None

    def __repr__(self) -> str:
        return _repr_without(self, ("access_token", "refresh_token"))


class RefreshRefused(msgspec.Struct, frozen=True):
    """The auth API answered 401 or 403: the refresh token is dead."""

    request_id: int
    http_status: int


class RefreshFailed(msgspec.Struct, frozen=True):
    """Network error, timeout, 5xx or a malformed answer: the tokens may still be good."""

    request_id: int
    message: str


class ClientIdRenewed(msgspec.Struct, frozen=True):
    """Answer to ``RenewClientId``: the shell now sends ``client_id``.

    ``problem`` says why the new id could not be stored (it is used anyway; the next
    start finds the old one, is refused the same way and takes another)."""

    client_id: str
    problem: str | None = None


class TokensSaved(msgspec.Struct, frozen=True):
    """Answer to ``PersistTokens``: the token file now holds ``tokens``."""

    tokens: Tokens


class TokensNotSaved(msgspec.Struct, frozen=True):
    """Answer to ``PersistTokens``: the write failed and the file holds what it held.

    ``reason`` is words for the user (e.g. the OS's error and the file's path), never a
    token.
    """

    reason: str


Event: TypeAlias = (
    ConnectRequested
    | DisconnectRequested
    | EnsureConnected
    | ChunksAppended
    | ChunksLoaded
    | CredentialsChanged
    | FatalError
    | SocketConnected
    | ConnectFailed
    | SocketDisconnected
    | Authenticated
    | GuestTokenReceived
    | RetryAuthRequested
    | ServerActivity
    | UnknownServerEvent
    | MalformedPayload
    | AckReceived
    | RefreshSucceeded
    | RefreshRefused
    | RefreshFailed
    | ClientIdRenewed
    | TokensSaved
    | TokensNotSaved
)


# ----------------------------------------------------------------------------- actions


class OpenSocket(msgspec.Struct, frozen=True):
    """Open a new socket for ``epoch`` with ``{"token": token}`` (or ``{}``) as auth."""

    epoch: int
    token: str | None
    credential: Credential

    def __repr__(self) -> str:
        return _repr_without(self, ("token",))


class CloseSocket(msgspec.Struct, frozen=True):
    """Close the socket of ``epoch`` (cancelling its connect if still under way)."""

    epoch: int


class LoadChunks(msgspec.Struct, frozen=True):
    """Read up to ``limit`` spooled chunks with seq > ``after_seq`` (all if ``None``),
    in seq order, and feed them back as ``ChunksLoaded(epoch, ...)``."""

    epoch: int
    after_seq: int | None
    limit: int


class SendChunk(msgspec.Struct, frozen=True):
    """Emit ``submit_log_chunk`` on the socket of ``epoch``; feed its ack back."""

    epoch: int
    chunk: OutgoingChunk


class SendPing(msgspec.Struct, frozen=True):
    epoch: int


class AcknowledgeChunk(msgspec.Struct, frozen=True):
    """The server has the chunk: delete it from the spool."""

    seq: int


class DeadLetterChunk(msgspec.Struct, frozen=True):
    """The server will never take the chunk: move it to the dead-letter store."""

    seq: int
    code: str
    message: str | None


class PersistTokens(msgspec.Struct, frozen=True):
    """Write ``tokens`` to disk atomically (0600); answer ``TokensSaved`` or ``TokensNotSaved``."""

    tokens: Tokens


class RefreshTokens(msgspec.Struct, frozen=True):
    """POST ``{refreshToken}`` to the auth API; answer with a ``Refresh*`` event."""

    request_id: int
    refresh_token: str

    def __repr__(self) -> str:
        return _repr_without(self, ("refresh_token",))


class RenewClientId(msgspec.Struct, frozen=True):
    """Start a new installation identity: keep the current client id aside, make and use
    a new one; answer ``ClientIdRenewed``. The spool and tokens stay as they are."""


class StatusChanged(msgspec.Struct, frozen=True):
    status: ConnectionStatus


Action: TypeAlias = (
    OpenSocket
    | CloseSocket
    | LoadChunks
    | SendChunk
    | SendPing
    | AcknowledgeChunk
    | DeadLetterChunk
    | PersistTokens
    | RefreshTokens
    | RenewClientId
    | StatusChanged
)
