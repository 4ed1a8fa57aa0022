"""A small TCP proxy on loopback that breaks the network on command, for the fault campaign.

Owns one listening socket on 127.0.0.1 (an ephemeral port) that forwards every accepted
connection to one upstream ``host:port``, and three modes:

- ``pass``: bytes flow both ways;
- ``cut``: every open connection is closed on both sides at once (the client and the
  server each see the connection end), and new connections are accepted and closed at
  once, until the mode changes;
- ``blackhole``: bytes stop flowing without any close. Nothing is read from either side
  (so the kernel's buffers fill up and writers stall, as on a dead route), new
  connections are accepted and left hanging. Only a timeout on an end can notice. On
  ``pass`` again, the connections that are still open resume where they stopped, with
  nothing lost or reordered: what TCP does when a route comes back before either end
  gave up.

The proxy runs on an asyncio loop of its own in a daemon thread (:class:`ChaosProxy`),
so synchronous test code can switch modes (thread-safe, returns once the switch took
effect) while child processes talk through it.

Must not: listen beyond loopback, inspect or alter the bytes it forwards, or decide when
to break anything (the campaign does).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Mode = Literal["pass", "cut", "blackhole"]
MODES: tuple[Mode, ...] = ("pass", "cut", "blackhole")
READ_SIZE = 64 * 1024
T = TypeVar("T")


@dataclass
class ProxyCounters:
    """What the proxy saw; read from any thread (plain ints, written on the proxy loop)."""

    accepted: int = 0
    refused_while_cut: int = 0
    cut: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's stream and the upstream stream."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.close()


class _ProxyCore:
    """The proxy's state; every method runs on the proxy's own loop."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.mode: Mode = "pass"
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.links: set[_Link] = set()
        self.counters = ProxyCounters()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "pass":
            self.flowing.set()
            return
        self.flowing.clear()
        if mode == "cut":
            for link in list(self.links):
                self.counters.cut += 1
                self._drop(link)

    def _drop(self, link: _Link) -> None:
        self.links.discard(link)
        link.close()
        for task in link.tasks:
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.accepted += 1
        if self.mode == "cut":
            self.counters.refused_while_cut += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            # Upstream is down (a killed server): the client sees its connection end,
            # as it would when connecting to the server directly.
            writer.close()
            return
        link = _Link(writer, up_writer)
        self.links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link, up=True)),
            asyncio.create_task(self._pump(up_reader, writer, link, up=False)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, up: bool
    ) -> None:
        try:
            while True:
                # In a black hole nothing is read, so the sender's buffers fill as on a
                # dead route; bytes read before it began wait here, in order, for `pass`.
                await self.flowing.wait()
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
                if up:
                    self.counters.bytes_up += len(data)
                else:
                    self.counters.bytes_down += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other too, and forget the link.
            if link in self.links:
                self._drop(link)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.links):
            self._drop(link)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


class ChaosProxy:
    """The proxy on its own thread and loop; every public method is called from outside it.

    Use as a context manager, or ``start()`` / ``close()``. ``url`` is the address to give
    the client instead of the server's.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._core: _ProxyCore | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        assert self._core is not None
        return self._core.mode

    @property
    def counters(self) -> ProxyCounters:
        assert self._core is not None
        return self._core.counters

    def start(self) -> ChaosProxy:
        self._thread.start()
        self._core = self._call(self._make_core())
        self.port = self._call(self._core.start())
        return self

    def set_mode(self, mode: Mode) -> None:
        """Switch modes; returns once the switch is in effect (cut connections are closed)."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        core = self._core
        assert core is not None

        async def switch() -> None:
            core.set_mode(mode)

        self._call(switch())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        if self._core is not None:
            with contextlib.suppress(Exception):
                self._call(self._core.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _make_core(self) -> _ProxyCore:
        return _ProxyCore(*self._upstream)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)
