"""One Socket.IO connection attempt of ``ServerConnection``: its client, and what the
server's events and acks on it mean to the state machine.

Owns: one ``socketio.AsyncClient`` (python-socketio's reconnection off), its handlers,
its connect task, and sending ``submit_log_chunk`` and ``ping`` on it. Every handler turns
what arrived into ``ConnectionState`` events through ``protocol``'s ``parse_*`` and hands
them to ``feed``, tagged with the attempt's epoch.

Must not: decide anything (the machine does), keep state beyond the attempt, or log a
token. A payload of the wrong shape is a ``MalformedPayload`` event, never an exception
out of a handler.

Theory. One client per attempt, whose handlers close over the attempt's epoch: an event
or an ack from a socket the machine already gave up on cannot be mistaken for one from the
live socket, and a half-open client can be abandoned without being reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from main_process.connection.state import (
    AckReceived,
    Authenticated,
    ConnectFailed,
    Event,
    GuestTokenReceived,
    MalformedPayload,
    OutgoingChunk,
    RetryAuthRequested,
    ServerActivity,
    SocketConnected,
    SocketDisconnected,
    UnknownServerEvent,
)
from protocol import (
    AUTHENTICATED,
    GUEST_TOKEN,
    PING,
    PONG,
    PROCESSED_EVENT,
    RETRY_AUTH,
    SUBMIT_LOG_CHUNK,
    AuthenticatedEvent,
    ChunkRefused,
    ChunkSource,
    Ping,
    ProtocolError,
    SubmitLogChunk,
    parse_authenticated,
    parse_chunk_ack,
    parse_connect_error,
    parse_guest_token,
    parse_processed_event,
    parse_retry_auth,
    to_wire,
)

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0


def describe(exc: BaseException) -> str:
    """An exception in words for a status line: its type, and its message if any."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class SocketAttempt:
    """One socket: its client, its connect task and what it said when refused."""

    def __init__(
        self,
        epoch: int,
        client: Any,  # socketio.AsyncClient, untyped
        namespace: str,
        feed: Callable[[Event], None],
        on_processed_event: Callable[[dict[str, Any]], None],
    ) -> None:
        self.epoch = epoch
        self.client = client
        self.namespace = namespace
        self.connect_task: asyncio.Task[None] | None = None
        self.connect_error: str | None = None
        self._feed = feed
        self._on_processed_event = on_processed_event
        handlers: dict[str, Callable[..., None]] = {
            "connect": self._on_connect,
            "connect_error": self._on_connect_error,
            "disconnect": self._on_disconnect,
            AUTHENTICATED: self._on_authenticated,
            GUEST_TOKEN: self._on_guest_token,
            RETRY_AUTH: self._on_retry_auth,
            PONG: self._on_pong,
            PROCESSED_EVENT: self._on_processed,
            "*": self._on_anything_else,
        }
        for event, handler in handlers.items():
            client.on(event, handler, namespace=namespace)

    # ------------------------------------------------------------------ what arrives

    def _on_connect(self, *_: Any) -> None:
        self._feed(SocketConnected(self.epoch))

    def _on_connect_error(self, data: Any = None, *_: Any) -> None:
        self.connect_error = parse_connect_error(data)

    def _on_disconnect(self, reason: Any = None, *_: Any) -> None:
        self._feed(SocketDisconnected(self.epoch, str(reason or "disconnected")))

    def _on_authenticated(self, data: Any = None, *_: Any) -> None:
        try:
            payload = parse_authenticated(data)
        except ProtocolError:
            # Still authenticated (the event says so), only without a name.
            self._feed(MalformedPayload(self.epoch, AUTHENTICATED))
            payload = AuthenticatedEvent()
        self._feed(Authenticated(self.epoch, payload.identity, payload.username))

    def _on_guest_token(self, data: Any = None, *_: Any) -> None:
        try:
            token = parse_guest_token(data).token
        except ProtocolError:
            self._feed(MalformedPayload(self.epoch, GUEST_TOKEN))
            return
        self._feed(GuestTokenReceived(self.epoch, token))

    def _on_retry_auth(self, data: Any = None, *_: Any) -> None:
        self._feed(RetryAuthRequested(self.epoch, parse_retry_auth(data).reason))

    def _on_pong(self, *_: Any) -> None:
        self._feed(ServerActivity(self.epoch))

    def _on_processed(self, data: Any = None, *_: Any) -> None:
        try:
            payload = parse_processed_event(data)
        except ProtocolError:
            self._feed(MalformedPayload(self.epoch, PROCESSED_EVENT))
            return
        self._feed(ServerActivity(self.epoch))
        self._on_processed_event(payload)

    def _on_anything_else(self, event: Any = None, *_: Any) -> None:
        self._feed(UnknownServerEvent(self.epoch, str(event)[:100]))

    # ------------------------------------------------------------------ what goes out

    async def connect(
        self,
        url: str,
        auth: dict[str, str],
        *,
        transports: list[str],
        socketio_path: str,
        wait_timeout: float,
    ) -> None:
        """Open the socket; a failure is a ``ConnectFailed`` event, with the server's
        ``connect_error`` message when it refused."""
        try:
            await self.client.connect(
                url,
                headers={},
                auth=auth,
                transports=transports,
                namespaces=[self.namespace],
                socketio_path=socketio_path,
                wait_timeout=wait_timeout,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._feed(ConnectFailed(self.epoch, self.connect_error or describe(exc)))

    async def send_chunk(self, client_id: str, chunk: OutgoingChunk, sent_at_ms: int) -> None:
        """``submit_log_chunk`` (PROTOCOL §4, extension fields included); its ack is an
        ``AckReceived`` event."""
        epoch, seq = self.epoch, chunk.seq

        def on_ack(*args: Any) -> None:
            ack = parse_chunk_ack(args[0] if args else None)
            if isinstance(ack, ChunkRefused):
                self._feed(AckReceived(epoch, seq, ack.error, ack.message))
            else:
                self._feed(AckReceived(epoch, seq, None, None))

        origin = chunk.source
        payload = SubmitLogChunk(
            clientId=client_id,
            chunk=chunk.text,
            chunkId=f"{client_id}:{seq}",
            seq=seq,
            source=None if origin is None else ChunkSource(origin.path, origin.offset),
            sentAt=sent_at_ms,
        )
        await self._emit(SUBMIT_LOG_CHUNK, to_wire(payload), on_ack)

    async def send_ping(self, client_id: str, timestamp_ms: int) -> None:
        await self._emit(PING, to_wire(Ping(timestamp_ms, client_id)))

    async def _emit(
        self, event: str, data: Any, callback: Callable[..., None] | None = None
    ) -> None:
        try:
            await self.client.emit(event, data, namespace=self.namespace, callback=callback)
        except Exception as exc:
            # Typically BadNamespaceError: the socket dropped before its disconnect
            # event reached the machine. Say so, so the machine reconnects and resends.
            self._feed(SocketDisconnected(self.epoch, f"could not send {event}: {describe(exc)}"))

    async def shut(self) -> None:
        """Stop connecting and close the socket, within ``CLOSE_TIMEOUT``."""
        task = self.connect_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.client.disconnect()
        except Exception as exc:
            logger.debug("closing socket %d: %s", self.epoch, describe(exc))
