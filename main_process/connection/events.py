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


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """The user (or startup) wants a connection; also cancels a backoff wait."""


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """The user wants no connection until the next ``ConnectRequested``."""


@dataclass(frozen=True, slots=True)
class EnsureConnected:
    """Connect if idle, unless the user asked to be disconnected."""


@dataclass(frozen=True, slots=True)
class ChunksAppended:
    """The spool may hold chunks the machine has not loaded yet."""


@dataclass(frozen=True, slots=True)
class ChunksLoaded:
    """Answer to ``LoadChunks``: up to ``limit`` chunks after ``after_seq``, in seq order."""

    epoch: int
    chunks: Sequence[OutgoingChunk]


@dataclass(frozen=True, slots=True)
class CredentialsChanged:
    """Login or logout happened elsewhere; the caller already saved ``tokens``."""

    tokens: Tokens


@dataclass(frozen=True, slots=True)
class FatalError:
    """Something the machine cannot retry its way out of (e.g. an unusable server URL)."""

    message: str


@dataclass(frozen=True, slots=True)
class SocketConnected:
    """The server accepted the namespace handshake."""

    epoch: int


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """The attempt failed before the namespace was connected (``connect_error``)."""

    epoch: int
    message: str


@dataclass(frozen=True, slots=True)
class SocketDisconnected:
    epoch: int
    reason: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    epoch: int
    identity: Identity | None = None
    username: str | None = None


@dataclass(frozen=True, slots=True)
class GuestTokenReceived:
    epoch: int
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RetryAuthRequested:
    epoch: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ServerActivity:
    """A ``pong`` or any other sign of life (e.g. a ``processed_event``)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class UnknownServerEvent:
    epoch: int
    name: str


@dataclass(frozen=True, slots=True)
class MalformedPayload:
    """A known event whose payload had the wrong shape; it was not acted on."""

    epoch: int
    event_name: str


@dataclass(frozen=True, slots=True)
class AckReceived:
    """The server's acknowledgement of ``submit_log_chunk`` for ``seq``.

    ``error`` is ``None`` for delivered; see ``ack_error`` for the parsing rules.
    """

    epoch: int
    seq: int
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshSucceeded:
    request_id: int
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    user_id: str | None = None
    username: str | None = None


@dataclass(frozen=True, slots=True)
class RefreshRefused:
    """The auth API answered 401 or 403: the refresh token is dead."""

    request_id: int
    http_status: int


@dataclass(frozen=True, slots=True)
class RefreshFailed:
    """Network error, timeout, 5xx or a malformed answer: the tokens may still be good."""

    request_id: int
    message: str


@dataclass(frozen=True, slots=True)
class ClientIdRenewed:
    """Answer to ``RenewClientId``: the shell now sends ``client_id``.

    ``problem`` says why the new id could not be stored (it is used anyway; the next
    start finds the old one, is refused the same way and takes another)."""

    client_id: str
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class TokensSaved:
    """Answer to ``PersistTokens``: the token file now holds ``tokens``."""

    tokens: Tokens


@dataclass(frozen=True, slots=True)
class TokensNotSaved:
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


@dataclass(frozen=True, slots=True)
class OpenSocket:
    """Open a new socket for ``epoch`` with ``{"token": token}`` (or ``{}``) as auth."""

    epoch: int
    token: str | None = field(repr=False)
    credential: Credential


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """Close the socket of ``epoch`` (cancelling its connect if still under way)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class LoadChunks:
    """Read up to ``limit`` spooled chunks with seq > ``after_seq`` (all if ``None``),
    in seq order, and feed them back as ``ChunksLoaded(epoch, ...)``."""

    epoch: int
    after_seq: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class SendChunk:
    """Emit ``submit_log_chunk`` on the socket of ``epoch``; feed its ack back."""

    epoch: int
    chunk: OutgoingChunk


@dataclass(frozen=True, slots=True)
class SendPing:
    epoch: int


@dataclass(frozen=True, slots=True)
class AcknowledgeChunk:
    """The server has the chunk: delete it from the spool."""

    seq: int


@dataclass(frozen=True, slots=True)
class DeadLetterChunk:
    """The server will never take the chunk: move it to the dead-letter store."""

    seq: int
    code: str
    message: str | None


@dataclass(frozen=True, slots=True)
class PersistTokens:
    """Write ``tokens`` to disk atomically (0600); answer ``TokensSaved`` or ``TokensNotSaved``."""

    tokens: Tokens


@dataclass(frozen=True, slots=True)
class RefreshTokens:
    """POST ``{refreshToken}`` to the auth API; answer with a ``Refresh*`` event."""

    request_id: int
    refresh_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class RenewClientId:
    """Start a new installation identity: keep the current client id aside, make and use
    a new one; answer ``ClientIdRenewed``. The spool and tokens stay as they are."""


@dataclass(frozen=True, slots=True)
class StatusChanged:
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
