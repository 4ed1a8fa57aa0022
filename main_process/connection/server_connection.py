"""The server connection's I/O: an asyncio shell that executes ``ConnectionState``'s actions.

Owns: what each action does in the world: opening and closing sockets (one
``SocketAttempt`` per connection attempt, ``socket_attempt.py``), sending chunks and pings
on them, reading chunks from the spool and deleting or dead-lettering them, the aiohttp
session (shared by Engine.IO and the HTTP token refresh, ``auth_client.refresh_tokens``),
the token file and the client id (``connection/credential_saves.py``), and the status
broadcast. Public methods keep the names of the original client's
``server-connection.ts``.

Must not: decide anything. When to connect, which token to present, when to refresh,
what an ack means, what to resend and when, what to do when the token file cannot be
written: all of that is ``connection/state.py``, where it is tested without sockets.
What the server sends is read by ``protocol``'s ``parse_*`` functions (the wire's shapes
and bounds live there, shared with the reference server). This module only translates
between the machine and the world, and never logs a token or a password.

How it runs. ``connection_driver.MachineDriver`` runs one task that hands the machine its
events in order and calls back ``_execute_one`` for each action (a ``LoadChunks`` is
answered at once, inline; a ``PersistTokens`` writes the token file there and then, and
its outcome, ``TokensSaved`` or ``TokensNotSaved``, is the next event). Slow work
(opening a socket, an HTTP refresh, closing a socket) runs in its own task and reports
back through the driver's queue, tagged with the socket's epoch or the request's id, so
anything late is recognised as stale by the machine. The fsync that makes new chunks
durable runs on a worker thread (``_make_durable``); until it is done, a ``LoadChunks``
is answered with the chunks already durable only. Acknowledged chunks are deleted from
the spool in batches (``_delete_acknowledged``).

Status. Every change the machine announces goes to viewers through
``send_connection_status`` (the original's ``sendConnectionStatus``), which logs it,
calls the ``on_status`` callback and wakes ``wait_for_status``.

The client id. ``client_id`` is the installation's id, sent in every handshake, chunk and
ping; when the machine says ``RenewClientId``, ``ConnectionCredentials`` takes a new one
and everything from then on goes under it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import platform
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import aiohttp
import socketio

from main_process.connection.auth_client import refresh_tokens
from main_process.connection.credential_saves import (
    ClientIdInMemory,
    ClientIdStore,
    ConnectionCredentials,
    TokenStore,
)
from main_process.connection.driver import MachineDriver
from main_process.connection.packet_json import ClientPacket
from main_process.connection.socket_attempt import CLOSE_TIMEOUT, SocketAttempt
from main_process.connection.state import (
    AcknowledgeChunk,
    Action,
    ChunkOrigin,
    ChunksAppended,
    ChunksLoaded,
    CloseSocket,
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
    LoadChunks,
    OpenSocket,
    OutgoingChunk,
    PersistTokens,
    RefreshTokens,
    RenewClientId,
    SendChunk,
    SendPing,
    StatusChanged,
)
from main_process.credentials import Tokens
from main_process.version import client_version
from protocol import (
    DEFAULT_NAMESPACE,
    DEFAULT_SOCKETIO_PATH,
    ServerAddress,
    handshake_auth,
    handshake_query,
)

__all__ = [
    "USER_AGENT",
    "ChunkStore",
    "ClientIdStore",
    "ServerAddress",
    "ServerConnection",
    "TokenStore",
]

logger = logging.getLogger(__name__)

USER_AGENT = (
    f"log-monitor-client/{client_version()} "
    f"({platform.system() or 'unknown'}; Python {sys.version_info.major}.{sys.version_info.minor})"
)
_SPOOL_RETRY_DELAY = 1.0
# Acknowledged chunks deleted in one transaction: at most this many (they stay in the
# spool's in-memory copy until deleted, beside the 8 in flight: 8 more of 512 KiB keep
# both within its 8 MiB), or after this long.
_ACK_BATCH = 8
_ACK_LINGER = 0.02
_REFRESH_TASK = "token-refresh"


class ChunkStore(Protocol):
    """The spool as the connection sees it (``main_process.spool.chunks.Spool`` fits).

    Calls are synchronous and short (local SQLite transactions); they run on the event
    loop's thread.
    """

    def append(self, text: str, source: Any = None) -> OutgoingChunk:
        """Store a chunk durably and return it with its ``seq``; may raise when full."""
        ...

    def pending(
        self, after_seq: int | None, limit: int, *, durable_only: bool = False
    ) -> Sequence[OutgoingChunk]:
        """Up to ``limit`` chunks with seq > ``after_seq`` (all if ``None``), in seq order;
        with ``durable_only``, only those made durable (``sync``, ``made_durable``)."""
        ...

    @property
    def buffered_chunks(self) -> int:
        """Chunks in the store, acknowledged but not deleted yet included."""
        ...

    def acknowledge_many(self, seqs: Sequence[int]) -> object:
        """Delete acknowledged chunks (a no-op for those already gone)."""
        ...

    def dead_letter(self, seq: int, code: str, message: str) -> object:
        """Move a permanently rejected chunk aside (a no-op if it is already gone)."""
        ...

    def sync(self) -> None:
        """Make every chunk appended so far durable, blocking."""
        ...

    def durability_job(self) -> DurabilityJob | None:
        """The same as ``sync``, as a job for a worker thread; None when nothing is to do."""
        ...

    def made_durable(self, job: Any) -> None:
        """``job`` (from ``durability_job``) has run."""
        ...


class DurabilityJob(Protocol):
    def run(self) -> None:
        """Blocking, on a worker thread; raises ``OSError`` when it cannot."""
        ...


StatusCallback = Callable[[ConnectionStatus], Awaitable[None] | None]
ServerEventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]


def _log_status(status: ConnectionStatus) -> None:
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
        self.address = ServerAddress.parse(server_url)  # a ValueError for a bad URL
        self._credentials = ConnectionCredentials(
            token_store, client_ids or ClientIdInMemory(), client_id
        )
        self._store = chunk_store
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
        self._machine = ConnectionState(config, self._credentials.on_disk, random_source)
        self._driver = MachineDriver(self._machine, clock, self._execute_one)
        self._http: aiohttp.ClientSession | None = None
        self._attempts: dict[int, SocketAttempt] = {}
        self._making_durable = False
        self._acknowledged: list[int] = []
        self._ack_flush: asyncio.TimerHandle | None = None
        self._status_changed: asyncio.Condition | None = None
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def client_id(self) -> str:
        """The installation's id, as sent now (it changes on ``RenewClientId``)."""
        return self._credentials.client_id

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
        """Whether a chunk appended now would be sent at once (``ConnectionState``), with
        ``unacknowledged`` chunks in the spool (those acknowledged but not deleted yet
        included: they are not counted)."""
        return self._machine.has_delivery_room(unacknowledged - len(self._acknowledged))

    async def start(self) -> None:
        """Start the driver task; idempotent. Needs a running event loop."""
        if self._driver.started:
            return
        if self._closed:
            raise RuntimeError("this ServerConnection is closed")
        self._status_changed = asyncio.Condition()
        self._http = aiohttp.ClientSession()
        self._driver.start()

    async def close(self) -> None:
        """Disconnect, stop the driver and release everything. The spool is untouched."""
        if self._closed:
            return
        if self._driver.started:
            await self._submit(DisconnectRequested())
            # A refresh that is still out may rotate the refresh token; give its answer
            # a moment to be saved rather than losing the new token.
            if await self._driver.wait_for(_REFRESH_TASK, timeout=2.0):
                # Let the driver handle (and persist) what they fed.
                await self._submit(ChunksAppended())
            await self._driver.stop()
        self._delete_acknowledged()
        self._closed = True
        self._credentials.save_before_closing(self._machine.tokens)
        for attempt in list(self._attempts.values()):
            self._close_attempt(attempt)
        await self._driver.finish_background(timeout=CLOSE_TIMEOUT)
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
        _log_status(status)
        if self._on_status is not None:
            try:
                result = self._on_status(status)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("status callback failed")
        if self._status_changed is not None:
            async with self._status_changed:
                self._status_changed.notify_all()

    async def set_tokens(self, tokens: Tokens) -> None:
        """Use new credentials after a login or logout (the caller has saved them)."""
        self._credentials.on_disk = tokens
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

    # ------------------------------------------------------------------ actions

    async def _submit(self, event: Event) -> None:
        await self.start()
        await self._driver.submit(event)

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
                # No attempt: closed in the meantime, and the machine already knows.
                if attempt := self._attempts.get(action.epoch):
                    sent_at_ms = int(self._wall_clock() * 1000)
                    await attempt.send_chunk(self.client_id, action.chunk, sent_at_ms)
            case SendPing():
                if attempt := self._attempts.get(action.epoch):
                    await attempt.send_ping(self.client_id, int(self._wall_clock() * 1000))
            case AcknowledgeChunk():
                self._acknowledged.append(action.seq)
                if (
                    len(self._acknowledged) >= _ACK_BATCH
                    or len(self._acknowledged) >= self._store.buffered_chunks
                ):
                    self._delete_acknowledged()
                elif self._ack_flush is None:
                    loop = asyncio.get_running_loop()
                    self._ack_flush = loop.call_later(_ACK_LINGER, self._delete_acknowledged, True)
                # The window has room now, whether or not the chunk is deleted yet.
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
                self._driver.feed(self._credentials.save(action.tokens))
            case RefreshTokens():
                self._driver.spawn(self._refresh(action), _REFRESH_TASK)
            case RenewClientId():
                self._driver.feed(self._credentials.renew_client_id())
            case StatusChanged():
                await self.send_connection_status(action.status)
        return []

    def _open_socket(self, action: OpenSocket) -> None:
        client = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            http_session=self._http,
            ssl_verify=self._ssl_verify,
            serializer=ClientPacket,
        )
        attempt = SocketAttempt(
            action.epoch, client, self._namespace, self._driver.feed, self._forward_server_event
        )
        self._attempts[action.epoch] = attempt
        logger.info(
            "connecting to %s (attempt %d, %s credentials)",
            self.address.socket_url,
            action.epoch,
            action.credential,
        )
        query = handshake_query(self.client_id, self._hostname, USER_AGENT)
        connect = attempt.connect(
            f"{self.address.socket_url}?{query}",
            handshake_auth(action.token),
            transports=self._transports,
            socketio_path=self._socketio_path,
            wait_timeout=self.config.handshake_timeout,
        )
        attempt.connect_task = asyncio.create_task(connect, name=f"socket-connect-{action.epoch}")

    def _close_attempt(self, attempt: SocketAttempt) -> None:
        self._attempts.pop(attempt.epoch, None)
        self._driver.spawn(attempt.shut(), f"socket-close-{attempt.epoch}")

    def _forward_server_event(self, payload: dict[str, Any]) -> None:
        if self._on_server_event is None:
            return
        try:
            result = self._on_server_event(payload)
        except Exception:
            logger.exception("server event callback failed")
            return
        if inspect.isawaitable(result):
            self._driver.spawn(result, "server-event-callback")

    def _load_chunks(self, action: LoadChunks) -> list[Action]:
        if action.after_seq is None:
            # From the head of the spool (a new socket): what was acknowledged is
            # deleted first, not sent again.
            self._delete_acknowledged()
        try:
            # New chunks must survive a power loss before they are first sent: those
            # appended since the last fsync are sent once it is done (a ``ChunksAppended``).
            if not self._making_durable:
                job = self._store.durability_job()
                if job is not None:
                    self._making_durable = True
                    self._driver.spawn(self._make_durable(job), "spool-fsync")
            chunks = list(self._store.pending(action.after_seq, action.limit, durable_only=True))
        except Exception as exc:
            logger.error("could not read the spool: %s; retrying in a moment", exc)
            loop = asyncio.get_running_loop()
            loop.call_later(_SPOOL_RETRY_DELAY, self._driver.feed, ChunksAppended())
            chunks = []
        return self._machine.handle(ChunksLoaded(action.epoch, chunks), self._clock())

    def _delete_acknowledged(self, notify: bool = False) -> None:
        """Delete the acknowledged chunks from the spool, in one transaction; with
        ``notify``, say so (``on_delivered``: the spool has room again).

        Acknowledgements are deleted together, up to ``_ACK_BATCH`` of them or after
        ``_ACK_LINGER``: one commit each cost about twice the CPU. At once when they are
        all the spool holds, and before loading from the head of the spool. Meanwhile
        they do not count against the delivery window (``has_delivery_room``), so new
        lines still go out at once. One not deleted yet when the process dies is sent
        again and answered ``duplicate``.
        """
        if self._ack_flush is not None:
            self._ack_flush.cancel()
            self._ack_flush = None
        seqs, self._acknowledged = self._acknowledged, []
        if not seqs:
            return
        try:
            self._store.acknowledge_many(seqs)
        except Exception as exc:
            # They stay in the spool, and are sent again (and answered ``duplicate``) on
            # the next connection.
            logger.error("could not delete %d acknowledged chunks: %s", len(seqs), exc)
            return
        if notify and self._on_delivered is not None:
            self._on_delivered()

    async def _make_durable(self, job: DurabilityJob) -> None:
        """The fsync of the chunks appended so far, on a worker thread, so that reading
        and sending go on meanwhile; on the loop (``sync``) if that cannot be done."""
        try:
            try:
                await asyncio.get_running_loop().run_in_executor(None, job.run)
                self._store.made_durable(job)
            except OSError as exc:
                logger.debug("fsync on a worker thread failed (%s); on the loop instead", exc)
                self._store.sync()
        except Exception as exc:
            logger.error("could not make the spool durable: %s; retrying in a moment", exc)
            await asyncio.sleep(_SPOOL_RETRY_DELAY)
        finally:
            self._making_durable = False
        self._driver.feed(ChunksAppended())

    async def _refresh(self, action: RefreshTokens) -> None:
        assert self._http is not None
        answer = await refresh_tokens(
            self._http,
            self.address.http_base,
            action,
            timeout=self._refresh_timeout,
            ssl_verify=self._ssl_verify,
        )
        self._driver.feed(answer)
