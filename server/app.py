"""Assembles the reference server and runs it on uvicorn.

:func:`build` wires storage (SQLite in the data dir, or PostgreSQL with ``database``),
group commit, tokens, auth, the Socket.IO namespace (with the Redis client manager when
``redis`` is set: ``server/cluster.py``) and the HTTP API into one ASGI application,
behind the handshake watch and the local-only paths. :meth:`ServerApp.start` connects what
needs the event loop (the PostgreSQL pool and the signing secret it holds, the Redis
listener) and :meth:`ServerApp.stop` closes it. :class:`RunningServer`
binds the listening socket itself (so ``port=0`` works and the real port is known before
the first request), writes the optional ready file, and runs uvicorn until cancelled or
signalled, with connections accepted by the connection gate (``server/connection_limits.py``)
rather than by uvicorn, and the logs it makes limited (``server/log_limits.py``). The
client's main process uses the same :class:`RunningServer` for its embedded default server.

One size limit for a message, :func:`transport_message_limit`, is both Engine.IO's
(``max_http_buffer_size``) and the WebSocket implementation's (``ws_max_size``): a frame
over it is refused from its header (close code 1009), never read whole, so one connection
holds at most one message of that size at a time.

WebSocket compression is accepted only with ``ws_compression`` (``--ws-compression``).
The standalone server (``log-monitor-server serve``) sets the garbage collector's
thresholds for thousands of connections (:func:`tune_garbage_collector`); embedded, the
process's collector is left to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
import uvicorn

from ipc.atomic_file import write_file_atomically
from protocol import DEFAULT_SOCKETIO_PATH
from server.auth import AuthService, LoginThrottle
from server.cluster import ClusterManager, end_sessions_everywhere, session_room
from server.connection_limits import ConnectionGate, ConnectionLimits
from server.group_commit import DEFAULT_MAX_BATCH, GroupCommitter
from server.handshake_watch import HandshakeWatch
from server.http_api import HttpApi
from server.log_limits import RepeatedMessageFilter, install, server_logger_names, uninstall
from server.peers import LocalOnlyPaths
from server.socket_api import ClientNamespace
from server.storage import SqliteStore, Store, load_or_create_secret, open_store
from server.tokens import TokenAuthority

log = logging.getLogger("log_monitor_server")

DEFAULT_PORT = 5324
DEFAULT_MAX_CHUNK_BYTES = 1024 * 1024
MIB = 1024 * 1024

# A request head (line and headers) over this is answered 400 (h11's own default).
MAX_REQUEST_HEAD_BYTES = 16 * 1024


# The cyclic garbage collector's thresholds for a standalone server (gc.set_threshold):
# a young collection every 50,000 net allocations instead of 700. With CPython's 700, an
# object that lives across a few awaits (a pending ack, a heartbeat's timer) outlives two
# young collections and lands in the old generation, and the old generation is collected
# whole each time it has grown by a quarter. With 10,000 idle connections (2 million
# objects) that was a 2 s stop of the event loop about every 10 s here, and 40 s of CPU
# in two minutes; with these thresholds, no full collection and 4.5 s. What a message
# allocates now dies young; the old generation is still collected by the same rule.
SERVER_GC_THRESHOLDS = (50_000, 5, 10)


def tune_garbage_collector() -> None:
    """Set :data:`SERVER_GC_THRESHOLDS` for this process. Only the standalone ``serve``
    calls it: embedded in the client, the process is the client's."""
    gc.set_threshold(*SERVER_GC_THRESHOLDS)


def transport_message_limit(max_chunk_bytes: int) -> int:
    """The largest Engine.IO message (and WebSocket message) the server reads.

    A JSON-escaped chunk can be several times its UTF-8 size (``\\uXXXX`` escapes), so the
    limit sits well above the chunk limit: an oversized chunk still reaches the handler and
    is answered ``too_large`` instead of the connection being cut.
    """
    return max(8 * MIB, 8 * max_chunk_bytes)


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    socketio_path: str = DEFAULT_SOCKETIO_PATH
    access_ttl_seconds: float = 900.0
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    processed_events: bool = False
    ready_file: Path | None = None
    login_attempts_per_minute: int = 5
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    public_stats: bool = False
    database: str | None = None
    """A ``postgresql://`` URL; None: SQLite in ``data_dir``."""
    redis: str | None = None
    """A ``redis://`` URL: the client manager that reaches every node."""
    commit_max_batch: int = DEFAULT_MAX_BATCH
    """Chunks in one commit at most; 1 is a commit per chunk."""
    commit_wait: float = 0.0
    """Seconds a batch waits for more chunks before its commit."""
    ws_compression: bool = False
    """WebSocket permessage-deflate, when a client offers it."""


