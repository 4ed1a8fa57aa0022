"""The server connection's I/O: an asyncio shell that executes ``ConnectionState``'s actions.

Owns: the Socket.IO clients (one ``socketio.AsyncClient`` per connection attempt, with
python-socketio's own reconnection off), the aiohttp session (shared by Engine.IO and the
HTTP token refresh), the wire format of ``submit_log_chunk`` and ``ping``, the parsing of
what the server sends, and a single driver task that feeds the state machine and
executes its actions in order. Public methods keep the names of the original client's
``server-connection.ts``.

Must not: decide anything. When to connect, which token to present, when to refresh,
what an ack means, what to resend and when, what to do when the token file cannot be
written: all of that is ``connection_state.py``, where it is tested without sockets.
This module only translates between the machine and the world, and never logs a token
or a password.

How it runs. Everything that happens (a socket event, an ack, an HTTP answer, a public
method call) becomes an ``Event`` on one queue. The driver task takes events off the
queue, hands each to the machine with the monotonic time, executes the returned actions
one after another (awaiting each; a ``LoadChunks`` is answered at once, inline; a
``PersistTokens`` writes the token file there and then, and its outcome, ``TokensSaved``
or ``TokensNotSaved``, goes on the queue as the next event), and sleeps until the next
event or the machine's next deadline, whichever comes first. Slow work (opening a
socket, an HTTP refresh, closing a socket) runs in its own task and reports back through
the queue, tagged with the socket's epoch or the request's id, so anything late is
recognised as stale by the machine.

Status. Every change the machine announces goes to viewers through
``send_connection_status`` (the original's ``sendConnectionStatus``), which logs it,
calls the ``on_status`` callback and wakes ``wait_for_status``.

Why one client per attempt: handlers close over the attempt's epoch, so an event or an
ack from a socket we already gave up on cannot be mistaken for one from the live socket,
and a half-open client can be abandoned without being reused.

The client id. ``client_id`` is the installation's id, sent in every handshake, chunk and
ping. When the machine says ``RenewClientId`` (the server holds the id for credentials this
installation no longer has), the shell asks its ``ClientIdStore`` for a new one, which
keeps the old one aside, and sends everything from then on under the new id: chunks still
in the spool go out as ``<new id>:<seq>``.

What a server sends is bounded before it goes anywhere (``connection_state.bounded_text``):
names, reasons and messages are cut and stripped of control characters, and a token
longer than ``MAX_TOKEN_CHARS`` is a malformed payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import platform
import random
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import aiohttp
import socketio

from main_process.connection_state import (
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_TOKEN_CHARS,
    AcknowledgeChunk,
    AckReceived,
    Action,
    Authenticated,
    ChunkOrigin,
    ChunksAppended,
    ChunksLoaded,
    ClientIdRenewed,
    CloseSocket,
    ConnectFailed,
    ConnectionConfig,
    ConnectionCounters,
    ConnectionState,
    ConnectionStatus,
    ConnectRequested,
    CredentialsChanged,
    DeadLetterChunk,
    DisconnectRequested,
    EnsureConnected,
    Event,
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
    ack_error,
    bounded_text,
)
from main_process.identity import IdentityError, Tokens
from main_process.version import client_version

logger = logging.getLogger(__name__)

USER_AGENT = (
    f"log-monitor-client/{client_version()} "
    f"({platform.system() or 'unknown'}; Python {sys.version_info.major}.{sys.version_info.minor})"
)
DEFAULT_NAMESPACE = "/client"
DEFAULT_SOCKETIO_PATH = "/socket.io/"
REFRESH_PATH = "/api/auth/refresh"
_CLOSE_TIMEOUT = 5.0
_SPOOL_RETRY_DELAY = 1.0


# ----------------------------------------------------------------------------- boundaries


class ChunkStore(Protocol):
    """The spool as the connection sees it (``main_process.spool.Spool`` fits).

    Calls are synchronous and short (local SQLite transactions); they run on the event
    loop's thread.
    """

    def append(self, text: str, source: Any = None) -> OutgoingChunk:
        """Store a chunk durably and return it with its ``seq``; may raise when full."""
        ...

    def pending(self, after_seq: int | None, limit: int) -> Sequence[OutgoingChunk]:
        """Up to ``limit`` chunks with seq > ``after_seq`` (all if ``None``), in seq order."""
        ...

    def acknowledge(self, seq: int) -> object:
        """Delete an acknowledged chunk (a no-op if it is already gone)."""
        ...

    def dead_letter(self, seq: int, code: str, message: str) -> object:
        """Move a permanently rejected chunk aside (a no-op if it is already gone)."""
        ...

    def sync(self) -> None:
        """Make every chunk appended so far durable before it is first sent."""
        ...


class TokenStore(Protocol):
    """The token file (``main_process.identity.TokenStore`` fits)."""

    def load(self) -> Tokens: ...

    def save(self, tokens: Tokens) -> None:
        """Write atomically with mode 0600; raise if that is impossible.

        The file then holds what it held. An ``IdentityError`` with a ``reason`` says why
        in words for the status line; the message of any exception must hold no token.
        """
        ...


class ClientIdStore(Protocol):
    """Where the installation's id lives (``main_process.identity.ClientIdFile`` fits)."""

    def renew(self, taken: str) -> str:
        """Keep ``taken`` aside, store a new id and return it; raise if it cannot be stored.

        The message of an ``IdentityError`` says why, in words for the status line."""
        ...


