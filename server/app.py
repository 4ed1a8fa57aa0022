"""Assembles the reference server and runs it on uvicorn.

:func:`build` wires storage, tokens, auth, the Socket.IO namespace and the HTTP API into
one ASGI application. :func:`serve` binds the listening socket itself (so ``port=0``
works and the real port is known before the first request), writes the optional ready
file, and runs uvicorn until cancelled or signalled. The client's main process uses the
same :func:`serve` for its embedded default server.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from server.auth import AuthService, LoginThrottle
from server.http_api import HttpApi
from server.socket_api import ClientNamespace
from server.storage import ServerStore, load_or_create_secret, open_data_dir
from server.tokens import TokenAuthority

log = logging.getLogger("log_monitor_server")

DEFAULT_PORT = 5324
DEFAULT_MAX_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    socketio_path: str = "/socket.io/"
    access_ttl_seconds: float = 900.0
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    processed_events: bool = False
    ready_file: Path | None = None
    login_attempts_per_minute: int = 5


@dataclass
class ServerApp:
    asgi: Any
    store: ServerStore
    namespace: ClientNamespace
    sio: socketio.AsyncServer
    extra: dict[str, Any] = field(default_factory=dict)


def build(config: ServerConfig) -> ServerApp:
    data_dir = open_data_dir(config.data_dir)
    store = ServerStore(data_dir)
    authority = TokenAuthority(load_or_create_secret(data_dir), config.access_ttl_seconds)
    auth = AuthService(store, authority, LoginThrottle(limit=config.login_attempts_per_minute))
    # A JSON-escaped chunk can be several times its UTF-8 size (\uXXXX escapes); the
    # transport limit sits well above the chunk limit so an oversized chunk reaches the
    # handler and is answered `too_large` instead of the connection being cut.
    transport_limit = max(8 * 1024 * 1024, 8 * config.max_chunk_bytes)
    sio = socketio.AsyncServer(
        async_mode="asgi",
        async_handlers=False,
        always_connect=True,
        cors_allowed_origins=[],
        max_http_buffer_size=transport_limit,
        logger=False,
        engineio_logger=False,
    )
    namespace = ClientNamespace(
        sio, auth, store, config.max_chunk_bytes, processed_events=config.processed_events
    )
    http = HttpApi(auth, namespace.counters.as_dict)
    path = config.socketio_path.strip("/")
    asgi = socketio.ASGIApp(sio, other_asgi_app=http, socketio_path=path)
    return ServerApp(asgi=asgi, store=store, namespace=namespace, sio=sio)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def write_ready_file(path: Path, url: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(temporary, path)


class _NotifyingServer(uvicorn.Server):
    """uvicorn's server, plus an event set once it listens (uvicorn offers no hook).

    Embedded in the client's main process it must leave SIGINT/SIGTERM to its host, so
    capturing signals can be turned off.
    """

    def __init__(self, config: uvicorn.Config, capture_signals: bool = True) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self.owns_signals = capture_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if self.owns_signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


class RunningServer:
    """A started server: its URL, and a way to stop it from the same event loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.app = build(config)
        self._socket = bind(config.host, config.port)
        host, port = self._socket.getsockname()[:2]
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{port}"
        self._uvicorn = _NotifyingServer(
            uvicorn.Config(
                self.app.asgi,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ws="websockets-sansio",
                ws_max_size=max(16 * 1024 * 1024, 16 * config.max_chunk_bytes),
                timeout_graceful_shutdown=5,
            )
        )

    async def run(self, install_signal_handlers: bool = True) -> None:
        self._uvicorn.owns_signals = install_signal_handlers
        started = asyncio.ensure_future(self._uvicorn.serve(sockets=[self._socket]))
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
            self.app.store.close()

    def stop(self) -> None:
        self._uvicorn.should_exit = True
