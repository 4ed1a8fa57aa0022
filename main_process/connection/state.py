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

``ConnectionState`` is a plain object. The asyncio shell (``connection/server_connection.py``) feeds it
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

Every phase change is one of these moves, each from the phases listed and to the phase
after the arrow. The table is data, ``connection_phases.PHASE_MOVES``; the code changes
the phase only through it (``PhaseMachine.move``), and a move it does not hold raises
``IllegalPhaseMove`` (a test checks this block against the table)::

    open             any phase → CONNECTING
    authenticate     CONNECTING → CONNECTED
    fail             CONNECTING, CONNECTED → WAITING
    wait_after_auth  WAITING, CONNECTING, REFRESHING, CONNECTED → WAITING
    hold_for_save    IDLE, WAITING, FAILED → WAITING
    save_confirmed   WAITING → WAITING
    start_refresh    any phase → REFRESHING
    await_refresh    IDLE, FAILED → REFRESHING
    send_refresh     WAITING, REFRESHING → REFRESHING
    refresh_failed   REFRESHING → WAITING
    save_failed      REFRESHING → WAITING
    renew_client_id  CONNECTING, CONNECTED → WAITING
    disconnect       any phase → IDLE
    fatal            any phase → FAILED

An illegal move is a bug: in tests it fails the test; in production the shell logs it
with the event that caused it and goes on (``connection/phases.py`` says how the machine
recovers).

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
full beyond the room ``credentials.py`` keeps for the token file (a small reserve, so that
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

The parts
=========

The machine is composed of parts, each I/O-free and tested through it:

- ``connection/events.py``: the events, the actions and the values they carry.
- ``connection/phases.py``: the phases and the table of moves between them.
- ``live_socket.py``: the live socket's epoch, credential, identity and timers.
- ``delivery_window.py``: the chunks in flight and waiting, the adaptive batching rule.
- ``token_refresh.py``: the tokens held, the token file's confirmed state, the refresh.
- ``connection/steps.py``: ``ConnectionSteps``, the state shared by the steps the machine
  takes (open, close, fail, wait, start a refresh), what is due on a tick, and status.

This module owns ``ConnectionState`` (``ConnectionSteps`` plus the reactions: which event
leads to which step), whether a ``connect_error`` refuses a token (``is_auth_error``; the
bounds on a server's words are ``protocol.text``'s) and the user-facing sign-out notices;
it re-exports the parts' names that ``connection/server_connection.py`` and the tests import from it.

This module must not do I/O or import asyncio, socketio or aiohttp. It takes the
``Tokens`` value type (pure data) from ``credentials.py``, which owns the token file.
"""

from __future__ import annotations

import random

from main_process.connection.backoff import RandomSource
from main_process.connection.delivery_window import (
    PERMANENT_REJECTIONS,
    SEND_AT_ONCE_BELOW,
    AckOutcome,
)
from main_process.connection.events import (
    AcknowledgeChunk,
    AckReceived,
    Action,
    Authenticated,
    Chunk,
    ChunkLocation,
    ChunkOrigin,
    ChunksAppended,
    ChunksLoaded,
    ClientIdRenewed,
    CloseSocket,
    ConnectFailed,
    ConnectionConfig,
    ConnectionCounters,
    ConnectionStateName,
    ConnectionStatus,
    ConnectRequested,
    Credential,
    CredentialsChanged,
    DeadLetterChunk,
    DisconnectRequested,
    EnsureConnected,
    Event,
    FatalError,
    GuestTokenReceived,
    Identity,
    LoadChunks,
    MalformedPayload,
    OpenSocket,
    OutgoingChunk,
    PersistTokens,
    RefreshFailed,
    RefreshRefused,
    RefreshSucceeded,
    RefreshTokens,
    RenewClientId,
    RetryAuthRequested,
    SendChunk,
    SendPing,
    ServerActivity,
    SocketConnected,
    SocketDisconnected,
    StatusChanged,
    TokensNotSaved,
    TokensSaved,
    UnknownServerEvent,
)
from main_process.connection.phases import (
    IllegalPhaseMove,
    Phase,
    PhaseMove,
)
from main_process.connection.steps import ConnectionSteps
from main_process.credentials import Tokens
from protocol.text import MAX_MESSAGE_CHARS, MAX_NAME_CHARS, MAX_TOKEN_CHARS, bounded_text

__all__ = [
    "AUTH_ERROR_MARKERS",
    "CLIENT_ID_TAKEN",
    "CLIENT_MISMATCH",
    "CLIENT_MISMATCH_MESSAGE",
    "MAX_MESSAGE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TOKEN_CHARS",
    "PERMANENT_REJECTIONS",
    "SEND_AT_ONCE_BELOW",
    "SIGNED_OUT_MESSAGE",
    "AckReceived",
    "AcknowledgeChunk",
    "Action",
    "Authenticated",
    "Chunk",
    "ChunkLocation",
    "ChunkOrigin",
    "ChunksAppended",
    "ChunksLoaded",
    "ClientIdRenewed",
    "CloseSocket",
    "ConnectFailed",
    "ConnectRequested",
    "ConnectionConfig",
    "ConnectionCounters",
    "ConnectionState",
    "ConnectionStateName",
    "ConnectionStatus",
    "Credential",
    "CredentialsChanged",
    "DeadLetterChunk",
    "DisconnectRequested",
    "EnsureConnected",
    "Event",
    "FatalError",
    "GuestTokenReceived",
    "Identity",
    "IllegalPhaseMove",
    "LoadChunks",
    "MalformedPayload",
    "OpenSocket",
    "OutgoingChunk",
    "PersistTokens",
    "Phase",
    "RefreshFailed",
    "RefreshRefused",
    "RefreshSucceeded",
    "RefreshTokens",
    "RenewClientId",
    "RetryAuthRequested",
    "SendChunk",
    "SendPing",
    "ServerActivity",
    "SocketConnected",
    "SocketDisconnected",
    "StatusChanged",
    "TokensNotSaved",
    "TokensSaved",
    "UnknownServerEvent",
    "bounded_text",
    "is_auth_error",
]

SIGNED_OUT_MESSAGE = "session expired; signed out, continuing as guest"
CLIENT_MISMATCH_MESSAGE = (
    "the server ties this installation's id to other credentials; signed out, continuing as guest"
)
CLIENT_ID_TAKEN = "client_id_taken"
CLIENT_MISMATCH = "client_mismatch"
AUTH_ERROR_MARKERS = ("invalid signature", "auth", "jwt expired")

# ----------------------------------------------------------------------------- helpers


def is_auth_error(message: str) -> bool:
    """Whether a ``connect_error`` message means "your token was refused" (PROTOCOL §2)."""
    lowered = message.lower()
    return any(marker in lowered for marker in AUTH_ERROR_MARKERS)


class ConnectionState(ConnectionSteps):
    """The connection's state machine: events in, actions out. See the module docstring."""

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        tokens: Tokens | None = None,
        random_source: RandomSource = random.random,
    ) -> None:
        super().__init__(config, tokens, random_source)
        self._stopped_by_user = False
        # Rule 11: a new installation id is being made, and whether one was made since the
        # last ``authenticated`` (a second ``client_id_taken`` then is a plain failure).
        self._renewing = False
        self._renewed_since_authenticated = False

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; return the actions to execute, in order."""
        actions: list[Action] = []
        self._dispatch(event, now, actions)
        self._after(now, actions)
        return actions

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
                self._delivery.spool_grew()
                self._deliver(actions)
            case ChunksLoaded():
                if self._delivery.on_chunks_loaded(event, self._socket.epoch, now, actions):
                    self._deliver(actions)
            case CredentialsChanged():
                self._on_credentials_changed(event.tokens, now, actions)
            case FatalError():
                self._close_live(actions)
                self._phases.move(PhaseMove.FATAL)
                self._retry_at = None
                self._token_flow.stop_waiting()
                self._set_error(event.message)
            case RefreshSucceeded() | RefreshRefused() | RefreshFailed():
                self._on_refresh_result(event, now, actions)
            case ClientIdRenewed():
                self._on_client_id_renewed(event, now)
            case TokensSaved():
                self._on_tokens_saved(event.tokens, now, actions)
            case TokensNotSaved():
                if self._token_flow.on_not_saved(event.reason, now) and (
                    self.phase is Phase.REFRESHING
                ):
                    # Hold what waited for the save: disconnected, counting down to the
                    # next try.
                    self._phases.move(PhaseMove.SAVE_FAILED)
                    self._retry_at = None
            case _:
                self._dispatch_socket_event(event, now, actions)

    def _dispatch_socket_event(self, event: Event, now: float, actions: list[Action]) -> None:
        epoch = getattr(event, "epoch", None)
        if epoch is None or epoch != self._socket.epoch:
            self.counters.stale_events += 1
            return
        self._socket.last_heard_at = now
        match event:
            case SocketConnected():
                self._socket.namespace_connected = True
                if self._socket.early_authentication is not None:
                    self._on_authenticated(self._socket.early_authentication, now, actions)
                # Otherwise still waiting for ``authenticated``; rule 1.
            case Authenticated():
                if self._socket.namespace_connected:
                    self._on_authenticated(event, now, actions)
                else:
                    # A server that emits from its connect handler before accepting the
                    # namespace (python-socketio without always_connect): nothing can be
                    # sent until the namespace is connected, so hold it until then.
                    self._socket.early_authentication = event
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
            if self._token_flow.refresh_request is not None:
                # A refresh is still out; starting another would present a refresh token
                # the first one may already have rotated away.
                self._phases.move(PhaseMove.AWAIT_REFRESH)
            else:
                self._begin_attempt(now, actions)
        elif self.phase is Phase.WAITING:
            if self._token_flow.after_save is not None:
                # Waiting for the token file: the user's Connect means "try it now".
                self._token_flow.retry_save_now(now)
            else:
                self._retry_at = now
            self._tick(now, actions)

    def _on_disconnect_requested(self, actions: list[Action]) -> None:
        self._stopped_by_user = True
        self._close_live(actions)
        self._phases.move(PhaseMove.DISCONNECT)
        self._retry_at = None
        self._token_flow.stop_waiting()
        # Only a refresh was waiting for the file; with no refresh to come, nothing is.
        self._token_flow.stop_retrying_if_saved()

    def _on_credentials_changed(self, tokens: Tokens, now: float, actions: list[Action]) -> None:
        self._notice_is_sticky = False
        self._last_error = None
        self._auth_reconnects = 0
        self._token_flow.replace_credentials(tokens, actions)
        if self.phase in (Phase.CONNECTING, Phase.CONNECTED, Phase.WAITING, Phase.REFRESHING):
            self._close_live(actions)
            self._begin_attempt(now, actions)

    # ------------------------------------------------------------------ socket events

    def _on_authenticated(self, event: Authenticated, now: float, actions: list[Action]) -> None:
        if self.phase is not Phase.CONNECTING:
            return  # a repeated ``authenticated`` changes nothing
        self._phases.move(PhaseMove.AUTHENTICATE)
        self._renewed_since_authenticated = False
        self._socket.authenticate(event, self.tokens, now)
        if not self._notice_is_sticky:
            self._last_error = None
        self._delivery.restart()
        self._deliver(actions)

    def _on_guest_token(self, token: str, now: float, actions: list[Action]) -> None:
        # Opening with it waits for the save to be confirmed (``_open``).
        self._token_flow.keep_guest_token(token, actions)
        if self._socket.credential == "user":
            # Signed in but the server calls us a guest on this socket; reconnecting
            # with the same access token would only get the same answer again.
            return
        self._close_live(actions)
        self._wait_after_auth(self.config.guest_token_reconnect_delay, now)

    def _on_retry_auth(self, reason: str | None, now: float, actions: list[Action]) -> None:
        if reason == CLIENT_ID_TAKEN and self._socket.credential == "none":
            self._renew_client_id(now, actions)
        elif reason == CLIENT_MISMATCH and self._socket.credential == "user":
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
        self._phases.move(PhaseMove.RENEW_CLIENT_ID)
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
        if (
            self.phase is Phase.WAITING
            and self._retry_at is None
            and self._token_flow.after_save is None
        ):
            self._wait_after_auth(self.config.guest_token_reconnect_delay, now)

    def _on_auth_refused(self, reason: str, now: float, actions: list[Action]) -> None:
        self._close_live(actions)
        if self._socket.credential == "user":
            if self.tokens.refresh_token is not None:
                self._start_refresh(actions)
            else:
                self._sign_out(actions)
                self._wait_after_auth(self.config.retry_auth_reconnect_delay, now)
        elif self._socket.credential == "guest":
            self._token_flow.keep_guest_token(None, actions)
            self._set_error(f"guest token refused ({reason}); asking for a new one")
            self._wait_after_auth(self.config.guest_token_reconnect_delay, now)
        else:
            self._fail(f"server refused the connection: {reason}", now, actions)

    def _on_ack(self, event: AckReceived, now: float, actions: list[Action]) -> None:
        outcome = self._delivery.on_ack(event, now, actions)
        if outcome is AckOutcome.UNEXPECTED:
            return
        if outcome is AckOutcome.DELIVERED:
            # The server took a chunk under these credentials: the auth-driven reconnect
            # that led here worked, however short-lived the access token (rule 9).
            self._auth_reconnects = 0
        elif outcome is AckOutcome.UNAUTHENTICATED:
            # The chunk stays in the spool; the reconnect resends it.
            self._on_auth_refused("chunk refused: unauthenticated", now, actions)
            return
        elif outcome is AckOutcome.REJECTED:
            detail = f": {event.message}" if event.message else ""
            self._set_error(f"server rejected chunk {event.seq} ({event.error}){detail}")
        self._deliver(actions)

    def _on_refresh_result(
        self,
        event: RefreshSucceeded | RefreshRefused | RefreshFailed,
        now: float,
        actions: list[Action],
    ) -> None:
        if not self._token_flow.take_answer(event):
            self.counters.stale_events += 1
            return
        waiting_for_it = self.phase is Phase.REFRESHING
        match event:
            case RefreshSucceeded():
                # Rule 8: the reconnect that presents them waits for the save.
                self._token_flow.keep_rotated(event, actions)
                if waiting_for_it:
                    self._token_flow.after_save = "reconnect"
            case RefreshRefused():
                self._sign_out(actions)
                if waiting_for_it:
                    self._wait_after_auth(self.config.retry_auth_reconnect_delay, now)
            case RefreshFailed():
                if waiting_for_it:
                    self._set_error(f"could not refresh the session: {event.message}")
                    self._phases.move(PhaseMove.REFRESH_FAILED)
                    self._retry_then = "refresh"
                    self._retry_at = now + self._backoff.next_delay()

    def _sign_out(self, actions: list[Action]) -> None:
        self._token_flow.sign_out(actions)
        self._last_error = SIGNED_OUT_MESSAGE
        self._notice_is_sticky = True

    def _on_tokens_saved(self, tokens: Tokens, now: float, actions: list[Action]) -> None:
        then = self._token_flow.on_saved(tokens, actions)
        if then == "refresh":
            refresh_token = self.tokens.refresh_token
            if refresh_token is not None and self._token_flow.refresh_request is None:
                self._phases.move(PhaseMove.SEND_REFRESH)
                self._retry_at = None
                self._token_flow.send(refresh_token, actions)
            else:
                self._begin_attempt(now, actions)
        elif then == "reconnect":
            self._wait_after_auth(0.0, now)
            self._tick(now, actions)
        elif then == "open":
            self._phases.move(PhaseMove.SAVE_CONFIRMED)
            self._retry_then = "open"
            self._retry_at = now
            self._tick(now, actions)