@dataclass
class ServerApp:
    asgi: Any
    store: Store
    namespace: ClientNamespace
    sio: socketio.AsyncServer
    gate: ConnectionGate
    message_limit: int
    authority: TokenAuthority
    committer: GroupCommitter
    extra: dict[str, Any] = field(default_factory=dict)
    started: bool = False

    async def start(self) -> None:
        """Connect the store (and read the signing secret from PostgreSQL) and start the
        client manager's listener, before the first connection."""
        if self.started:
            return
        await self.store.open()
        if not isinstance(self.store, SqliteStore):
            self.authority.use_secret(await self.store.signing_secret())
        if not self.sio.manager_initialized:
            # python-socketio starts the manager at the first connection; a node must hear
            # the end of sessions from the start (a revoke right after a connect).
            self.sio.manager_initialized = True
            self.sio.manager.initialize()
        self.started = True

    async def stop(self) -> None:
        await self.committer.stop()
        listener = getattr(self.sio.manager, "thread", None)
        if isinstance(listener, asyncio.Future):
            listener.cancel()
        await self.store.aclose()


def build(config: ServerConfig) -> ServerApp:
    store = open_store(config.database, config.data_dir)
    # SQLite's secret is in the data dir, known now (callers that never start the app,
    # like the tests that drive it in-process, can sign at once); PostgreSQL's is read in
    # start().
    authority = TokenAuthority(
        load_or_create_secret(store.data_dir) if isinstance(store, SqliteStore) else None,
        config.access_ttl_seconds,
    )
    auth = AuthService(store, authority, LoginThrottle(limit=config.login_attempts_per_minute))
    message_limit = transport_message_limit(config.max_chunk_bytes)
    manager = ClusterManager(config.redis) if config.redis else None
    sio = socketio.AsyncServer(
        client_manager=manager,
        async_mode="asgi",
        async_handlers=False,
        always_connect=True,
        cors_allowed_origins=[],
        max_http_buffer_size=message_limit,
        logger=False,
        engineio_logger=False,
    )
    committer = GroupCommitter(
        store.commit_chunks, max_batch=config.commit_max_batch, wait=config.commit_wait
    )
    namespace = ClientNamespace(
        sio, auth, committer, config.max_chunk_bytes, processed_events=config.processed_events
    )
    if manager is not None:
        manager.on_sessions_ended = namespace.end_sessions

    async def session_revoked(session_id: str) -> None:
        await end_sessions_everywhere(sio, namespace.end_sessions, session_room(session_id))

    auth.session_revoked = session_revoked
    gate = ConnectionGate(config.connection_limits)
    http = HttpApi(
        auth,
        lambda: namespace.counters.as_dict() | committer.counters.as_dict() | gate.stats(),
    )
    path = config.socketio_path.strip("/")
    socket_io = socketio.ASGIApp(sio, other_asgi_app=http, socketio_path=path)

    def session_connected(engine_io_sid: str) -> bool:
        return any(
            sio.manager.sid_from_eio_sid(engine_io_sid, name) is not None
            for name in list(sio.manager.get_namespaces())
        )

    asgi = HandshakeWatch(
        LocalOnlyPaths(socket_io, ("/api/stats",), public=config.public_stats),
        gate,
        config.socketio_path,
        session_connected,
    )
    return ServerApp(
        asgi=asgi,
        store=store,
        namespace=namespace,
        sio=sio,
        gate=gate,
        message_limit=message_limit,
        authority=authority,
        committer=committer,
    )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: sockets accepted from it inherit it, and asyncio turns
    # Nagle's algorithm off only on sockets that say TCP. With it on, a small frame
    # written right after another (``authenticated`` after the namespace's connect, an
    # ack after an ack) waited for the peer's delayed ACK: 40 ms in every handshake.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def write_ready_file(path: Path, url: str) -> None:
    # Readable by all, as before: it holds no secret, and the tests' processes read it.
    document = json.dumps({"url": url, "pid": os.getpid()})
    write_file_atomically(path, document.encode("utf-8"), mode=0o644)