class _ClientIdInMemory:
    """The ``ClientIdStore`` of a connection given none: a new id lives as long as it."""

    def renew(self, taken: str) -> str:
        return str(uuid.uuid4())


StatusCallback = Callable[[ConnectionStatus], Awaitable[None] | None]
ServerEventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Where the server is: the Socket.IO base URL and the HTTP API base."""

    socket_url: str
    http_base: str

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        """Accept ``http(s)://`` and ``ws(s)://`` URLs (PROTOCOL §1); raise ``ValueError``."""
        parts = urlsplit(url.strip())
        scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(
            parts.scheme.lower()
        )
        if scheme is None or not parts.netloc:
            raise ValueError(
                f"The server URL {url!r} must look like ws://host:port, wss://host, "
                "http://host:port or https://host."
            )
        path = parts.path.rstrip("/")
        return cls(
            socket_url=f"{scheme}://{parts.netloc}", http_base=f"{scheme}://{parts.netloc}{path}"
        )


def chunk_payload(client_id: str, chunk: OutgoingChunk, sent_at_ms: int) -> dict[str, Any]:
    """The ``submit_log_chunk`` payload (PROTOCOL §4), extension fields included."""
    payload: dict[str, Any] = {
        "clientId": client_id,
        "chunk": chunk.text,
        "chunkId": f"{client_id}:{chunk.seq}",
        "seq": chunk.seq,
    }
    source: ChunkOrigin | None = chunk.source
    if source is not None:
        payload["source"] = {"path": source.path, "offset": source.offset}
    payload["sentAt"] = sent_at_ms
    return payload


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _save_failure(exc: Exception) -> str:
    """Why a token save failed, for ``cannot save tokens: <reason>``; never a token."""
    if isinstance(exc, IdentityError) and exc.reason:
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return _describe(exc)


def _error_message(data: Any) -> str:
    """The message of a ``connect_error`` payload: ``{"message": ...}``, a string, or else."""
    if isinstance(data, dict):
        message = data.get("message")
        if isinstance(message, str):
            return bounded_text(message, MAX_MESSAGE_CHARS)
    if isinstance(data, str):
        return bounded_text(data, MAX_MESSAGE_CHARS)
    return bounded_text(repr(data)[:200], MAX_MESSAGE_CHARS)


