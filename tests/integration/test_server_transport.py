"""The reference server's transport against hostile peers, end to end.

A real server process on loopback, with its default limits, and peers that misbehave the
way an attacker's scripts do: thousands of idle TCP connections, requests that trickle in a
byte at a time, WebSockets that never connect to a Socket.IO namespace, WebSocket frames
larger than Engine.IO accepts, and a proxied request for ``/api/stats``. Each test measures
what the server must keep: ``/api/health`` answering within a second, a bounded log, a
bounded RSS, and the connections of well-behaved clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import selectors
import socket
import statistics
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import socketio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.protocol_client import NAMESPACE, ProtocolClient, authenticated_guest
from harness.server_process import ServerProcess
from harness.waiting import wait_until

# What `serve` allows when nothing is said (README's serve flags).
HANDSHAKE_TIMEOUT = 10.0
MAX_CONNECTIONS_PER_PEER = 100

# Linux routes all of 127.0.0.0/8 to loopback: each address is a distinct peer (and the
# test's own requests, from 127.0.0.1, another).
ONE_PEER = ("127.0.0.2",)
FOUR_PEERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
FLOOD_SIZE = 2000
SERVER_DESCRIPTOR_LIMIT = 256

ENGINE_IO_PATH = "/socket.io/?EIO=4&transport=websocket"
MIB = 1024 * 1024


@pytest.fixture
def own_descriptor_limit() -> Iterator[int]:
    """The test process's soft RLIMIT_NOFILE raised to its hard limit for the flood."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    yield raised
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def health_latency(server: ServerProcess, timeout: float = 3.0) -> float:
    """Seconds until ``GET /api/health`` is answered ``200``; ``timeout`` if it is not."""
    started = time.monotonic()
    try:
        with socket.create_connection(address(server), timeout=timeout) as connection:
            connection.settimeout(max(0.05, timeout - (time.monotonic() - started)))
            connection.sendall(
                b"GET /api/health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            while chunk := connection.recv(4096):
                answer += chunk
    except OSError:
        return timeout
    if not answer.startswith(b"HTTP/1.1 200") or not answer.endswith(b'{"ok":true}'):
        return timeout
    return time.monotonic() - started


def vm_kib(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def open_flood(
    target: tuple[str, int], sources: tuple[str, ...], count: int
) -> list[socket.socket]:
    """``count`` idle TCP connections from ``sources``; waits until each is set up.

    The kernel completes a handshake whether or not the server accepts, so "set up" means
    connected (or refused) from our side; the server's view is what the test measures.
    """
    flood: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    for index in range(count):
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setblocking(False)
        connection.bind((sources[index % len(sources)], 0))
        connection.connect_ex(target)
        selector.register(connection, selectors.EVENT_WRITE)
        flood.append(connection)
    pending = len(flood)
    deadline = time.monotonic() + 20
    while pending and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            selector.unregister(key.fileobj)
            pending -= 1
    selector.close()
    return flood


def accept_queue_length(port: int) -> int:
    """Connections the kernel completed for the listening socket on ``port`` and the
    server has not accepted yet (``rx_queue`` of a LISTEN socket in /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            return int(queues.split(":")[1], 16)
    raise AssertionError(f"no listening socket on port {port}")


def wait_for_accept_queue_to_empty(port: int, timeout: float) -> float:
    """Seconds until the server has taken every completed connection (``timeout`` if it
    never does: a server out of descriptors stops accepting)."""
    try:
        return wait_until(
            lambda: accept_queue_length(port) == 0,
            timeout,
            "the accept queue empty",
            interval=0.01,
        )
    except TimeoutError:
        return timeout


def transport_stats(server: ServerProcess) -> dict[str, int]:
    """The connection counters of ``/api/stats`` (none on a server without them)."""
    with urllib.request.urlopen(server.url + "/api/stats", timeout=3) as response:
        stats: dict[str, int] = json.load(response)
    return {name: value for name, value in stats.items() if name.startswith("transport_")}


@pytest.mark.parametrize("sources", [ONE_PEER, FOUR_PEERS], ids=["one peer", "four peers"])
def test_connection_flood_leaves_health_answering_and_the_log_bounded(
    tmp_path: Path, own_descriptor_limit: int, sources: tuple[str, ...]
) -> None:
    assert own_descriptor_limit > FLOOD_SIZE + 200, "the test needs room for its flood"
    server = ServerProcess(tmp_path / "server", descriptor_limit=SERVER_DESCRIPTOR_LIMIT)
    server.start()
    flood: list[socket.socket] = []
    try:
        assert health_latency(server) < 1.0
        log_before = server.log_path.stat().st_size
        flood_started = time.monotonic()
        # Eight times the descriptors the server may open, held open.
        flood = open_flood(address(server), sources, FLOOD_SIZE)
        flood_seconds = time.monotonic() - flood_started
        # The kernel completes handshakes for the server; the measure starts once the server
        # has taken them all (dropped some, kept others), with the flood still held open.
        drain_seconds = wait_for_accept_queue_to_empty(address(server)[1], 10)
        latencies = [health_latency(server) for _ in range(5)]

        async def ship_one_chunk() -> object:
            client = await authenticated_guest(server.url)
            try:
                return await client.submit(client.chunk("during the flood\n", 1))
            finally:
                await client.close()

        try:
            ack = asyncio.run(asyncio.wait_for(ship_one_chunk(), 10))
        except (TimeoutError, OSError) as exc:
            ack = f"no acknowledgement: {exc!r}"
        log = server.log_path.read_bytes()[log_before:]
        log_lines = log.count(b"\n")
        try:
            counters: object = transport_stats(server)
        except OSError as exc:
            counters = repr(exc)
        print(
            f"flood of {len(flood)} connections from {len(sources)} peer(s) in "
            f"{flood_seconds:.1f} s, taken in {drain_seconds:.1f} s; /api/health latencies "
            f"{[round(latency, 3) for latency in latencies]} s; server log grew "
            f"{len(log)} bytes, {log_lines} lines; {counters}"
        )
        assert max(latencies) < 1.0, latencies
        assert isinstance(ack, dict), ack
        assert ack.get("ok") is True, ack
        # A few rate-limited lines (refused, evicted), not one per connection.
        assert len(log) < 8_000, log[-2000:]
        assert log_lines < 40, log[-2000:]
    finally:
        for connection in flood:
            connection.close()
        server.stop()


async def _trickle_request_head(target: tuple[str, int]) -> float:
    """A request head sent one byte every 0.5 s; returns when the server closed it."""
    reader, writer = await asyncio.open_connection(*target)
    started = time.monotonic()
    try:
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        while True:
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                if await asyncio.wait_for(reader.read(1024), 0.5) == b"":
                    break
            writer.write(b"a")
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started


async def _trickle_request_body(target: tuple[str, int]) -> float:
    """A complete head promising 100 bytes of body, then one byte every 0.5 s."""
    reader, writer = await asyncio.open_connection(*target)
    started = time.monotonic()
    try:
        writer.write(
            b"POST /api/auth/login HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        while True:
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                if await asyncio.wait_for(reader.read(1024), 0.5) == b"":
                    break
            writer.write(b" ")
    except ConnectionError:
        pass
    finally:
        writer.close()
    return time.monotonic() - started


async def _idle_connection(target: tuple[str, int]) -> float:
    """A TCP connection that never sends a byte."""
    reader, writer = await asyncio.open_connection(*target)
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        while await reader.read(1024):
            pass
    writer.close()
    return time.monotonic() - started


async def _idle_engine_io_websocket(url: str) -> float:
    """A WebSocket that receives Engine.IO's open packet and never connects a namespace."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url + ENGINE_IO_PATH) as ws:
        started = time.monotonic()
        opened = await ws.receive(timeout=5)
        assert opened.type == aiohttp.WSMsgType.TEXT
        assert opened.data.startswith("0{"), opened.data
        async for _message in ws:
            pass  # Engine.IO pings, answered by nobody
        return time.monotonic() - started


class PingingClient:
    """A Socket.IO client of ``/client`` over the given Engine.IO transports, that can show
    it is still connected by a ``ping`` answered with a ``pong``."""

    def __init__(self, url: str, transports: list[str]) -> None:
        self.url = url
        self.transports = transports
        self.sio = socketio.AsyncClient(reconnection=False)
        self.pongs: asyncio.Queue[object] = asyncio.Queue()
        self.sio.on("pong", self.pongs.put_nowait, namespace=NAMESPACE)

    async def connect(self) -> PingingClient:
        await self.sio.connect(
            f"{self.url}?clientId={uuid.uuid4()}&hostname=test-host",
            namespaces=[NAMESPACE],
            transports=self.transports,
            wait_timeout=10,
        )
        return self

    async def ping(self) -> object:
        await self.sio.emit("ping", {"timestamp": 1}, namespace=NAMESPACE)
        return await asyncio.wait_for(self.pongs.get(), 5)

    async def close(self) -> None:
        if self.sio.transport() == "websocket":
            await self.sio.disconnect()
            return
        # A polling client's disconnect waits for its long poll (up to Engine.IO's 25 s
        # ping interval): end it without waiting, and stop its loops.
        eio = self.sio.eio
        loops = [eio.read_loop_task, eio.write_loop_task]
        await eio.disconnect(abort=True)
        for loop_task in loops:
            if loop_task is not None:
                loop_task.cancel()
        await asyncio.gather(*(task for task in loops if task is not None), return_exceptions=True)


async def test_handshakes_that_never_finish_are_closed_after_the_handshake_timeout(
    server: ServerProcess,
) -> None:
    target = address(server)
    # Connected before the stragglers: a finished handshake must outlive the timeout, over
    # each transport (long-polling, long-polling upgraded to WebSocket, WebSocket).
    connected = {
        transports[-1] if len(transports) == 1 else "upgraded": await PingingClient(
            server.url, transports
        ).connect()
        for transports in (["polling"], ["polling", "websocket"], ["websocket"])
    }
    stragglers = {
        "idle TCP": [_idle_connection(target) for _ in range(20)],
        "slow request head": [_trickle_request_head(target) for _ in range(20)],
        "slow request body": [_trickle_request_body(target) for _ in range(5)],
        "WebSocket without Socket.IO connect": [
            _idle_engine_io_websocket(server.url) for _ in range(5)
        ],
    }
    kinds = list(stragglers)
    groups = [asyncio.gather(*stragglers[kind]) for kind in kinds]
    try:
        results = await asyncio.wait_for(asyncio.gather(*groups), HANDSHAKE_TIMEOUT + 8)
    finally:
        for group in groups:
            group.cancel()
    held = {
        kind: (round(min(times), 1), round(max(times), 1))
        for kind, times in zip(kinds, results, strict=True)
    }
    print(f"held (shortest, longest) in seconds: {held}")
    for kind, times in zip(kinds, results, strict=True):
        # Closed by the deadline: not earlier (nothing else closed them), not much later.
        assert min(times) > HANDSHAKE_TIMEOUT - 1.5, (kind, times)
        assert max(times) < HANDSHAKE_TIMEOUT + 4, (kind, times)
    for name, client in connected.items():
        assert await client.ping() == {"timestamp": 1}, name
        expected = "polling" if name == "polling" else "websocket"
        assert client.sio.transport() == expected, name
        await client.close()


def _send_oversize_frame(url: str, size: int) -> int | None:
    """One Engine.IO message of ``size`` bytes in one uncompressed frame; the close code
    the server sent (None: none arrived).

    websockets' client reads on its own thread while this one sends, so the server's close
    frame is read even when the server stops reading the frame and resets the connection.
    """
    ws_url = url.replace("http://", "ws://", 1) + ENGINE_IO_PATH
    with connect(ws_url, compression=None, max_size=None, open_timeout=10) as ws:
        opened = ws.recv(timeout=5)
        assert isinstance(opened, str), opened
        assert opened.startswith("0{"), opened
        with contextlib.suppress(ConnectionClosed):
            ws.send("4" + "x" * (size - 1))
        try:
            while True:
                ws.recv(timeout=30)
        except ConnectionClosed as closed:
            return None if closed.rcvd is None else closed.rcvd.code


async def test_oversize_frames_are_refused_unread_and_memory_stays_bounded(
    server: ServerProcess,
) -> None:
    assert server.process is not None
    pid = server.process.pid
    rss_before, peak_before = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
    codes: list[int | None] = []
    # 60 frames of 12 MiB (between Engine.IO's 8 MiB and uvicorn's old 16 MiB), six at once.
    for _ in range(10):
        codes += await asyncio.gather(
            *(asyncio.to_thread(_send_oversize_frame, server.url, 12 * MIB) for _ in range(6))
        )
    rss_after, peak_after = vm_kib(pid, "VmRSS"), vm_kib(pid, "VmHWM")
    print(
        f"server VmRSS {rss_before // 1024} -> {rss_after // 1024} MiB, "
        f"VmHWM {peak_before // 1024} -> {peak_after // 1024} MiB; close codes {set(codes)}"
    )
    assert codes == [1009] * 60, codes  # 1009: message too big
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
    assert peak_after - peak_before < 128 * 1024, (peak_before, peak_after)
    client = await authenticated_guest(server.url)
    ack = await client.submit(client.chunk("after the frames\n", 1))
    assert ack["ok"] is True, ack
    await client.close()


def _event_of_size(size: int) -> str:
    """A Socket.IO event on ``/client`` asking for an ack (id 7), ``size`` bytes long."""
    head, tail = '42/client,7["no_such_event","', '"]'
    return head + "x" * (size - len(head) - len(tail)) + tail


def _answer_to_event_of_size(url: str, size: int) -> str | int | None:
    """The ack of an event of ``size`` bytes, or the close code it got instead."""
    ws_url = url.replace("http://", "ws://", 1) + ENGINE_IO_PATH + f"&clientId={uuid.uuid4()}"
    with connect(ws_url, compression=None, max_size=None, open_timeout=10) as ws:
        ws.recv(timeout=5)  # Engine.IO's open packet
        ws.send("40/client,{}")
        try:
            ws.send(_event_of_size(size))
            while True:
                message = ws.recv(timeout=30)
                if isinstance(message, str) and message.startswith("43/client,7"):
                    return message
        except ConnectionClosed as closed:
            return None if closed.rcvd is None else closed.rcvd.code


async def test_the_websocket_limit_is_engine_io_limit(server: ServerProcess) -> None:
    limit = 8 * MIB  # both, for the default --max-chunk-bytes of 1 MiB
    at_limit, over_limit = await asyncio.gather(
        asyncio.to_thread(_answer_to_event_of_size, server.url, limit),
        asyncio.to_thread(_answer_to_event_of_size, server.url, limit + 1),
    )
    assert at_limit == '43/client,7[{"error":"unknown_event"}]', at_limit
    assert over_limit == 1009, over_limit


async def test_small_frames_go_out_at_once_without_waiting_for_the_peers_ack(
    server: ServerProcess,
) -> None:
    """``authenticated`` follows the namespace's connect frame at once. With Nagle's
    algorithm left on the server's sockets it waited for the client's delayed ACK
    (40 ms on Linux), in every handshake."""
    guest = await authenticated_guest(server.url)
    await guest.close()
    delays: list[float] = []
    for _ in range(5):
        client = ProtocolClient(server.url, guest.client_id, guest.token)
        await client.connect()
        connected = time.monotonic()
        await client.expect("authenticated")
        delays.append(time.monotonic() - connected)
        await client.close()
    assert statistics.median(delays) < 0.02, delays


async def test_websockets_off_the_socket_io_path_are_refused_quietly(
    server: ServerProcess,
) -> None:
    log_before = server.log_path.stat().st_size
    async with aiohttp.ClientSession() as http:
        for _ in range(50):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(server.url + "/api/health")
            assert refused.value.status == 403
    assert server.log_path.read_bytes()[log_before:] == b""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _stats_status(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with http.get(url + "/api/stats", headers=headers) as response:
        await response.read()
        return response.status


async def test_stats_answer_direct_local_peers_only(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    assert await _stats_status(http, server.url, {}) == 200
    # What a reverse proxy on this machine adds: the request is someone else's.
    for forwarded in ({"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}):
        assert await _stats_status(http, server.url, forwarded) == 404, forwarded


async def test_public_stats_answer_proxied_requests(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", "--public-stats").start()
    try:
        async with aiohttp.ClientSession() as http:
            status = await _stats_status(http, server.url, {"X-Forwarded-For": "203.0.113.7"})
        assert status == 200
    finally:
        server.stop()
