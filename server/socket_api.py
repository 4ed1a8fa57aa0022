"""The Socket.IO half of the reference server: namespace ``/client``.

What a connection goes through (PROTOCOL.md sections 2 to 4):

1. The handshake is always accepted at the transport level (``always_connect``) and then
   judged by :meth:`AuthService.handshake`: the client is told ``authenticated``,
   ``guestToken`` or ``retry_auth`` (including the installation-binding reasons
   ``client_mismatch`` and ``client_id_taken``). An unauthenticated connection may stay
   open (the client closes it), but every chunk it submits is answered
   ``unauthenticated``.
2. ``submit_log_chunk`` is validated (``protocol.parse_submit_log_chunk``), checked
   against the handshake's ``clientId`` (its ``chunkId`` must start with
   ``"<clientId>:"``, so no connection can name another installation's chunks) and the
   size limit, committed, and only then acknowledged. Chunks of all connections are
   committed in groups (``server/group_commit.py``); a chunk whose group failed to commit
   is answered ``{"error": "server_error", …}``, which the client sends again.
3. When a user's access token expires while connected, the server says ``retry_auth``
   at that instant and stops accepting chunks on the connection; so it does at the first
   chunk after the user's session was revoked or the user deleted, and at once when the
   end of the session is announced (:meth:`ClientNamespace.end_sessions`: a refresh
   token presented twice, or ``revoke``/``delete-user`` with ``--redis``, which reaches
   every node through the Redis client manager, ``server/cluster.py``). A user's
   connection is in the rooms of its user and its session for that.
4. ``ping`` is validated too (``protocol.parse_ping``): ``pong`` carries the ping's
   timestamp only when it is a finite number in range (JSON has no NaN or Infinity), else
   the server's clock.

Order: python-socketio would run each event handler as its own task, so two chunks of
one connection could commit out of order. The server is built with
``async_handlers=False``: each connection's events are handled one after another inside
that connection's reader, while other connections go on independently.

Nothing a client sends can raise out of a handler: every handler catches, answers with an
error ack where there is an ack to send, counts, and logs one line. A packet python-socketio
cannot even decode (a 301-digit number, 100,000 nested arrays, an unknown packet type) is
dropped with one line and a count too, instead of a traceback from the library.

The payloads' shapes, the event names and the namespace are ``protocol``'s; this module
holds what the server does with them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from protocol import (
    AUTHENTICATED,
    DEFAULT_NAMESPACE,
    GUEST_TOKEN,
    PING,
    PONG,
    PROCESSED_EVENT,
    RETRY_AUTH,
    SUBMIT_LOG_CHUNK,
    AuthenticatedEvent,
    ChunkAccepted,
    ChunkRefused,
    ChunkStoredEvent,
    GuestTokenEvent,
    PongEvent,
    ProtocolError,
    RetryAuthEvent,
    SubmitLogChunk,
    parse_handshake,
    parse_ping,
    parse_submit_log_chunk,
    to_wire,
)
from server.auth import (
    AuthService,
    GuestIdentity,
    IssueGuestToken,
    RetryAuth,
    UserIdentity,
    valid_client_id,
)
from server.cluster import session_room, user_room
from server.group_commit import GroupCommitter
from server.storage import IncomingChunk, StoreOutcome

log = logging.getLogger("log_monitor_server.socket")

NAMESPACE = DEFAULT_NAMESPACE
_SERVER_ERROR = ChunkRefused("server_error", "the server could not store the chunk")
_UNAUTHENTICATED = ChunkRefused("unauthenticated")


class CommitFailed(Exception):
    """The group a chunk was in could not be committed; nothing of it was stored."""


@dataclass
class ClientConnection:
    client_id: str | None
    hostname: str
    identity: str | None = None
    owner_id: str | None = None
    username: str | None = None
    session_id: str | None = None
    expiry: asyncio.TimerHandle | None = None

    @property
    def shown_id(self) -> str:
        """The client id for a log line: as is when valid, else quoted and cut short."""
        if self.client_id is not None and valid_client_id(self.client_id):
            return self.client_id
        return f"{self.client_id!r:.60}"


@dataclass
class SocketCounters:
    connections: int = 0
    chunks_stored: int = 0
    bytes_stored: int = 0
    duplicates: int = 0
    rejected_invalid: int = 0
    rejected_too_large: int = 0
    rejected_unauthenticated: int = 0
    unknown_events: int = 0
    internal_errors: int = 0
    commit_failures: int = 0
    sessions_ended_at_once: int = 0
    retry_auth_sent: int = 0
    binding_refusals: int = 0
    guest_tokens_issued: int = 0
    invalid_pings: int = 0
    undecodable_packets: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        values = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        return values | self.extra


class ClientNamespace:
    """Registers the ``/client`` handlers on an ``AsyncServer`` and keeps per-sid state.

    It also wraps the server's Engine.IO message handler (python-socketio's packet
    decoder), so an undecodable packet costs a count and one log line."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        auth: AuthService,
        committer: GroupCommitter,
        max_chunk_bytes: int,
        processed_events: bool = False,
    ) -> None:
        self._sio = sio
        self._auth = auth
        self._committer = committer
        self._max_chunk_bytes = max_chunk_bytes
        self._processed_events = processed_events
        self._connections: dict[str, ClientConnection] = {}
        self.counters = SocketCounters()
        sio.on("connect", self._on_connect, namespace=NAMESPACE)
        sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        sio.on(SUBMIT_LOG_CHUNK, self._on_submit_log_chunk, namespace=NAMESPACE)
        sio.on(PING, self._on_ping, namespace=NAMESPACE)
        sio.on("*", self._on_unknown_event, namespace=NAMESPACE)
        decode_and_dispatch = sio.eio.handlers["message"]
        sio.eio.on("message", self._guard_packets(decode_and_dispatch))

    def _guard_packets(
        self, decode_and_dispatch: Callable[[str, Any], Awaitable[None]]
    ) -> Callable[[str, Any], Awaitable[None]]:
        async def guarded(eio_sid: str, data: Any) -> None:
            try:
                await decode_and_dispatch(eio_sid, data)
            except (ValueError, RecursionError, TypeError) as exc:
                # What python-socketio raises for a packet it cannot decode: bad JSON, a
                # number over 100 digits, nesting past the recursion limit, an unknown
                # packet type, binary where text belongs. The peer's doing, not a bug.
                self.counters.undecodable_packets += 1
                log.info(
                    "undecodable packet from %s dropped (%s: %.120s)",
                    eio_sid,
                    type(exc).__name__,
                    exc,
                )

        return guarded

    async def _on_connect(
        self, sid: str, environ: Any = None, auth: Any = None, *extra: Any
    ) -> dict[str, Any] | None:
        if sid in self._connections or not isinstance(environ, dict):
            # Not a handshake: python-socketio also calls this for an ordinary event a
            # client named "connect".
            return await self._on_unknown_event("connect", sid)
        handshake = parse_handshake(str(environ.get("QUERY_STRING", "")), auth)
        connection = ClientConnection(client_id=handshake.client_id, hostname=handshake.hostname)
        self._connections[sid] = connection
        self.counters.connections += 1
        try:
            outcome = await self._auth.handshake(
                handshake.token, handshake.client_id or "", handshake.hostname
            )
        except Exception:
            self.counters.internal_errors += 1
            log.exception("handshake of %s failed", sid)
            await self._emit(sid, RETRY_AUTH, RetryAuthEvent("server_error"))
            return None
        if isinstance(outcome, UserIdentity):
            connection.identity = "user"
            connection.owner_id = outcome.user_id
            connection.username = outcome.username
            connection.session_id = outcome.session_id
            delay = max(0.0, outcome.expires_at - time.time())
            connection.expiry = asyncio.get_running_loop().call_later(delay, self._expire, sid)
            # Rooms, so the end of the session or of the user reaches this connection at
            # once, from this node or another (end_sessions).
            await self._sio.enter_room(sid, user_room(outcome.user_id), namespace=NAMESPACE)
            await self._sio.enter_room(sid, session_room(outcome.session_id), namespace=NAMESPACE)
            log.info("client %s authenticated as user %s", connection.shown_id, outcome.username)
            authenticated = AuthenticatedEvent(
                "user", userId=outcome.user_id, username=outcome.username
            )
            await self._emit(sid, AUTHENTICATED, authenticated, ignore_queue=True)
        elif isinstance(outcome, GuestIdentity):
            connection.identity = "guest"
            connection.owner_id = outcome.guest_id
            log.info("client %s authenticated as guest", connection.shown_id)
            authenticated = AuthenticatedEvent("guest", guestId=outcome.guest_id)
            await self._emit(sid, AUTHENTICATED, authenticated, ignore_queue=True)
        elif isinstance(outcome, IssueGuestToken):
            self.counters.guest_tokens_issued += 1
            log.info("client %s given a guest token", connection.shown_id)
            await self._emit(sid, GUEST_TOKEN, GuestTokenEvent(outcome.token))
        elif isinstance(outcome, RetryAuth):
            self.counters.retry_auth_sent += 1
            if outcome.reason in ("client_mismatch", "client_id_taken", "invalid_client_id"):
                self.counters.binding_refusals += 1
            log.info("client %s told to retry auth (%s)", connection.shown_id, outcome.reason)
            await self._emit(sid, RETRY_AUTH, RetryAuthEvent(outcome.reason))
        return None

    async def _emit(
        self, sid: str, event: str, payload: Any, *, ignore_queue: bool = False
    ) -> None:
        """Send ``event`` with ``payload`` (a ``protocol`` Struct) to one connection."""
        await self._sio.emit(
            event, to_wire(payload), to=sid, namespace=NAMESPACE, ignore_queue=ignore_queue
        )

    def _expire(self, sid: str, reason: str = "token_expired") -> None:
        """Stop taking chunks as the user on this connection and say ``retry_auth``."""
        connection = self._connections.get(sid)
        if connection is None or connection.identity != "user":
            return
        connection.identity = None
        if connection.expiry is not None:
            connection.expiry.cancel()
            connection.expiry = None
        self.counters.retry_auth_sent += 1
        if reason == "token_expired":
            log.info("access token of client %s expired while connected", connection.shown_id)
        else:
            log.info("session of client %s ended while connected (%s)", connection.shown_id, reason)
        task = asyncio.ensure_future(
            self._emit(sid, RETRY_AUTH, RetryAuthEvent(reason), ignore_queue=True)
        )
        task.add_done_callback(_log_task_failure)

    def end_sessions(self, room: str, reason: str = "token_revoked") -> int:
        """End, at once, the user sessions of this node's connections in ``room`` (a
        user's or a session's); returns how many."""
        ended = 0
        for sid, _ in list(self._sio.manager.get_participants(NAMESPACE, room)):
            connection = self._connections.get(sid)
            if connection is not None and connection.identity == "user":
                self._expire(sid, reason)
                ended += 1
        self.counters.sessions_ended_at_once += ended
        return ended

    async def _on_disconnect(
        self, sid: str, reason: Any = None, *extra: Any
    ) -> dict[str, Any] | None:
        if self._sio.manager.is_connected(sid, NAMESPACE):
            # Still connected, so not a disconnect: an ordinary event named "disconnect"
            # (python-socketio marks a socket as leaving before calling this for real).
            return await self._on_unknown_event("disconnect", sid)
        connection = self._connections.pop(sid, None)
        if connection is not None and connection.expiry is not None:
            connection.expiry.cancel()
        return None

    async def _on_submit_log_chunk(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            return await self._submit(sid, args)
        except Exception:
            self.counters.internal_errors += 1
            log.exception("submit_log_chunk from %s failed", sid)
            return _ack(_SERVER_ERROR)

    async def _submit(self, sid: str, args: tuple[Any, ...]) -> dict[str, Any]:
        connection = self._connections.get(sid)
        if connection is None or connection.identity is None:
            self.counters.rejected_unauthenticated += 1
            return _ack(_UNAUTHENTICATED)
        try:
            payload = parse_submit_log_chunk(args)
        except ProtocolError as exc:
            return self._invalid(str(exc))
        if connection.client_id is None or payload.clientId != connection.client_id:
            return self._invalid("clientId does not match the connection's clientId")
        if payload.chunkId is not None and not payload.chunkId.startswith(
            f"{connection.client_id}:"
        ):
            # Dedup is on chunkId: a foreign prefix could make another installation's
            # chunk be answered ``duplicate`` and dropped from its spool.
            return self._invalid('chunkId must start with "<clientId>:"')
        try:
            size = len(payload.chunk.encode("utf-8"))
            for text in (payload.chunkId, payload.source.path if payload.source else None):
                if text is not None:
                    text.encode("utf-8")
        except UnicodeEncodeError:
            return self._invalid("chunk, chunkId or source.path is not valid Unicode text")
        if size > self._max_chunk_bytes:
            self.counters.rejected_too_large += 1
            too_large = f"chunk is {size} bytes; the limit is {self._max_chunk_bytes}"
            return _ack(ChunkRefused("too_large", too_large))
        try:
            outcome = await self._store_chunk(payload, connection)
        except CommitFailed:
            # The group this chunk was in was not committed (logged once for the group):
            # not the client's fault, and not permanent, so it sends the chunk again.
            self.counters.commit_failures += 1
            return _ack(_SERVER_ERROR)
        if outcome is StoreOutcome.SESSION_ENDED:
            # Revoked (log-monitor-server revoke) or deleted since the handshake.
            self._expire(sid, "token_revoked")
            self.counters.rejected_unauthenticated += 1
            return _ack(_UNAUTHENTICATED)
        duplicate = outcome is StoreOutcome.DUPLICATE
        ack = _ack(ChunkAccepted(ok=True, chunkId=payload.chunkId, duplicate=duplicate))
        if duplicate:
            self.counters.duplicates += 1
            return ack
        self.counters.chunks_stored += 1
        self.counters.bytes_stored += size
        if self._processed_events:
            stored = ChunkStoredEvent(
                chunkId=payload.chunkId, bytes=size, lines=payload.chunk.count("\n")
            )
            await self._emit(sid, PROCESSED_EVENT, stored, ignore_queue=True)
        return ack

    async def _store_chunk(
        self, payload: SubmitLogChunk, connection: ClientConnection
    ) -> StoreOutcome:
        assert connection.identity is not None
        try:
            return await self._committer.store(
                IncomingChunk(
                    client_id=payload.clientId,
                    chunk_id=payload.chunkId,
                    seq=payload.seq,
                    text=payload.chunk,
                    source_path=payload.source.path if payload.source else None,
                    source_offset=payload.source.offset if payload.source else None,
                    sent_at=payload.sentAt,
                    identity=connection.identity,
                    owner_id=connection.owner_id,
                ),
                connection.session_id if connection.identity == "user" else None,
            )
        except Exception as exc:
            raise CommitFailed(str(exc)) from exc

    def _invalid(self, message: str) -> dict[str, Any]:
        self.counters.rejected_invalid += 1
        log.info("chunk rejected: %s", message)
        return _ack(ChunkRefused("invalid", message))

    async def _on_ping(self, sid: str, *args: Any) -> None:
        timestamp: int | float | None = None
        try:
            timestamp = parse_ping(args).timestamp
        except ProtocolError as exc:
            self.counters.invalid_pings += 1
            log.info("invalid ping from %s answered with the server's clock: %.120s", sid, exc)
        if timestamp is None:
            timestamp = int(time.time() * 1000)
        await self._emit(sid, PONG, PongEvent(timestamp), ignore_queue=True)

    async def _on_unknown_event(
        self, event: Any = None, sid: Any = None, *args: Any
    ) -> dict[str, Any]:
        # Called as (event, sid, *args), but for an event a client named "*" as
        # (sid, *args): the answer is the same, only the log line is off.
        self.counters.unknown_events += 1
        log.info("unknown event %.60r from %.40r ignored", event, sid)
        return {"error": "unknown_event"}


def _ack(answer: ChunkAccepted | ChunkRefused) -> dict[str, Any]:
    """An ack as python-socketio sends it."""
    ack: dict[str, Any] = to_wire(answer)
    return ack


def _log_task_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("emit failed: %s", task.exception())