def _token(value: Any) -> str | None:
    """A token from a server: a non-empty string of bounded length, else None."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_CHARS:
        return value
    return None


@dataclass(eq=False)
class _Attempt:
    """One socket: its client, its connect task and what it said when refused."""

    epoch: int
    client: Any  # socketio.AsyncClient, untyped
    connect_task: asyncio.Task[None] | None = None
    connect_error: str | None = None


@dataclass(eq=False)
class _QueuedEvent:
    event: Event
    done: asyncio.Future[None] | None = None


# ----------------------------------------------------------------------------- the shell


class ServerConnection:
    """The main process's connection to a log server; see the module docstring.

    Used as (``app.py`` passes callbacks that publish to the windows)::

        connection = ServerConnection(
            server_url, client_id=client_id, chunk_store=spool, token_store=token_store,
            on_status=show_status, on_server_event=forward_event,
        )
        await connection.start()
        await connection.connect_to_server()
        ...
        await connection.close()
    """

    def __init__(
        self,
        server_url: str,
        *,
        client_id: str,
        chunk_store: ChunkStore,
        token_store: TokenStore,
        client_ids: ClientIdStore | None = None,
        on_status: StatusCallback | None = None,
        on_server_event: ServerEventCallback | None = None,
        on_delivered: Callable[[], None] | None = None,
        config: ConnectionConfig | None = None,
        socketio_path: str = DEFAULT_SOCKETIO_PATH,
        namespace: str = DEFAULT_NAMESPACE,
        hostname: str | None = None,
        transports: Sequence[str] = ("websocket",),
        ssl_verify: bool = True,
        refresh_timeout: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.address = ServerAddress.parse(server_url)
        self.client_id = client_id
        self._client_ids: ClientIdStore = client_ids or _ClientIdInMemory()
        self._store = chunk_store
        self._token_store = token_store
        self._on_status = on_status
        self._on_server_event = on_server_event
        self._on_delivered = on_delivered
        self._socketio_path = socketio_path
        self._namespace = namespace
        self._hostname = hostname or socket.gethostname()
        self._transports = list(transports)
        self._ssl_verify = ssl_verify
        self._refresh_timeout = refresh_timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._machine = ConnectionState(config, token_store.load(), random_source)
        # What the token file holds, as far as this shell knows: loaded, then each save.
        self._tokens_on_disk = self._machine.tokens

        self._queue: asyncio.Queue[_QueuedEvent] | None = None
        self._driver: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._attempts: dict[int, _Attempt] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._status_changed: asyncio.Condition | None = None
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def config(self) -> ConnectionConfig:
        return self._machine.config

    @property
    def counters(self) -> ConnectionCounters:
        return self._machine.counters

    @property
    def tokens(self) -> Tokens:
        """The tokens the connection holds now (never log them)."""
        return self._machine.tokens

    def status(self) -> ConnectionStatus:
        return self._machine.status(self._clock())

    def has_delivery_room(self, unacknowledged: int) -> bool:
        """Whether a chunk appended now would be sent at once (``ConnectionState``)."""
        return self._machine.has_delivery_room(unacknowledged)

    async def start(self) -> None:
        """Start the driver task; idempotent. Needs a running event loop."""
        if self._driver is not None:
            return
        if self._closed:
            raise RuntimeError("this ServerConnection is closed")
        self._queue = asyncio.Queue()
        self._status_changed = asyncio.Condition()
        self._http = aiohttp.ClientSession()
        self._driver = asyncio.create_task(self._drive(), name="server-connection-driver")

    async def close(self) -> None:
        """Disconnect, stop the driver and release everything. The spool is untouched."""
        if self._closed:
            return
        if self._driver is not None:
            await self._submit(DisconnectRequested())
            # A refresh that is still out may rotate the refresh token; give its answer
            # a moment to be saved rather than losing the new token.
            await self._drain_refreshes(timeout=2.0)
            self._driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._driver
        self._closed = True
        if self._machine.tokens != self._tokens_on_disk:
            self._last_save_before_closing()
        for attempt in list(self._attempts.values()):
            self._close_attempt(attempt)
        if self._background:
            _, pending = await asyncio.wait(list(self._background), timeout=_CLOSE_TIMEOUT)
            for task in pending:
                task.cancel()
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> ServerConnection:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect_to_server(self) -> None:
        """Connect (and keep reconnecting) until ``disconnect_from_server``."""
        await self._submit(ConnectRequested())

    async def disconnect_from_server(self) -> None:
        """Close the connection and stop reconnecting until ``connect_to_server``."""
        await self._submit(DisconnectRequested())

    async def ensure_connected_and_send_log_chunk(
        self, text: str, source: ChunkOrigin | None = None
    ) -> int:
        """Append ``text`` to the spool, then deliver it; returns its ``seq``.

        Returns once the chunk is durable in the spool, not when the server has it.
        Connects if idle, unless the user disconnected. Raises what the store raises
        (e.g. ``SpoolFull``): the caller applies backpressure.
        """
        chunk = self._store.append(text, source)
        await self._submit(ChunksAppended())
        await self._submit(EnsureConnected())
        return chunk.seq

    async def flush_log_buffer(self) -> None:
        """Deliver whatever the spool holds (call after appending to it directly)."""
        await self._submit(ChunksAppended())

    async def send_connection_status(self, status: ConnectionStatus | None = None) -> None:
        """Broadcast ``status`` (the current one if ``None``): log it, hand it to the
        ``on_status`` callback, and wake ``wait_for_status``. Every status change the
        machine announces goes out through here."""
        if status is None:
            status = self.status()
        if status.state != "connected" or status.last_error:
            logger.info(
                "status %s (attempt %d%s)%s",
                status.state,
                status.attempt,
                "" if status.next_retry_ms is None else f", retry in {status.next_retry_ms} ms",
                f": {status.last_error}" if status.last_error else "",
            )
        else:
            logger.info("status connected as %s", status.username or status.identity)
        if self._on_status is not None:
            try:
                await self._call(self._on_status, status)
            except Exception:
                logger.exception("status callback failed")
        if self._status_changed is not None:
            async with self._status_changed:
                self._status_changed.notify_all()

    async def set_tokens(self, tokens: Tokens) -> None:
        """Use new credentials after a login or logout (the caller has saved them)."""
        self._tokens_on_disk = tokens
        await self._submit(CredentialsChanged(tokens))

    async def wait_for_status(
        self, predicate: Callable[[ConnectionStatus], bool], timeout: float
    ) -> ConnectionStatus:
        """Wait until the status satisfies ``predicate``; ``TimeoutError`` after ``timeout``."""
        await self.start()
        assert self._status_changed is not None
        condition = self._status_changed
        async with asyncio.timeout(timeout), condition:
            while not predicate(status := self.status()):
                await condition.wait()
            return status

    # ------------------------------------------------------------------ the driver

    async def _submit(self, event: Event) -> None:
        """Queue ``event`` and wait until the driver has handled it."""
        await self.start()
        assert self._queue is not None
        if asyncio.current_task() is self._driver:
            # Called from a callback the driver is running (e.g. the status callback):
            # waiting for the driver here would wait for ourselves.
            self._queue.put_nowait(_QueuedEvent(event))
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_QueuedEvent(event, done))
        await done

    def _feed(self, event: Event) -> None:
        """Queue ``event`` from a callback; the driver handles it soon."""
        if self._queue is not None and not self._closed:
            self._queue.put_nowait(_QueuedEvent(event))

    async def _drive(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            deadline = self._machine.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            item: _QueuedEvent | None
            try:
                # Events already queued first: a deadline in the past must not starve them.
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    item = None
            try:
                now = self._clock()
                actions: list[Action] = []
                if item is not None:
                    self._log_event(item.event)
                    actions += self._machine.handle(item.event, now)
                actions += self._machine.tick(now)
                await self._execute(actions)
            except Exception:
                # A bug must cost one event, not the connection: keep driving.
                logger.exception("handling %r failed", item.event if item else "a tick")
            finally:
                if item is not None and item.done is not None and not item.done.done():
                    item.done.set_result(None)

    async def _execute(self, actions: list[Action]) -> None:
        todo: deque[Action] = deque(actions)
        while todo:
            action = todo.popleft()
            try:
                more = await self._execute_one(action)
            except Exception:
                logger.exception("executing %s failed", type(action).__name__)
                continue
            # Depth first: what the machine said in answer to this action comes next.
            todo.extendleft(reversed(more))

    async def _execute_one(self, action: Action) -> list[Action]:
        match action:
            case OpenSocket():
                self._open_socket(action)
            case CloseSocket():
                attempt = self._attempts.pop(action.epoch, None)
                if attempt is not None:
                    self._close_attempt(attempt)
            case LoadChunks():
                return self._load_chunks(action)
            case SendChunk():
                await self._send_chunk(action)
            case SendPing():
                await self._emit(
                    action.epoch,
                    "ping",
                    {"timestamp": int(self._wall_clock() * 1000), "clientId": self.client_id},
                )
            case AcknowledgeChunk():
                self._store.acknowledge(action.seq)
                if self._on_delivered is not None:
                    self._on_delivered()
            case DeadLetterChunk():
                logger.warning(
                    "server rejected chunk %d permanently (%s); moved to dead letters",
                    action.seq,
                    action.code,
                )
                self._store.dead_letter(action.seq, action.code, action.message or "")
                if self._on_delivered is not None:
                    self._on_delivered()
            case PersistTokens():
                # The outcome is the machine's next event: what waits for the save (a
                # refresh, a reconnect) goes on only after a ``TokensSaved``.
                self._feed(self._save_tokens(action.tokens))
            case RefreshTokens():
                self._spawn(self._refresh(action), "token-refresh")
            case RenewClientId():
                self._feed(self._renew_client_id())
            case StatusChanged():
                await self.send_connection_status(action.status)
        return []

    # ------------------------------------------------------------------ the token file

    def _save_tokens(self, tokens: Tokens) -> TokensSaved | TokensNotSaved:
        try:
            self._token_store.save(tokens)
        except Exception as exc:
            reason = _save_failure(exc)
            logger.error("cannot save tokens: %s", reason)
            return TokensNotSaved(reason)
        self._tokens_on_disk = tokens
        return TokensSaved(tokens)

    def _renew_client_id(self) -> ClientIdRenewed:
        taken = self.client_id
        problem: str | None = None
        try:
            self.client_id = self._client_ids.renew(taken)
        except Exception as exc:
            # Go on under a new id anyway: chunks must flow. The next start reads the old
            # id, is refused the same way, and takes another one.
            problem = str(exc) if isinstance(exc, IdentityError) else _describe(exc)
            self.client_id = str(uuid.uuid4())
            logger.error("cannot store the new client id: %s", problem)
        logger.warning(
            "the server holds client id %s for other credentials; continuing as %s",
            taken,
            self.client_id,
        )
        return ClientIdRenewed(self.client_id, problem)

    def _last_save_before_closing(self) -> None:
        """One more try at saving tokens the machine could not save, before they are gone."""
        if isinstance(self._save_tokens(self._machine.tokens), TokensSaved):
            logger.info("saved the tokens while closing")
        else:
            logger.error(
                "closing with tokens that are not on disk: if the server already rotated "
                "the session, the next start continues as a guest until you sign in again"
            )

    # ------------------------------------------------------------------ sockets

    def _open_socket(self, action: OpenSocket) -> None:
        client = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            http_session=self._http,
            ssl_verify=self._ssl_verify,
        )
        attempt = _Attempt(action.epoch, client)
        self._register_handlers(attempt)
        self._attempts[action.epoch] = attempt
        auth = {"token": action.token} if action.token is not None else {}
        logger.info(
            "connecting to %s (attempt %d, %s credentials)",
            self.address.socket_url,
            action.epoch,
            action.credential,
        )
        attempt.connect_task = asyncio.create_task(
            self._connect(attempt, auth), name=f"socket-connect-{action.epoch}"
        )

    async def _connect(self, attempt: _Attempt, auth: dict[str, str]) -> None:
        query = urlencode(
            {"clientId": self.client_id, "hostname": self._hostname, "userAgent": USER_AGENT}
        )
        try:
            await attempt.client.connect(
                f"{self.address.socket_url}?{query}",
                headers={},
                auth=auth,
                transports=self._transports,
                namespaces=[self._namespace],
                socketio_path=self._socketio_path,
                wait_timeout=self.config.handshake_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = attempt.connect_error or _describe(exc)
            self._feed(ConnectFailed(attempt.epoch, message))

    def _close_attempt(self, attempt: _Attempt) -> None:
        self._attempts.pop(attempt.epoch, None)
        self._spawn(self._shut(attempt), f"socket-close-{attempt.epoch}")

    async def _shut(self, attempt: _Attempt) -> None:
        task = attempt.connect_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await attempt.client.disconnect()
        except Exception as exc:
            logger.debug("closing socket %d: %s", attempt.epoch, _describe(exc))

    def _register_handlers(self, attempt: _Attempt) -> None:
        epoch = attempt.epoch
        client = attempt.client
        namespace = self._namespace

        def on(event: str, handler: Callable[..., None]) -> None:
            client.on(event, handler, namespace=namespace)

        def on_connect(*_: Any) -> None:
            self._feed(SocketConnected(epoch))

        def on_connect_error(data: Any = None, *_: Any) -> None:
            attempt.connect_error = _error_message(data)

        def on_disconnect(reason: Any = None, *_: Any) -> None:
            self._feed(SocketDisconnected(epoch, str(reason or "disconnected")))

        def on_authenticated(data: Any = None, *_: Any) -> None:
            identity: Identity | None = None
            username: str | None = None
            if isinstance(data, dict):
                found = data.get("identity")
                if found == "user" or found == "guest":
                    identity = found
                name = data.get("username")
                username = bounded_text(name, MAX_NAME_CHARS) if isinstance(name, str) else None
            elif data is not None:
                self._feed(MalformedPayload(epoch, "authenticated"))
            self._feed(Authenticated(epoch, identity, username))

        def on_guest_token(data: Any = None, *_: Any) -> None:
            token = _token(data.get("token")) if isinstance(data, dict) else None
            if token is not None:
                self._feed(GuestTokenReceived(epoch, token))
            else:
                self._feed(MalformedPayload(epoch, "guestToken"))

        def on_retry_auth(data: Any = None, *_: Any) -> None:
            reason = data.get("reason") if isinstance(data, dict) else None
            shown = bounded_text(reason, MAX_MESSAGE_CHARS) if isinstance(reason, str) else None
            self._feed(RetryAuthRequested(epoch, shown))

        def on_pong(*_: Any) -> None:
            self._feed(ServerActivity(epoch))

        def on_processed_event(data: Any = None, *_: Any) -> None:
            if not isinstance(data, dict):
                self._feed(MalformedPayload(epoch, "processed_event"))
                return
            self._feed(ServerActivity(epoch))
            if self._on_server_event is None:
                return
            try:
                result = self._on_server_event(data)
            except Exception:
                logger.exception("server event callback failed")
                return
            if inspect.isawaitable(result):
                self._spawn(result, "server-event-callback")

        def on_anything_else(event: Any = None, *_: Any) -> None:
            self._feed(UnknownServerEvent(epoch, str(event)[:100]))

        on("connect", on_connect)
        on("connect_error", on_connect_error)
        on("disconnect", on_disconnect)
        on("authenticated", on_authenticated)
        on("guestToken", on_guest_token)
        on("retry_auth", on_retry_auth)
        on("pong", on_pong)
        on("processed_event", on_processed_event)
        on("*", on_anything_else)

    async def _emit(
        self,
        epoch: int,
        event: str,
        data: dict[str, Any],
        callback: Callable[..., None] | None = None,
    ) -> None:
        attempt = self._attempts.get(epoch)
        if attempt is None:
            return  # closed in the meantime; the machine already knows
        try:
            await attempt.client.emit(event, data, namespace=self._namespace, callback=callback)
        except Exception as exc:
            # Typically BadNamespaceError: the socket dropped before its disconnect
            # event reached the machine. Say so, so the machine reconnects and resends.
            self._feed(SocketDisconnected(epoch, f"could not send {event}: {_describe(exc)}"))

    async def _send_chunk(self, action: SendChunk) -> None:
        epoch = action.epoch
        seq = action.chunk.seq

        def on_ack(*args: Any) -> None:
            code, message = ack_error(args[0] if args else None)
            self._feed(AckReceived(epoch, seq, code, message))

        payload = chunk_payload(self.client_id, action.chunk, int(self._wall_clock() * 1000))
        await self._emit(epoch, "submit_log_chunk", payload, on_ack)

    def _load_chunks(self, action: LoadChunks) -> list[Action]:
        try:
            # New chunks must survive a power loss before they are first sent; a no-op
            # when nothing was appended since the last call.
            self._store.sync()
            chunks = list(self._store.pending(action.after_seq, action.limit))
        except Exception as exc:
            logger.error("could not read the spool: %s; retrying in a moment", exc)
            asyncio.get_running_loop().call_later(_SPOOL_RETRY_DELAY, self._feed, ChunksAppended())
            chunks = []
        return self._machine.handle(ChunksLoaded(action.epoch, chunks), self._clock())

    # ------------------------------------------------------------------ HTTP refresh

    async def _refresh(self, action: RefreshTokens) -> None:
        request_id = action.request_id
        url = self.address.http_base + REFRESH_PATH
        assert self._http is not None
        try:
            async with self._http.post(
                url,
                json={"refreshToken": action.refresh_token},
                timeout=aiohttp.ClientTimeout(total=self._refresh_timeout),
                ssl=self._ssl_verify,
            ) as response:
                status = response.status
                if status in (401, 403):
                    self._feed(RefreshRefused(request_id, status))
                    return
                if status != 200:
                    self._feed(RefreshFailed(request_id, f"HTTP {status}"))
                    return
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._feed(RefreshFailed(request_id, _describe(exc)))
            return
        access = _token(body.get("access_token")) if isinstance(body, dict) else None
        refresh = _token(body.get("refresh_token")) if isinstance(body, dict) else None
        if access is None or refresh is None:
            self._feed(RefreshFailed(request_id, "the refresh answer had no usable tokens"))
            return
        user = body.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        username = user.get("username") if isinstance(user, dict) else None
        self._feed(
            RefreshSucceeded(
                request_id,
                access,
                refresh,
                user_id=None if user_id is None else bounded_text(str(user_id), MAX_NAME_CHARS),
                username=bounded_text(username, MAX_NAME_CHARS)
                if isinstance(username, str)
                else None,
            )
        )

    async def _drain_refreshes(self, timeout: float) -> None:
        refreshes = [t for t in self._background if t.get_name() == "token-refresh"]
        if refreshes:
            await asyncio.wait(refreshes, timeout=timeout)
            # Let the driver handle (and persist) what they fed.
            await self._submit(ChunksAppended())

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coroutine: Awaitable[None], name: str) -> None:
        async def run() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s failed", name)

        task = asyncio.create_task(run(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call(self, callback: Callable[[Any], Awaitable[None] | None], argument: Any) -> None:
        result = callback(argument)
        if inspect.isawaitable(result):
            await result

    def _log_event(self, event: Event) -> None:
        # One line per event; the dataclass reprs of events hide every token.
        match event:
            case AckReceived(error=None) | ServerActivity() | ChunksAppended() | EnsureConnected():
                logger.debug("%r", event)
            case UnknownServerEvent() | MalformedPayload():
                logger.warning("%r ignored", event)
            case _:
                logger.info("%r", event)
