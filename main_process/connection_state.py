"""The server connection's decisions, with no I/O: a state machine fed events and a clock.

Rules this module keeps
=======================

1. ``connected`` is reported only after the server's ``authenticated`` event actually
   arrived on the live socket. There is no timer that assumes it.
2. The handshake token is the user's access token, else the guest token, else none.
3. A chunk leaves the spool only on a positive acknowledgement (``AcknowledgeChunk``) or
   a permanent rejection (``DeadLetterChunk``). Nothing else deletes anything.
4. Chunks go out in ``seq`` order, at most ``window`` unacknowledged at once, from one
   load at a time: a flush never runs twice at once and never overtakes itself.
5. After any reconnect, delivery restarts from the head of the spool, so every
   unacknowledged chunk is resent, in order, under the same ``chunkId``.
6. Anything that comes from a socket carries the epoch of the socket it came from;
   events of any epoch but the live one (late acks, a disconnect we caused ourselves) are
   counted and ignored.
7. A user's Disconnect stops all reconnecting until a Connect.
8. A token is on disk before anything presents it. ``PersistTokens`` is answered by
   ``TokensSaved`` or ``TokensNotSaved``; a socket opens with a token only when a
   confirmed save holds it, and a refresh token goes to the server (``RefreshTokens``)
   only in answer to a confirmed save of it, made just before, so the server never
   spends the token on disk while the file cannot take the next one.
9. No token state can loop: a refused user token is refreshed once, a refused refresh
   signs the user out, a refused guest token is forgotten, and auth-driven reconnects
   that keep failing fall back to the exponential backoff. A reconnect after which the
   server acknowledged a chunk did not fail.
10. A successful refresh reconnects at once: an access token may live less than any
    delay would wait.
11. Installation binding (PROTOCOL.md section 3). ``retry_auth`` ``client_id_taken`` to a
    socket opened with no token means the server holds this installation's id for
    credentials the client no longer has: the machine asks the shell for a new id
    (``RenewClientId``; the shell keeps the old one aside) and reconnects with no token.
    The spool is untouched: what it holds goes out under the new id. A fresh id refused
    the same way before any ``authenticated`` is a plain failure (backoff), so a server
    cannot make the client churn ids. ``client_mismatch`` to a user's token signs the
    user out (refreshing cannot help: the id, not the token, is the problem), and to a
    guest token forgets it, like any refused guest token.
12. What the server says about us is believed only as far as the credentials presented
    allow: ``authenticated`` with ``identity: "user"`` on a socket opened with a guest
    token or none counts as guest, without a user name.

How it works
============

``ConnectionState`` is a plain object. The asyncio shell (``connection.py``) feeds it
``Event`` values through ``handle(event, now)`` and lets time pass through
``tick(now)``; ``now`` is a monotonic clock in seconds, chosen by the caller. Both
return a list of ``Action`` values, which the shell executes **in order, each to
completion before the next, and before it feeds the next event**. That rule is what
makes "the spool row is deleted before the next load" true without extra states.
``LoadChunks`` is answered at once, inline (``ChunksLoaded``); ``PersistTokens`` is
answered by the next event the shell feeds (``TokensSaved`` or ``TokensNotSaved``), and
whatever would present the new tokens waits for that answer. Actions that take real time
(opening a socket, an HTTP refresh) are started by the shell and report back later as
events. The machine never sleeps: ``next_deadline()`` says when it next wants a
``tick``; a shell that ticks late or early is harmless, because every timer is compared
with ``now``.

The machine is in one of six phases::

    IDLE ──ConnectRequested──▶ CONNECTING ──Authenticated──▶ CONNECTED
      ▲                          │  ▲                            │
      │ DisconnectRequested      │  └───────── timer ────────┐   │ drop, ack timeout,
      │ (from any phase)         ▼                           │   ▼ silence, error ack
      └──────────────────── (failures) ─────────────────▶ WAITING
                                 │ retry_auth / auth connect_error with a user token
                                 ▼                           ▲
                             REFRESHING ──RefreshSucceeded───┘ (reconnect as soon as the
                                        │                         rotated tokens are saved)
                                        ──RefreshRefused──▶ sign out, WAITING (as guest)
                                        ──RefreshFailed───▶ WAITING, then refresh again
    FAILED: a fatal error the shell reported (e.g. an unusable URL); only Connect leaves it.

REFRESHING starts with a save of the tokens held (the proof that the file can be written)
and sends ``RefreshTokens`` only once that save is confirmed.

Transitions, phase by event (anything not listed is ignored, stale epochs always are):

=====================  ==========================================================
``ConnectRequested``   IDLE/FAILED → CONNECTING (REFRESHING if a refresh is out, or
                       if only a refresh token is held); WAITING → now
``EnsureConnected``    like ``ConnectRequested``, but only from IDLE and only if the
                       user did not ask to be disconnected
``DisconnectRequested``any → IDLE, closing a live socket; reconnecting stops
``CredentialsChanged`` (login/logout) close, and start over with the new tokens
``ChunksAppended``     CONNECTED: load more if the window has room
``ChunksLoaded``       CONNECTED: send them, in seq order, within the window
``SocketConnected``    CONNECTING: namespace accepted; → CONNECTED if auth came first
``Authenticated``      CONNECTING → CONNECTED: heartbeat starts, delivery starts (held
                       until ``SocketConnected`` if it arrives before it)
``ConnectFailed``      CONNECTING → auth-flavoured? the auth flow : WAITING (backoff)
``SocketDisconnected`` CONNECTING/CONNECTED → WAITING (backoff)
``GuestTokenReceived`` persist it; unless signed in: close, WAITING ~100 ms
``RetryAuthRequested`` user token: close, REFRESHING (or sign out if no refresh
                       token, or ``client_mismatch``); guest token: forget it,
                       WAITING; no token: backoff, or for ``client_id_taken``
                       ``RenewClientId`` (rule 11)
``ClientIdRenewed``    the shell has a new id: WAITING ~100 ms, then open
``AckReceived``        ok → AcknowledgeChunk; too_large/invalid → DeadLetterChunk;
                       unauthenticated → the retry_auth flow; other → resend later
``Refresh*``           see the diagram; results for a superseded request ignored;
                       a success saves the rotated tokens and reconnects once saved
``TokensSaved``        the file holds them: go on with what waited for the save
``TokensNotSaved``     ``cannot save tokens: <reason>`` in status, save again after
                       the backoff; what waited for the save waits in WAITING
``tick``               WAITING: due → open or refresh; CONNECTING: handshake
                       timeout; CONNECTED: ping, silence, ack timeout, backoff
                       reset after ``reset_after`` s, resend of rejected chunks;
                       any phase: a failed save due again
=====================  ==========================================================

When the token file cannot be written
=====================================

A save fails when the data dir is read-only, its permissions changed, or the disk is
full beyond the room ``identity.py`` keeps for the token file (a small reserve, so that
a disk filled by the spool still takes the tokens the client needs to drain it). The
file then still holds what it held (writes are atomic), and the machine keeps one rule:
what is presented to the server is on disk. So:

- Before a refresh the machine saves the tokens it holds. If that save fails it does not
  refresh: the refresh token on disk stays unspent, so a crash or a stop at any moment
  leaves a session that the next start can refresh. The access token has expired (that
  is why it refreshes), and a guest handshake would not be the user, so shipping waits
  (lines stay in the spool and in the log files) until the save succeeds.
- If the rotation succeeded and only the save after it failed (the disk failed between
  the two writes), the refresh token on disk is spent. The new tokens stay in memory,
  unpresented, and the save is retried; once it succeeds the machine reconnects as the
  user. A crash before that means the next start finds a spent token and continues as a
  guest, saying so; presenting the unsaved access token meanwhile would not change that,
  and would break the rule.
- A new guest token that cannot be saved is not presented either; the machine waits for
  the save rather than bind the installation to a token it could lose.
- Tokens the machine drops (a refused guest token, a sign-out) leave it presenting a
  token the file already holds, or none: that goes on, and the save is retried until
  the file stops holding the dropped tokens.

While any save is failing, status says ``cannot save tokens: <reason>`` (the reason is
the operating system's, with the file's path; never a token), and a failed save is
retried with the exponential backoff (a Connect retries it at once).

Status is derived, never stored: ``status(now)`` maps the phase onto exactly one of
``disconnected`` (IDLE, WAITING: ``attempt`` and ``next_retry_ms`` say when the next try
is), ``connecting`` (CONNECTING, REFRESHING), ``connected`` (CONNECTED) and ``error``
(FAILED), and adds the fields viewers need. The
machine appends a ``StatusChanged`` action whenever anything in it but the countdown
changed, so the shell publishes on every change and never on a mere tick.

This module must not do I/O or import asyncio, socketio or aiohttp. It takes the
``Tokens`` value type (pure data) from ``identity.py``, which owns the token file.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, TypeAlias

from main_process.backoff import Backoff, BackoffPolicy, RandomSource
from main_process.identity import Tokens

ConnectionStateName: TypeAlias = Literal["disconnected", "connecting", "connected", "error"]
Identity: TypeAlias = Literal["user", "guest"]
Credential: TypeAlias = Literal["user", "guest", "none"]

SIGNED_OUT_MESSAGE = "session expired; signed out, continuing as guest"
CLIENT_MISMATCH_MESSAGE = (
    "the server ties this installation's id to other credentials; signed out, continuing as guest"
)
CLIENT_ID_TAKEN = "client_id_taken"
CLIENT_MISMATCH = "client_mismatch"
PERMANENT_REJECTIONS = frozenset({"too_large", "invalid"})
AUTH_ERROR_MARKERS = ("invalid signature", "auth", "jwt expired")

# Bounds on what a server's words may cost: a name, a reason or message, a token. A user
# name of 560 KB would otherwise be logged on every connect and published to every viewer.
MAX_NAME_CHARS = 128
MAX_MESSAGE_CHARS = 500
MAX_TOKEN_CHARS = 8192


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


# ----------------------------------------------------------------------------- helpers


def is_auth_error(message: str) -> bool:
    """Whether a ``connect_error`` message means "your token was refused" (PROTOCOL §2)."""
    lowered = message.lower()
    return any(marker in lowered for marker in AUTH_ERROR_MARKERS)


def bounded_text(value: str, limit: int) -> str:
    """A server's string made fit to log and show: at most ``limit`` characters (an
    ellipsis marks a cut), control characters (newlines too) replaced by U+FFFD."""
    kept = "".join(c if c.isprintable() else "\ufffd" for c in value[:limit])
    return kept + "…" if len(value) > limit else kept


def ack_error(payload: object) -> tuple[str | None, str | None]:
    """``(error code, message)`` of an ack payload; code ``None`` means delivered.

    Any ack without an ``error`` field (``{"ok": true}``, ``{"message": ...}``, ``{}``,
    ``null``, a bare string) means delivered (PROTOCOL §4). A JSON ``null`` error counts
    as absent. Both strings are bounded (``bounded_text``).
    """
    if not isinstance(payload, dict):
        return None, None
    code = payload.get("error")
    if code is None:
        return None, None
    message = payload.get("message")
    return (
        bounded_text(code if isinstance(code, str) else repr(code)[:MAX_MESSAGE_CHARS], 100),
        bounded_text(message, MAX_MESSAGE_CHARS) if isinstance(message, str) else None,
    )


class Phase(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"
    CONNECTING = "connecting"
    REFRESHING = "refreshing"
    CONNECTED = "connected"
    FAILED = "failed"


_STATE_OF_PHASE: dict[Phase, ConnectionStateName] = {
    Phase.IDLE: "disconnected",
    Phase.WAITING: "disconnected",
    Phase.CONNECTING: "connecting",
    Phase.REFRESHING: "connecting",
    Phase.CONNECTED: "connected",
    Phase.FAILED: "error",
}


@dataclass(slots=True)
class _InFlight:
    chunk: OutgoingChunk
    sent_at: float


def _seconds(value: float) -> str:
    return f"{value:g} s"


# How many chunks may be unacknowledged for lines still to be cut at once (see
# ``has_delivery_room``). One, not ``window``: the server handles one connection's chunks
# one after another, a durable commit each, so every small chunk already queued there is
# a commit a new line waits behind. Measured at 1,000 lines/s on loopback
# (bench/e2e_pipeline.py): wire + server p99 4-20 ms with 1, 25-29 ms with 8.
SEND_AT_ONCE_BELOW = 1

# ----------------------------------------------------------------------------- machine


class ConnectionState:
    """The connection's state machine. See the module docstring for the theory."""

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        tokens: Tokens | None = None,
        random_source: RandomSource = random.random,
    ) -> None:
        self.config = config or ConnectionConfig()
        self.tokens = tokens or Tokens()
        self.counters = ConnectionCounters()
        self._backoff = Backoff(self.config.backoff, random_source)
        self._delivery_backoff = Backoff(self.config.backoff, random_source)
        self._save_backoff = Backoff(self.config.backoff, random_source)

        self.phase = Phase.IDLE
        self._stopped_by_user = False
        self._last_error: str | None = None
        # The sign-out notice must survive the guest connection that follows it, or the
        # user would never learn why they are a guest now.
        self._notice_is_sticky = False

        # Waiting: when, and what to do then.
        self._retry_at: float | None = None
        self._retry_then: Literal["open", "refresh"] = "open"
        self._auth_reconnects = 0

        # The live socket.
        self._epoch = 0
        self._live_epoch: int | None = None
        self._credential: Credential = "none"
        self._attempt_started_at = 0.0
        self._namespace_connected = False
        self._early_authentication: Authenticated | None = None
        self._identity: Identity | None = None
        self._username: str | None = None
        self._stable_at: float | None = None
        self._next_ping_at: float | None = None
        self._last_heard_at = 0.0

        # Delivery on the live socket.
        self._in_flight: dict[int, _InFlight] = {}
        self._rejected: dict[int, OutgoingChunk] = {}
        self._resend_rejected_at: float | None = None
        self._cursor: int | None = None
        self._loading = False
        self._load_limit = 0
        self._spool_dirty = True

        # The refresh request, which outlives sockets and even a user's Disconnect: its
        # answer may rotate the refresh token, and that must be kept whatever happened.
        self._refresh_counter = 0
        self._refresh_request: int | None = None

        # The token file. ``tokens`` were loaded from it, so they start out saved.
        self._saved = self.tokens
        self._saves_unanswered = 0
        self._save_error: str | None = None
        self._save_retry_at: float | None = None
        # What waits for the next confirmed save: the refresh that would present the
        # refresh token, the reconnect with rotated tokens, or an open whose token is
        # not on disk yet. Set in REFRESHING (the save is out) or WAITING (it failed).
        self._after_save: Literal["refresh", "reconnect", "open"] | None = None

        # Rule 11: a new installation id is being made, and whether one was made since the
        # last ``authenticated`` (a second ``client_id_taken`` then is a plain failure).
        self._renewing = False
        self._renewed_since_authenticated = False

        self._published_key: tuple[object, ...] | None = None

    # ------------------------------------------------------------------ public API

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; return the actions to execute, in order."""
        actions: list[Action] = []
        self._dispatch(event, now, actions)
        self._after(now, actions)
        return actions

    def tick(self, now: float) -> list[Action]:
        """Let time pass; return the actions due by ``now``."""
        actions: list[Action] = []
        self._tick(now, actions)
        self._after(now, actions)
        return actions

    def next_deadline(self) -> float | None:
        """The earliest ``now`` at which ``tick`` has something to do, if any."""
        deadlines: list[float] = []
        if self._save_retry_at is not None:
            deadlines.append(self._save_retry_at)
        if self.phase is Phase.WAITING and self._retry_at is not None:
            deadlines.append(self._retry_at)
        elif self.phase is Phase.CONNECTING:
            deadlines.append(self._attempt_started_at + self.config.handshake_timeout)
        elif self.phase is Phase.CONNECTED:
            deadlines.append(self._last_heard_at + self.config.silence_timeout)
            if self._next_ping_at is not None:
                deadlines.append(self._next_ping_at)
            if self._stable_at is not None:
                deadlines.append(self._stable_at)
            if self._in_flight:
                oldest = min(item.sent_at for item in self._in_flight.values())
                deadlines.append(oldest + self.config.ack_timeout)
            if self._resend_rejected_at is not None:
                deadlines.append(self._resend_rejected_at)
        return min(deadlines) if deadlines else None

    def status(self, now: float) -> ConnectionStatus:
        connected = self.phase is Phase.CONNECTED
        next_retry_ms: int | None = None
        retry_at = self._next_retry_at()
        if retry_at is not None:
            next_retry_ms = max(0, round((retry_at - now) * 1000))
        return ConnectionStatus(
            state=_STATE_OF_PHASE[self.phase],
            authenticated=connected,
            identity=self._identity if connected else None,
            username=self._username if connected else None,
            attempt=self._backoff.failures,
            next_retry_ms=next_retry_ms,
            # A failing save outranks the rest: it is the one the user has to act on.
            last_error=self._save_error or self._last_error,
        )

    def has_delivery_room(self, unacknowledged: int) -> bool:
        """Whether a chunk that is not full should be cut now rather than wait to group
        more lines: connected, no rejected chunk waiting to be resent, and fewer than
        ``SEND_AT_ONCE_BELOW`` chunks ``unacknowledged`` in the spool (in flight or
        waiting their turn). Full chunks go out regardless, up to ``window`` at once.

        The sources cut lines the moment they arrive while this holds, and group them
        (until the ack that frees room, or the linger) while it does not: batching that
        adapts to the load, as Nagle's algorithm does for TCP segments. Waiting while
        nothing is in flight would only add latency; cutting while chunks are
        unacknowledged would queue more small chunks behind them.
        """
        return (
            self.phase is Phase.CONNECTED
            and self._live_epoch is not None
            and self._resend_rejected_at is None
            and unacknowledged < min(self.config.window, SEND_AT_ONCE_BELOW)
        )

    @property
    def live_epoch(self) -> int | None:
        return self._live_epoch

    @property
    def in_flight_seqs(self) -> list[int]:
        """Seqs sent on the live socket and not yet answered, ascending."""
        return sorted(self._in_flight)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, event: Event, now: float, actions: list[Action]) -> None:
        match event:
            case ConnectRequested():
                self._on_connect_requested(now, actions)
            case DisconnectRequested():
                self._on_disconnect_requested(actions)
            case EnsureConnected():
                if self.phase is Phase.IDLE and not self._stopped_by_user:
                    self._on_connect_requested(now, actions)
            case ChunksAppended():
                self._spool_dirty = True
                self._maybe_load(actions)
            case ChunksLoaded():
                self._on_chunks_loaded(event, now, actions)
            case CredentialsChanged():
                self._on_credentials_changed(event.tokens, now, actions)
            case FatalError():
                self._close_live(actions)
                self.phase = Phase.FAILED
                self._retry_at = None
                self._after_save = None
                self._set_error(event.message)
            case RefreshSucceeded() | RefreshRefused() | RefreshFailed():
                self._on_refresh_result(event, now, actions)
            case ClientIdRenewed():
                self._on_client_id_renewed(event, now)
            case TokensSaved():
                self._on_tokens_saved(event.tokens, now, actions)
            case TokensNotSaved():
                self._on_tokens_not_saved(event.reason, now, actions)
            case _:
                self._dispatch_socket_event(event, now, actions)

    def _dispatch_socket_event(self, event: Event, now: float, actions: list[Action]) -> None:
        epoch = getattr(event, "epoch", None)
        if epoch is None or epoch != self._live_epoch:
            self.counters.stale_events += 1
            return
        self._last_heard_at = now
        match event:
            case SocketConnected():
                self._namespace_connected = True
                if self._early_authentication is not None:
                    self._on_authenticated(self._early_authentication, now, actions)
                # Otherwise still waiting for ``authenticated``; rule 1.
            case Authenticated():
                if self._namespace_connected:
                    self._on_authenticated(event, now, actions)
                else:
                    # A server that emits from its connect handler before accepting the
                    # namespace (python-socketio without always_connect): nothing can be
                    # sent until the namespace is connected, so hold it until then.
                    self._early_authentication = event
            case ConnectFailed():
                self._close_live(actions)
                if is_auth_error(event.message):
                    self._on_auth_refused(event.message, now, actions)
                else:
                    self._fail(f"could not connect: {event.message}", now, actions)
            case SocketDisconnected():
                lost = "connection lost" if self.phase is Phase.CONNECTED else "handshake failed"
                self._fail(f"{lost}: {event.reason}", now, actions)
            case GuestTokenReceived():
                self._on_guest_token(event.token, now, actions)
            case RetryAuthRequested():
                self._on_retry_auth(event.reason, now, actions)
            case ServerActivity():
                pass
            case UnknownServerEvent():
                self.counters.unknown_events += 1
            case MalformedPayload():
                self.counters.malformed_payloads += 1
            case AckReceived():
                self._on_ack(event, now, actions)
            case _:  # pragma: no cover - every event type is matched above
                raise AssertionError(f"unhandled event {event!r}")

    # ------------------------------------------------------------------ user requests

    def _on_connect_requested(self, now: float, actions: list[Action]) -> None:
        self._stopped_by_user = False
        if self.phase in (Phase.IDLE, Phase.FAILED):
            self._backoff.reset()
            self._auth_reconnects = 0
            if self._refresh_request is not None:
                # A refresh is still out; starting another would present a refresh token
                # the first one may already have rotated away.
                self.phase = Phase.REFRESHING
            else:
                self._begin_attempt(now, actions)
        elif self.phase is Phase.WAITING:
            if self._after_save is not None:
                # Waiting for the token file: the user's Connect means "try it now".
                if self._save_retry_at is not None:
                    self._save_retry_at = now
            else:
                self._retry_at = now
            self._tick(now, actions)

    def _on_disconnect_requested(self, actions: list[Action]) -> None:
        self._stopped_by_user = True
        self._close_live(actions)
        self.phase = Phase.IDLE
        self._retry_at = None
        self._after_save = None
        if self.tokens == self._saved:
            # Only a refresh was waiting for the file; with no refresh to come, nothing is.
            self._save_retry_at = None
            self._save_error = None

    def _on_credentials_changed(self, tokens: Tokens, now: float, actions: list[Action]) -> None:
        self.tokens = tokens
        self._refresh_request = None  # its answer belongs to the old credentials
        self._notice_is_sticky = False
        self._last_error = None
        self._auth_reconnects = 0
        self._after_save = None
        # The caller saved them, so the file works again.
        self._saved = tokens
        self._save_error = None
        self._save_retry_at = None
        self._save_backoff.reset()
        if self._saves_unanswered:
            # A save of the old tokens may have reached the file after the caller's
            # write: write the new ones again so they are what the file ends up holding.
            self._persist(actions)
        if self.phase in (Phase.CONNECTING, Phase.CONNECTED, Phase.WAITING, Phase.REFRESHING):
            self._close_live(actions)
            self._begin_attempt(now, actions)

    # ------------------------------------------------------------------ socket events

    def _on_authenticated(self, event: Authenticated, now: float, actions: list[Action]) -> None:
        if self.phase is not Phase.CONNECTING:
            return  # a repeated ``authenticated`` changes nothing
        self.phase = Phase.CONNECTED
        self._renewed_since_authenticated = False
        presented_user = self._credential == "user"
        if event.identity is not None:
            # Rule 12: a server cannot make a guest connection look signed in.
            self._identity = "user" if event.identity == "user" and presented_user else "guest"
        else:
            self._identity = "user" if presented_user else "guest"
        self._username = event.username if self._identity == "user" else None
        if self._username is None and self._identity == "user":
            self._username = self.tokens.username
        if not self._notice_is_sticky:
            self._last_error = None
        self._stable_at = now + self.config.backoff.reset_after
        self._next_ping_at = now + self.config.ping_interval
        self._cursor = None
        self._spool_dirty = True
        self._maybe_load(actions)

    def _on_guest_token(self, token: str, now: float, actions: list[Action]) -> None:
        self.tokens = replace(self.tokens, guest_token=token)
        # Opening with it waits for the save to be confirmed (``_open``).
        self._persist(actions)
        if self._credential == "user":
            # Signed in but the server calls us a guest on this socket; reconnecting
            # with the same access token would only get the same answer again.
            return
        self._close_live(actions)
        self._wait_after_auth(self.config.guest_token_reconnect_delay, now)

    def _on_retry_auth(self, reason: str | None, now: float, actions: list[Action]) -> None:
        if reason == CLIENT_ID_TAKEN and self._credential == "none":
            self._renew_client_id(now, actions)
        elif reason == CLIENT_MISMATCH and self._credential == "user":
            # The id is bound to other credentials: a refreshed token would be refused
            # the same way, so go on as the installation's guest (rule 11).
            self._close_live(actions)
            self._sign_out(actions)
            self._last_error = CLIENT_MISMATCH_MESSAGE
            self._wait_after_auth(self.config.retry_auth_reconnect_delay, now)
        else:
            self._on_auth_refused(reason or "retry_auth", now, actions)

    def _renew_client_id(self, now: float, actions: list[Action]) -> None:
        self._close_live(actions)
        if self._renewed_since_authenticated or self._renewing:
            self._fail(
                "server refused the connection: client_id_taken, even for a new id",
                now,
                actions,
            )
            return
        self._renewing = True
        self._renewed_since_authenticated = True
        self.phase = Phase.WAITING
        self._retry_at = None
        actions.append(RenewClientId())

    def _on_client_id_renewed(self, event: ClientIdRenewed, now: float) -> None:
        if not self._renewing:
            self.counters.stale_events += 1
            return
        self._renewing = False
        notice = (
            "the server holds this installation's id for other credentials; "
            f"continuing as a new installation ({event.client_id})"
        )
        if event.problem:
            notice += f", which cannot be stored: {event.problem}"
        self._last_error = notice
        self._notice_is_sticky = True
        if self.phase is Phase.WAITING and self._retry_at is None and self._after_save is None:
            self._wait_after_auth(self.config.guest_token_reconnect_delay, now)

    def _on_auth_refused(self, reason: str, now: float, actions: list[Action]) -> None:
        self._close_live(actions)
        if self._credential == "user":
            if self.tokens.refresh_token is not None:
                self._start_refresh(actions)
            else:
                self._sign_out(actions)
                self._wait_after_auth(self.config.retry_auth_reconnect_delay, now)
        elif self._credential == "guest":
            self.tokens = replace(self.tokens, guest_token=None)
            self._persist(actions)
            self._set_error(f"guest token refused ({reason}); asking for a new one")
            self._wait_after_auth(self.config.guest_token_reconnect_delay, now)
        else:
            self._fail(f"server refused the connection: {reason}", now, actions)

    def _on_ack(self, event: AckReceived, now: float, actions: list[Action]) -> None:
        in_flight = self._in_flight.pop(event.seq, None)
        if in_flight is None:
            self.counters.unexpected_acks += 1
            return
        if event.error is None:
            actions.append(AcknowledgeChunk(event.seq))
            self.counters.chunks_acknowledged += 1
            self._delivery_backoff.reset()
            # The server took a chunk under these credentials: the auth-driven reconnect
            # that led here worked, however short-lived the access token (rule 9).
            self._auth_reconnects = 0
        elif event.error in PERMANENT_REJECTIONS:
            actions.append(DeadLetterChunk(event.seq, event.error, event.message))
            self.counters.chunks_dead_lettered += 1
        elif event.error == "unauthenticated":
            # The chunk stays in the spool; the reconnect resends it.
            self._on_auth_refused("chunk refused: unauthenticated", now, actions)
            return
        else:
            self.counters.chunks_rejected_for_retry += 1
            self._rejected[event.seq] = in_flight.chunk
            if self._resend_rejected_at is None:
                self._resend_rejected_at = now + self._delivery_backoff.next_delay()
            detail = f": {event.message}" if event.message else ""
            self._set_error(f"server rejected chunk {event.seq} ({event.error}){detail}")
        self._maybe_load(actions)

    # ------------------------------------------------------------------ delivery

    def _maybe_load(self, actions: list[Action]) -> None:
        if (
            self.phase is not Phase.CONNECTED
            or self._live_epoch is None
            or self._loading
            or not self._spool_dirty
            or self._resend_rejected_at is not None
        ):
            return
        room = self.config.window - len(self._in_flight) - len(self._rejected)
        if room <= 0:
            return
        self._loading = True
        # Cleared now, so a ``ChunksAppended`` that arrives while loading sets it again.
        self._spool_dirty = False
        self._load_limit = room
        actions.append(LoadChunks(self._live_epoch, self._cursor, room))

    def _on_chunks_loaded(self, event: ChunksLoaded, now: float, actions: list[Action]) -> None:
        if event.epoch != self._live_epoch or not self._loading:
            self.counters.stale_events += 1
            return
        self._loading = False
        room = self.config.window - len(self._in_flight) - len(self._rejected)
        sent = 0
        for chunk in sorted(event.chunks, key=lambda c: c.seq):
            if self._cursor is not None and chunk.seq <= self._cursor:
                continue  # never overtake or repeat ourselves on one socket
            if sent >= room:
                self._spool_dirty = True  # a store that returned too many; load the rest later
                break
            actions.append(SendChunk(event.epoch, chunk))
            self._in_flight[chunk.seq] = _InFlight(chunk, now)
            self._cursor = chunk.seq
            self.counters.chunks_sent += 1
            sent += 1
        if len(event.chunks) >= self._load_limit:
            self._spool_dirty = True  # a full page: there may be more behind it
        self._maybe_load(actions)

    def _resend_rejected(self, now: float, actions: list[Action]) -> None:
        assert self._live_epoch is not None
        self._resend_rejected_at = None
        for seq in sorted(self._rejected):
            chunk = self._rejected.pop(seq)
            actions.append(SendChunk(self._live_epoch, chunk))
            self._in_flight[seq] = _InFlight(chunk, now)
            self.counters.chunks_sent += 1
        self._maybe_load(actions)

    # ------------------------------------------------------------------ refresh

    def _start_refresh(self, actions: list[Action]) -> None:
        self.phase = Phase.REFRESHING
        self._retry_at = None
        if self._refresh_request is not None or self._after_save is not None:
            return  # one refresh at a time; its answer (or its save's) moves us on
        # The server spends the refresh token on disk when it rotates it. Save first,
        # so a file that cannot take the next token is found out before that happens.
        self._after_save = "refresh"
        self._persist(actions)

    def _send_refresh(self, refresh_token: str, actions: list[Action]) -> None:
        """Present ``refresh_token``; called only right after a confirmed save of it."""
        self.phase = Phase.REFRESHING
        self._retry_at = None
        self._refresh_counter += 1
        self._refresh_request = self._refresh_counter
        actions.append(RefreshTokens(self._refresh_request, refresh_token))

    def _on_refresh_result(
        self,
        event: RefreshSucceeded | RefreshRefused | RefreshFailed,
        now: float,
        actions: list[Action],
    ) -> None:
        if event.request_id != self._refresh_request:
            self.counters.stale_events += 1
            return
        self._refresh_request = None
        waiting_for_it = self.phase is Phase.REFRESHING
        match event:
            case RefreshSucceeded():
                self.tokens = replace(
                    self.tokens,
                    access_token=event.access_token,
                    refresh_token=event.refresh_token,
                    user_id=event.user_id or self.tokens.user_id,
                    username=event.username or self.tokens.username,
                )
                # Rule 8: the reconnect that presents them waits for the save.
                self._persist(actions)
                if waiting_for_it:
                    self._after_save = "reconnect"
            case RefreshRefused():
                self._sign_out(actions)
                if waiting_for_it:
                    self._wait_after_auth(self.config.retry_auth_reconnect_delay, now)
            case RefreshFailed():
                if waiting_for_it:
                    self._set_error(f"could not refresh the session: {event.message}")
                    self.phase = Phase.WAITING
                    self._retry_then = "refresh"
                    self._retry_at = now + self._backoff.next_delay()

    def _sign_out(self, actions: list[Action]) -> None:
        self.tokens = replace(
            self.tokens, access_token=None, refresh_token=None, user_id=None, username=None
        )
        self._persist(actions)
        self._last_error = SIGNED_OUT_MESSAGE
        self._notice_is_sticky = True

    # ------------------------------------------------------------------ the token file

    def _persist(self, actions: list[Action]) -> None:
        """Ask the shell to save the tokens held; its answer comes back as an event."""
        self._saves_unanswered += 1
        actions.append(PersistTokens(self.tokens))

    def _on_disk(self, token: str | None) -> bool:
        return token is None or token in (self._saved.access_token, self._saved.guest_token)

    def _on_tokens_saved(self, tokens: Tokens, now: float, actions: list[Action]) -> None:
        self._saves_unanswered = max(0, self._saves_unanswered - 1)
        self._saved = tokens
        if self._saves_unanswered:
            return  # the answer to a later save decides
        if self.tokens != tokens:
            # The file lags behind what we hold (credentials changed meanwhile): catch up.
            self._persist(actions)
            return
        self._save_error = None
        self._save_retry_at = None
        self._save_backoff.reset()
        then, self._after_save = self._after_save, None
        if then == "refresh":
            refresh_token = self.tokens.refresh_token
            if refresh_token is not None and self._refresh_request is None:
                self._send_refresh(refresh_token, actions)
            else:
                self._begin_attempt(now, actions)
        elif then == "reconnect":
            self._wait_after_auth(0.0, now)
            self._tick(now, actions)
        elif then == "open":
            self.phase = Phase.WAITING
            self._retry_then = "open"
            self._retry_at = now
            self._tick(now, actions)

    def _on_tokens_not_saved(self, reason: str, now: float, actions: list[Action]) -> None:
        self._saves_unanswered = max(0, self._saves_unanswered - 1)
        if self.tokens == self._saved and self._after_save is None:
            return  # the file already holds what we hold, and nothing waits for a save
        self._save_error = f"cannot save tokens: {reason}"
        if self._save_retry_at is None:
            self._save_retry_at = now + self._save_backoff.next_delay()
        if self._after_save is not None and self.phase is Phase.REFRESHING:
            # Hold what waited for the save: disconnected, counting down to the next try.
            self.phase = Phase.WAITING
            self._retry_at = None

    def _next_retry_at(self) -> float | None:
        if self.phase is not Phase.WAITING:
            return None
        if self._after_save is not None:
            return self._save_retry_at
        return self._retry_at

    # ------------------------------------------------------------------ time

    def _tick(self, now: float, actions: list[Action]) -> None:
        if self._save_retry_at is not None and now >= self._save_retry_at:
            self._save_retry_at = None
            self._persist(actions)
        if self.phase is Phase.WAITING:
            if self._retry_at is not None and now >= self._retry_at:
                if self._retry_then == "refresh" and self.tokens.refresh_token is not None:
                    self._start_refresh(actions)
                else:
                    self._begin_attempt(now, actions)
        elif self.phase is Phase.CONNECTING:
            if now >= self._attempt_started_at + self.config.handshake_timeout:
                timeout = _seconds(self.config.handshake_timeout)
                self._fail(f"server did not authenticate within {timeout}", now, actions)
        elif self.phase is Phase.CONNECTED:
            self._tick_connected(now, actions)

    def _tick_connected(self, now: float, actions: list[Action]) -> None:
        if self._stable_at is not None and now >= self._stable_at:
            self._stable_at = None
            self._backoff.reset()
            self._auth_reconnects = 0
        if now >= self._last_heard_at + self.config.silence_timeout:
            silence = _seconds(self.config.silence_timeout)
            self._fail(f"no word from the server for {silence}", now, actions)
            return
        if self._in_flight:
            oldest = min(item.sent_at for item in self._in_flight.values())
            if now >= oldest + self.config.ack_timeout:
                timeout = _seconds(self.config.ack_timeout)
                self._fail(f"no acknowledgement within {timeout}", now, actions)
                return
        if self._next_ping_at is not None and now >= self._next_ping_at:
            assert self._live_epoch is not None
            actions.append(SendPing(self._live_epoch))
            self._next_ping_at = now + self.config.ping_interval
        if self._resend_rejected_at is not None and now >= self._resend_rejected_at:
            self._resend_rejected(now, actions)

    # ------------------------------------------------------------------ transitions

    def _begin_attempt(self, now: float, actions: list[Action]) -> None:
        if self.tokens.access_token is None and self.tokens.refresh_token is not None:
            # Signed in without a usable access token (e.g. it was dropped as expired):
            # presenting the guest token instead would quietly sign the user out.
            self._start_refresh(actions)
        else:
            self._open(now, actions)

    def _open(self, now: float, actions: list[Action]) -> None:
        if not self._on_disk(self.tokens.handshake_token):
            # Rule 8: hold until a save of it is confirmed.
            self.phase = Phase.WAITING
            self._retry_at = None
            self._after_save = "open"
            if self._saves_unanswered == 0 and self._save_retry_at is None:
                self._persist(actions)
            return
        self._epoch += 1
        self._live_epoch = self._epoch
        if self.tokens.access_token is not None:
            token: str | None = self.tokens.access_token
            self._credential = "user"
        elif self.tokens.guest_token is not None:
            token = self.tokens.guest_token
            self._credential = "guest"
        else:
            token = None
            self._credential = "none"
        self.phase = Phase.CONNECTING
        self._retry_at = None
        self._attempt_started_at = now
        self._namespace_connected = False
        self._early_authentication = None
        self._last_heard_at = now
        self.counters.sockets_opened += 1
        actions.append(OpenSocket(self._epoch, token, self._credential))

    def _close_live(self, actions: list[Action]) -> None:
        """Close the live socket, if any, and forget everything tied to it."""
        if self._live_epoch is not None:
            actions.append(CloseSocket(self._live_epoch))
        self._live_epoch = None
        self._identity = None
        self._username = None
        self._stable_at = None
        self._next_ping_at = None
        self._in_flight.clear()
        self._rejected.clear()
        self._resend_rejected_at = None
        self._cursor = None
        self._loading = False
        self._spool_dirty = True

    def _fail(self, error: str, now: float, actions: list[Action]) -> None:
        """A connection-level failure: close, then reconnect after the backoff delay."""
        self._close_live(actions)
        self._set_error(error)
        self.phase = Phase.WAITING
        self._retry_then = "open"
        self._retry_at = now + self._backoff.next_delay()

    def _wait_after_auth(self, delay: float, now: float) -> None:
        """Reconnect soon after an auth step, backing off if auth keeps failing."""
        self._auth_reconnects += 1
        if self._auth_reconnects > self.config.auth_reconnects_before_backoff:
            delay = max(delay, self._backoff.next_delay())
        self.phase = Phase.WAITING
        self._retry_then = "open"
        self._retry_at = now + delay

    def _set_error(self, message: str) -> None:
        self._last_error = message
        self._notice_is_sticky = False

    def _after(self, now: float, actions: list[Action]) -> None:
        key = (
            self.phase,
            self._identity,
            self._username,
            self._backoff.failures,
            self._next_retry_at(),
            self._save_error,
            self._last_error,
        )
        if key != self._published_key:
            self._published_key = key
            actions.append(StatusChanged(self.status(now)))
