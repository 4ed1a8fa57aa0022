"""The reference server's connections: how many it holds, from whom, and for how long a
connection may take to finish its handshake.

What it defends against: one peer (or many) opening connections until the process runs
out of descriptors (``/api/health`` then stops answering and asyncio logs every failed
``accept``), and connections that never finish a request or a Socket.IO connect
(slowloris). uvicorn offers no header timeout and its ``limit_concurrency`` answers 503
only after reading a whole request, so it cannot stop an idle flood; this module does it
below uvicorn, where connections are accepted.

How it works:

- **Accepting.** :class:`ConnectionGate` accepts from the listening socket itself (uvicorn
  is started with no listener) and hands each admitted socket to uvicorn's HTTP protocol
  through ``loop.connect_accepted_socket``, wrapped so the gate sees it end.
- **Capacity.** At most ``max_connections`` at once, and never more than half the
  descriptors the process may open (``RLIMIT_NOFILE``): the other half is the reserve
  for the database, the log, the listening socket, and the client's own files when the
  server runs embedded in it. So ``accept`` never fails for want of a descriptor.
- **Per peer.** At most ``max_connections_per_peer`` from one address (0: no such limit).
- **Making room.** A connection is *waiting* while it has no request being served and no
  Socket.IO namespace connected: just accepted, between two requests, or a WebSocket
  before its Socket.IO ``connect``. When a limit is reached, the oldest waiting
  connection (of that peer, or of anyone for the total) is closed to make room; if none
  is waiting, a newcomer over the per-peer limit is refused (reset at once) and, at full
  capacity, accepting pauses until a connection ends. Connections that finished their
  handshake are never closed to make room.
- **Deadline.** A connection has ``handshake_timeout`` seconds from its accept (or from
  the end of its previous response) to get a request in whole, head and body, or, on a
  WebSocket, to connect to a Socket.IO namespace; then it is reset. After the handshake,
  the protocols' own keep-alives take over (uvicorn's keep-alive timeout between
  requests, Engine.IO's and WebSocket pings on a connected socket).

Which phase a connection is in is told by the ASGI side (``server/handshake_watch.py``),
which sees requests, responses and Socket.IO packets, keyed by the peer's address and port
(``scope["client"]``, uvicorn's ``getpeername()``).

Must not: make the log grow with the number of connections (refusals, evictions and
timeouts are warnings of a few kinds, which ``server/log_limits.py`` lets through once per
interval), or close a connection that finished its handshake to make room.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import socket
import struct
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

if sys.platform != "win32":
    import resource

log = logging.getLogger("log_monitor_server.connections")

DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_PEER = 100
DEFAULT_HANDSHAKE_TIMEOUT = 10.0

# Descriptors the process keeps for itself beyond its connections' share, when its limit
# is raised to fit ``max_connections`` (see raise_descriptor_limit).
DESCRIPTOR_RESERVE = 64

# How long a closed connection goes on reading (and dropping) what its peer still sends,
# so that what was written last arrives before the kernel's reset (see _GuardedProtocol).
LINGER_SECONDS = 2.0

# Accepted in a row before the loop lets other callbacks run: a flood must not starve
# the requests of connections already in.
ACCEPT_BURST = 16

_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


def descriptor_limit() -> int | None:
    """The process's soft RLIMIT_NOFILE, or None where there is none to respect."""
    if sys.platform == "win32":
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_capacity(max_connections: int) -> int:
    """``max_connections``, lowered to half the descriptors the process may open."""
    limit = descriptor_limit()
    if limit is None:
        return max_connections
    return max(1, min(max_connections, limit // 2))


def raise_descriptor_limit(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard one, as far as ``max_connections``
    needs (twice that, plus a reserve), as servers commonly do at start.

    Only the standalone ``serve`` calls it: embedded in the client, the process's limits
    are the client's.
    """
    if sys.platform == "win32":
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * max_connections + DESCRIPTOR_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Phase(enum.Enum):
    WAITING = "waiting"  # no request yet, or between requests: evictable, deadline armed
    REQUEST = "request"  # a request is being served (deadline armed until its body is in)
    WEBSOCKET = "websocket"  # upgraded, no Socket.IO namespace yet: evictable, deadline armed
    ESTABLISHED = "established"  # connected to a namespace: no deadline, never evicted


@dataclass(eq=False)
class Connection:
    """One accepted TCP connection, as the gate tracks it."""

    peer: str
    port: int
    phase: Phase = Phase.WAITING
    transport: asyncio.Transport | None = None
    deadline: asyncio.TimerHandle | None = None
    closed: bool = False
    # Asked when the deadline passes: whether the handshake ended where the ASGI side could
    # not see it (an Engine.IO session upgraded to this WebSocket after connecting its
    # namespace over long-polling).
    finished_elsewhere: Callable[[], bool] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.peer, self.port


@dataclass
class TransportCounters:
    accepted: int = 0
    refused: int = 0
    evicted: int = 0
    timed_out: int = 0

    def as_dict(self, open_connections: int, capacity: int) -> dict[str, int]:
        return {
            "transport_open": open_connections,
            "transport_capacity": capacity,
            "transport_accepted": self.accepted,
            "transport_refused": self.refused,
            "transport_evicted": self.evicted,
            "transport_timed_out": self.timed_out,
        }


@dataclass
class _Waiting:
    """Connections that may be closed to make room, oldest first."""

    everyone: OrderedDict[Connection, None] = field(default_factory=OrderedDict)
    by_peer: dict[str, OrderedDict[Connection, None]] = field(default_factory=dict)

    def add(self, connection: Connection) -> None:
        self.everyone[connection] = None
        self.by_peer.setdefault(connection.peer, OrderedDict())[connection] = None

    def discard(self, connection: Connection) -> None:
        self.everyone.pop(connection, None)
        of_peer = self.by_peer.get(connection.peer)
        if of_peer is not None:
            of_peer.pop(connection, None)
            if not of_peer:
                del self.by_peer[connection.peer]

    def oldest(self, peer: str | None = None) -> Connection | None:
        queue = self.everyone if peer is None else self.by_peer.get(peer)
        return next(iter(queue), None) if queue else None


class ConnectionGate:
    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.capacity = connection_capacity(limits.max_connections)
        self.counters = TransportCounters()
        self._open: dict[tuple[str, int], Connection] = {}
        self._per_peer: Counter[str] = Counter()
        self._waiting = _Waiting()
        self._room = asyncio.Event()
        self._accepting: asyncio.Task[None] | None = None
        self._listener: socket.socket | None = None

    def stats(self) -> dict[str, int]:
        return self.counters.as_dict(len(self._open), self.capacity)

    # The accept loop.

    def start(self, listener: socket.socket, make_protocol: Callable[[], asyncio.Protocol]) -> None:
        if self.capacity < self.limits.max_connections:
            log.info(
                "at most %d connections (not %d): the process may open %s descriptors",
                self.capacity,
                self.limits.max_connections,
                descriptor_limit(),
            )
        self._listener = listener
        self._accepting = asyncio.ensure_future(self._accept_forever(listener, make_protocol))
        self._accepting.add_done_callback(_log_accept_loop_end)

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for connection in self._open.values():
            self._disarm(connection)

    async def _accept_forever(
        self, listener: socket.socket, make_protocol: Callable[[], asyncio.Protocol]
    ) -> None:
        loop = asyncio.get_running_loop()
        in_a_row = 0
        while True:
            while len(self._open) >= self.capacity and self._waiting.oldest() is None:
                # Full of connections that finished their handshake (or are being
                # served): newcomers wait in the kernel's queue until one ends.
                self._room.clear()
                await self._room.wait()
            try:
                accepted, address = await loop.sock_accept(listener)
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of descriptors or memory: something else in the process (the client,
                # when embedded) used them up. asyncio's own accept loop retries at once
                # and logs each time; this one waits a second, and logs within limits.
                log.warning("cannot accept connections for now: %s", exc.strerror or exc)
                await asyncio.sleep(1.0 if exc.errno in _OUT_OF_RESOURCES else 0.1)
                continue
            self._admit(loop, accepted, address, make_protocol)
            in_a_row += 1
            if in_a_row >= ACCEPT_BURST:
                in_a_row = 0
                await asyncio.sleep(0)

    def _admit(
        self,
        loop: asyncio.AbstractEventLoop,
        accepted: socket.socket,
        address: Any,
        make_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        connection = Connection(peer=str(address[0]), port=int(address[1]))
        per_peer_limit = self.limits.max_connections_per_peer
        if per_peer_limit and self._per_peer[connection.peer] >= per_peer_limit:
            oldest = self._waiting.oldest(connection.peer)
            if oldest is None:
                self.counters.refused += 1
                log.warning(
                    "connection from %s refused: it holds %d connections, the most one peer may",
                    connection.peer,
                    per_peer_limit,
                )
                _reset(accepted)
                return
            self._evict(oldest, "its peer holds the most connections one peer may")
        if len(self._open) >= self.capacity:
            oldest = self._waiting.oldest()
            if oldest is None:
                self.counters.refused += 1
                log.warning("connection from %s refused: the server is full", connection.peer)
                _reset(accepted)
                return
            self._evict(oldest, "the server is full")
        self.counters.accepted += 1
        self._open[connection.key] = connection
        self._per_peer[connection.peer] += 1
        task = loop.create_task(
            loop.connect_accepted_socket(
                lambda: _GuardedProtocol(self, connection, make_protocol()), accepted
            )
        )
        task.add_done_callback(lambda done: self._set_up(done, connection, accepted))

    def _set_up(
        self, done: asyncio.Future[Any], connection: Connection, accepted: socket.socket
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            # The transport was never made (the peer left at once): nothing will call
            # connection_lost, so the connection ends here.
            accepted.close()
            self._release(connection)

    # What the protocol wrapper tells.

    def _connection_made(self, connection: Connection, transport: asyncio.Transport) -> None:
        connection.transport = transport
        self._waiting.add(connection)
        self._arm(connection)
        self._room.set()

    def _release(self, connection: Connection) -> None:
        if connection.closed:
            return
        connection.closed = True
        self._disarm(connection)
        self._waiting.discard(connection)
        if self._open.get(connection.key) is connection:
            del self._open[connection.key]
        self._per_peer[connection.peer] -= 1
        if self._per_peer[connection.peer] <= 0:
            del self._per_peer[connection.peer]
        self._room.set()

    # What the ASGI side tells (server/handshake_watch.py).

    def find(self, client: Any) -> Connection | None:
        """The connection of an ASGI scope's ``client`` (address, port), if the gate has it."""
        if not isinstance(client, list | tuple) or len(client) < 2:
            return None
        return self._open.get((str(client[0]), int(client[1])))

    def request_started(self, connection: Connection) -> None:
        if connection.closed or connection.phase is Phase.ESTABLISHED:
            return
        connection.phase = Phase.REQUEST
        self._waiting.discard(connection)

    def request_received(self, connection: Connection) -> None:
        """The request is in whole: serving it may take its time (a long poll)."""
        if connection.phase is Phase.REQUEST:
            self._disarm(connection)

    def response_finished(self, connection: Connection) -> None:
        if connection.closed or connection.phase is not Phase.REQUEST:
            return
        connection.phase = Phase.WAITING
        self._waiting.add(connection)
        self._arm(connection)
        self._room.set()

    def websocket_opened(self, connection: Connection) -> None:
        # The deadline set at accept goes on: the upgrade and the Socket.IO connect are
        # one handshake.
        if connection.closed or connection.phase is Phase.ESTABLISHED:
            return
        connection.phase = Phase.WEBSOCKET
        self._waiting.add(connection)
        self._room.set()

    def established(self, connection: Connection) -> None:
        if connection.closed:
            return
        connection.phase = Phase.ESTABLISHED
        self._waiting.discard(connection)
        self._disarm(connection)

    # Deadlines and closing.

    def _arm(self, connection: Connection) -> None:
        self._disarm(connection)
        connection.deadline = asyncio.get_running_loop().call_later(
            self.limits.handshake_timeout, self._deadline_passed, connection
        )

    @staticmethod
    def _disarm(connection: Connection) -> None:
        if connection.deadline is not None:
            connection.deadline.cancel()
            connection.deadline = None

    def _deadline_passed(self, connection: Connection) -> None:
        connection.deadline = None
        if connection.closed or connection.phase is Phase.ESTABLISHED:
            return
        if connection.finished_elsewhere is not None and connection.finished_elsewhere():
            self.established(connection)
            return
        self.counters.timed_out += 1
        log.warning(
            "connection from %s closed: no handshake within %g s (%s)",
            connection.peer,
            self.limits.handshake_timeout,
            connection.phase.value,
        )
        self._close(connection)

    def _evict(self, connection: Connection, why: str) -> None:
        self.counters.evicted += 1
        log.warning("waiting connection from %s closed to make room: %s", connection.peer, why)
        self._close(connection)

    def _close(self, connection: Connection) -> None:
        self._waiting.discard(connection)
        if connection.transport is not None:
            # A reset: the descriptor is free at once, and nothing half-sent matters.
            connection.transport.abort()
        # Counted as gone now (its connection_lost follows in a moment), so the room it
        # leaves is there for the newcomer that asked for it.
        self._release(connection)


def _log_accept_loop_end(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the server stopped accepting connections", exc_info=task.exception())


def _reset(accepted: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): the descriptor is free before this returns."""
    with contextlib.suppress(OSError):
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    accepted.close()


class _GuardedProtocol(asyncio.Protocol):
    """Stands between the transport and uvicorn's protocol, so that the gate learns when
    the connection ends even after uvicorn has handed it to its WebSocket protocol
    (uvicorn calls ``transport.set_protocol``, which here switches ``inner``).

    It also closes gracefully ("lingering close", as web servers do): when the protocol
    above closes while the peer may still be sending (a WebSocket frame refused from its
    header, a request answered before its body was read), closing at once would make the
    kernel answer the unread bytes with a reset, which can destroy the last thing sent (the
    close frame with its code) before the peer reads it. So the connection is half-closed
    after what was written, and what still arrives is read and dropped until the peer
    closes its side or ``LINGER_SECONDS`` pass.
    """

    def __init__(
        self, gate: ConnectionGate, connection: Connection, inner: asyncio.Protocol
    ) -> None:
        self.gate = gate
        self.connection = connection
        self.inner = inner
        self.lingering = False
        self._real: asyncio.Transport | None = None
        self._linger_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._real = transport
        self.gate._connection_made(self.connection, transport)
        self.inner.connection_made(_GuardedTransport(transport, self))

    def data_received(self, data: bytes) -> None:
        if not self.lingering:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.lingering:
            return False  # the peer is done too: the transport closes
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_deadline is not None:
            self._linger_deadline.cancel()
        try:
            self.inner.connection_lost(exc)
        finally:
            self.gate._release(self.connection)

    def close_lingering(self) -> None:
        real = self._real
        if real is None or self.lingering or real.is_closing():
            return
        if not real.can_write_eof():
            real.close()
            return
        try:
            real.write_eof()  # sent once what is buffered has gone
        except OSError:
            # The peer is gone already (ENOTCONN: a proxy's side reset): nothing to
            # linger for.
            real.abort()
            return
        self.lingering = True
        real.resume_reading()
        self._linger_deadline = asyncio.get_running_loop().call_later(LINGER_SECONDS, real.abort)


class _GuardedTransport(asyncio.Transport):
    """The transport as uvicorn's protocols see it: the real one, except that handing the
    connection to another protocol changes the guard's inner protocol, and closing it
    lingers (see :class:`_GuardedProtocol`)."""

    def __init__(self, real: asyncio.Transport, guard: _GuardedProtocol) -> None:
        super().__init__()
        self._real = real
        self._guard = guard

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._guard.inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._guard.inner

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._guard.lingering or self._real.is_closing()

    def close(self) -> None:
        self._guard.close_lingering()

    def abort(self) -> None:
        self._real.abort()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def pause_reading(self) -> None:
        # While lingering, the connection reads (and drops) whatever the protocol wants.
        if not self._guard.lingering:
            self._real.pause_reading()

    def resume_reading(self) -> None:
        if not self._guard.lingering:
            self._real.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._real.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.is_closing():
            self._real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if not self.is_closing():
            self._real.writelines(list_of_data)

    def write_eof(self) -> None:
        if not self.is_closing():
            self._real.write_eof()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()