class _NotifyingServer(uvicorn.Server):
    """uvicorn's server, accepting through the connection gate, plus an event set once it
    listens (uvicorn offers no hook).

    uvicorn is started with no socket of its own: the gate accepts from ``listener`` and
    makes each connection's protocol the way uvicorn would. Embedded in the client's main
    process it must leave SIGINT/SIGTERM to its host, so capturing signals can be turned
    off.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        gate: ConnectionGate,
        listener: socket.socket,
        capture_signals: bool = True,
    ) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self.owns_signals = capture_signals
        self._gate = gate
        self._listener = listener

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self.owns_signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])
        if self.should_exit:
            return
        loop = asyncio.get_running_loop()
        config = self.config

        def make_protocol() -> asyncio.Protocol:
            # What uvicorn's own startup gives asyncio's create_server (uvicorn types the
            # class as a bare asyncio.Protocol, and ignores the call's arguments too).
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )
            return protocol

        self._gate.start(self._listener, make_protocol)
        self.listening.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._gate.stop()
        await super().shutdown(sockets=sockets)


class RunningServer:
    """A started server: its URL, and a way to stop it from the same event loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.app = build(config)
        self._socket = bind(config.host, config.port)
        host, port = self._socket.getsockname()[:2]
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{port}"
        self.log_filter = RepeatedMessageFilter()
        self._uvicorn = _NotifyingServer(
            uvicorn.Config(
                self.app.asgi,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="websockets-sansio",
                # permessage-deflate (uvicorn's default) only with --ws-compression: it costs
                # CPU at both ends for every message and a compressor per connection. With
                # socket.io-client peers (which offer it) one node held fewer chunks/s and
                # used about 45 KiB more per connection (bench/server_load.py).
                ws_per_message_deflate=config.ws_compression,
                ws_max_size=self.app.message_limit,
                h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
                # The gate keys connections by their real peer, and nothing here uses a
                # forwarded address: X-Forwarded-For must not rewrite scope["client"].
                proxy_headers=False,
                timeout_graceful_shutdown=5,
            ),
            self.app.gate,
            self._socket,
        )

    async def open(self) -> None:
        """Connect storage and the client manager (``run`` does it first if not done);
        raises ``StorageError`` when the database cannot be used."""
        try:
            await self.app.start()
        except BaseException:
            self._socket.close()
            await self.app.stop()
            raise

    async def run(self, install_signal_handlers: bool = True) -> None:
        await self.open()
        self._uvicorn.owns_signals = install_signal_handlers
        logger_names = server_logger_names()
        install(self.log_filter, logger_names)
        reporter = asyncio.ensure_future(self._report_suppressed_lines())
        started = asyncio.ensure_future(self._uvicorn.serve(sockets=[]))
        listening = asyncio.ensure_future(self._uvicorn.listening.wait())
        try:
            await asyncio.wait([started, listening], return_when=asyncio.FIRST_COMPLETED)
            if self._uvicorn.listening.is_set():
                log.info("log-monitor-server listening on %s", self.url)
                if self.config.ready_file is not None:
                    write_ready_file(self.config.ready_file, self.url)
            await started
        finally:
            listening.cancel()
            if not started.done():
                self._uvicorn.should_exit = True
                await asyncio.wait([started], timeout=10)
            reporter.cancel()
            self.log_filter.report_suppressed(final=True)
            uninstall(self.log_filter, logger_names)
            self._socket.close()
            await self.app.stop()

    async def _report_suppressed_lines(self) -> None:
        while True:
            await asyncio.sleep(self.log_filter.interval)
            self.log_filter.report_suppressed()

    def stop(self) -> None:
        self._uvicorn.should_exit = True
