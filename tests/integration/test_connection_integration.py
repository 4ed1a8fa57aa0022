"""``ServerConnection`` against real servers on loopback.

Most tests run the reference server (``harness/server_process.py``) as a child process and
check what it stored with its ``dump`` command. Behaviour the reference server never
shows (a server that never acks, malformed events) comes from a tiny python-socketio
server inside the test. The spool and token store are in-memory fakes, except in the
test that proves the real ``Spool`` and ``TokenStore`` fit the shell's Protocols.

Nothing waits by sleeping: every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
import socketio
from aiohttp import web

from harness.server_process import REPOSITORY, ServerProcess
from harness.waiting import wait_until_async
from main_process.connection.server_connection import (
    USER_AGENT,
    ChunkStore,
    ServerConnection,
    TokenStore,
)
from main_process.connection.state import (
    SIGNED_OUT_MESSAGE,
    ChunkLocation,
    ConnectionConfig,
    ConnectionStatus,
)
from main_process.credentials import Tokens
from main_process.version import client_version
from tests.support.connection_fakes import MemorySpool, MemoryTokenStore
from tests.support.connection_helpers import (
    FAST,
    connected,
    group,
    login,
    numbered_lines,
    server_stats,
)

# ----------------------------------------------------------------------------- helpers


@pytest.fixture
async def reference_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    server = ServerProcess(tmp_path / "server")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def with_access_ttl(tmp_path: Path, seconds: float) -> ServerProcess:
    server = ServerProcess(tmp_path / "server", "--access-ttl", str(seconds))
    await asyncio.to_thread(server.start)
    return server


async def register_guest(server: ServerProcess, client_id: str) -> str:
    """The guest token an installation gets before it signs in (its own credentials)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.url + "/api/auth/register-guest",
            json={"clientId": client_id, "hostname": "test-host"},
        ) as response,
    ):
        assert response.status == 200
        token: str = (await response.json())["guestToken"]
        return token


# ----------------------------------------------------------------------------- reference server


async def test_guest_flow_end_to_end(reference_server: ServerProcess) -> None:
    spool, token_store = MemorySpool(), MemoryTokenStore()
    client_id = str(uuid.uuid4())
    statuses: list[ConnectionStatus] = []
    texts = group(numbered_lines(400), 8)
    async with ServerConnection(
        reference_server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=token_store,
        on_status=statuses.append,
        config=FAST,
    ) as connection:
        for i, text in enumerate(texts):
            source = ChunkLocation("/var/log/game.log", i * 1000)
            await connection.ensure_connected_and_send_log_chunk(text, source)
        status = await connection.wait_for_status(connected("guest"), 20)
        await wait_until_async(lambda: not spool.chunks, 20, "every chunk acknowledged")
        assert status.attempt == 0
        assert status.last_error is None
        # The server issued a guest token, the client saved it and came back with it.
        assert token_store.saved[0].guest_token is not None
        assert connection.tokens.guest_token == token_store.saved[0].guest_token
        assert connection.counters.sockets_opened == 2
    assert reference_server.dump(client_id) == "".join(texts).encode()
    states = [s.state for s in statuses]
    assert states.index("connecting") < states.index("connected")
    assert states[-1] == "disconnected"
    assert all(s.state != "connected" or s.authenticated for s in statuses)


async def test_real_spool_and_token_store_fit_the_protocols(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    from main_process.credentials import TokenStore as FileTokenStore
    from main_process.spool.chunks import ChunkSource, Spool

    client_id = str(uuid.uuid4())
    spool = Spool(tmp_path / "spool.sqlite3", client_id)
    token_file = tmp_path / "tokens.json"
    chunk_store: ChunkStore = spool
    token_store: TokenStore = FileTokenStore(token_file)
    texts = group(numbered_lines(100), 5)
    try:
        async with ServerConnection(
            reference_server.url,
            client_id=client_id,
            chunk_store=chunk_store,
            token_store=token_store,
            config=FAST,
        ) as connection:
            for i, text in enumerate(texts):
                source = ChunkSource("/var/log/app.log", i * 100)
                await connection.ensure_connected_and_send_log_chunk(text, source)
            await connection.wait_for_status(connected("guest"), 20)
            await wait_until_async(lambda: spool.stats().buffered_chunks == 0, 20, "an empty spool")
        assert json.loads(token_file.read_text())["guest_token"]
        assert token_file.stat().st_mode & 0o777 == 0o600
    finally:
        spool.close()
    dumped = await asyncio.to_thread(reference_server.run_cli, "dump", "--json")
    records = [json.loads(line) for line in dumped.stdout.decode().splitlines()]
    assert [r["chunkId"] for r in records] == [f"{client_id}:{i}" for i in range(1, 21)]
    assert records[3]["source"] == {"path": "/var/log/app.log", "offset": 300}


async def test_no_chunk_is_sent_before_its_fsync_which_runs_off_the_event_loop(
    reference_server: ServerProcess, tmp_path: Path
) -> None:
    import threading

    from main_process.spool.chunks import Spool, WalFlush

    client_id = str(uuid.uuid4())
    spool = Spool(tmp_path / "spool.sqlite3", client_id)
    fsync_may_finish = threading.Event()
    fsyncs_started: list[int] = []
    real_job = spool.durability_job

    class GatedFlush(WalFlush):
        def run(self) -> None:
            fsyncs_started.append(self.through_seq)
            assert fsync_may_finish.wait(20)
            super().run()

    def gated_job() -> WalFlush | None:
        job = real_job()
        return None if job is None else GatedFlush(job.wal_path, job.through_seq)

    spool.durability_job = gated_job  # type: ignore[method-assign]
    texts = group(numbered_lines(30), 10)
    try:
        async with ServerConnection(
            reference_server.url,
            client_id=client_id,
            chunk_store=spool,
            token_store=MemoryTokenStore(),
            config=FAST,
        ) as connection:
            await connection.ensure_connected_and_send_log_chunk(texts[0], None)
            await connection.wait_for_status(connected("guest"), 20)
            await wait_until_async(lambda: bool(fsyncs_started), 20, "the first fsync started")
            # While the fsync is held, the loop goes on: more chunks are appended, the
            # status is served; nothing reaches the server.
            for text in texts[1:]:
                await connection.ensure_connected_and_send_log_chunk(text, None)
            assert connection.status().state == "connected"
            assert spool.stats().buffered_chunks == 3
            assert (await server_stats(reference_server))["chunks_stored"] == 0
            fsync_may_finish.set()
            await wait_until_async(lambda: spool.stats().buffered_chunks == 0, 20, "all acked")
    finally:
        spool.close()
    assert fsyncs_started[0] == 1
    assert reference_server.dump(client_id) == "".join(texts).encode()


async def test_access_token_expiring_mid_stream_is_refreshed_and_the_stream_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await with_access_ttl(tmp_path, 2.0)
    try:
        client_id = str(uuid.uuid4())
        signed_in = await login(server, "ada", client_id)
        spool, token_store = MemorySpool(), MemoryTokenStore(signed_in)
        texts = group(numbered_lines(3000), 10)
        async with ServerConnection(
            server.url,
            client_id=client_id,
            chunk_store=spool,
            token_store=token_store,
            config=FAST,
        ) as connection:
            await connection.connect_to_server()
            await connection.wait_for_status(connected("user"), 20)
            loop = asyncio.get_running_loop()
            started = loop.time()
            # Spread the stream over ~5 s so the 2 s token expires under it twice.
            for i, text in enumerate(texts):
                await connection.ensure_connected_and_send_log_chunk(text)
                await asyncio.sleep(max(0.0, started + i * 0.017 - loop.time()))
            await wait_until_async(lambda: not spool.chunks, 30, "every chunk acknowledged")
            status = await connection.wait_for_status(connected("user"), 20)
            assert status.username == "ada"
            assert status.last_error is None
            rotated = [t for t in token_store.saved if t.refresh_token != signed_in.refresh_token]
            assert len(rotated) >= 2, "the access token should have expired at least twice"
            assert token_store.tokens.access_token == connection.tokens.access_token
            assert token_store.tokens.username == "ada"
        assert server.dump(client_id) == "".join(texts).encode()
        secrets = {signed_in.access_token, signed_in.refresh_token}
        for saved in token_store.saved:
            secrets |= {saved.access_token, saved.refresh_token, saved.guest_token}
        secrets.discard(None)
        logged = "\n".join(record.getMessage() for record in caplog.records)
        assert "token_expired" in logged  # the log did see the refresh flow...
        for secret in secrets:
            assert secret is not None
            assert secret not in logged  # ...but never a token
    finally:
        await asyncio.to_thread(server.stop)


async def test_access_tokens_living_1_s_are_used_as_soon_as_refreshed_and_10000_lines_ship(
    tmp_path: Path,
) -> None:
    # Each access token lives 1 s, less than the 2 s a reconnect after ``retry_auth``
    # would wait: the client must reconnect the moment the rotated tokens are saved.
    from main_process.credentials import TokenStore as FileTokenStore

    server = await with_access_ttl(tmp_path, 1.0)
    try:
        client_id = str(uuid.uuid4())
        signed_in = await login(server, "ada", client_id)
        token_store = FileTokenStore(tmp_path / "client" / "tokens.json")
        token_store.save(signed_in)
        spool = MemorySpool()
        lines = numbered_lines(10_000)
        texts = group(lines, 10)
        async with ServerConnection(
            server.url,
            client_id=client_id,
            chunk_store=spool,
            token_store=token_store,
            config=ConnectionConfig(),  # the defaults: retry_auth_reconnect_delay is 2 s
        ) as connection:
            await connection.connect_to_server()
            await connection.wait_for_status(connected("user"), 20)
            loop = asyncio.get_running_loop()
            started = loop.time()
            # Spread over ~5 s, so the stream outlives several access tokens.
            for i, text in enumerate(texts):
                await connection.ensure_connected_and_send_log_chunk(text)
                await asyncio.sleep(max(0.0, started + i * 0.005 - loop.time()))
            await wait_until_async(lambda: not spool.chunks, 60, "every chunk acknowledged")
            status = await connection.wait_for_status(connected("user"), 20)
            assert (status.username, status.last_error) == ("ada", None)
            assert status.attempt == 0  # refreshes that worked are not failures to back off
            assert token_store.load() == connection.tokens
        stats = await server_stats(server)
        assert stats["retry_auth_sent"] >= 3, "the access token should have expired under it"
        assert server.dump(client_id) == "".join(lines).encode()
    finally:
        await asyncio.to_thread(server.stop)


async def test_refused_refresh_continues_as_guest_and_says_so(
    reference_server: ServerProcess,
) -> None:
    # The installation was a guest before it signed in, as the client always is: its own
    # guest token goes on owning its client id after the user's session is revoked.
    client_id = str(uuid.uuid4())
    guest_token = await register_guest(reference_server, client_id)
    signed_in = await login(reference_server, "bob", client_id, guest_token)
    revoked = await asyncio.to_thread(reference_server.run_cli, "revoke", "bob")
    assert revoked.returncode == 0, revoked.stderr
    spool, token_store = MemorySpool(), MemoryTokenStore(signed_in)
    texts = group(numbered_lines(50), 5)
    async with ServerConnection(
        reference_server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=token_store,
        config=FAST,
    ) as connection:
        for text in texts:
            await connection.ensure_connected_and_send_log_chunk(text)
        status = await connection.wait_for_status(connected("guest"), 20)
        assert status.last_error == SIGNED_OUT_MESSAGE
        await wait_until_async(lambda: not spool.chunks, 20, "every chunk acknowledged")
        final = token_store.tokens
        assert (final.access_token, final.refresh_token, final.username) == (None, None, None)
        assert final.guest_token == guest_token
        assert connection.client_id == client_id
    assert reference_server.dump(client_id) == "".join(texts).encode()


async def test_a_guest_token_the_server_refuses_is_replaced(
    reference_server: ServerProcess,
) -> None:
    token_store = MemoryTokenStore(Tokens(guest_token="not-a-token-this-server-signed"))
    async with ServerConnection(
        reference_server.url,
        client_id=str(uuid.uuid4()),
        chunk_store=MemorySpool(),
        token_store=token_store,
        config=FAST,
    ) as connection:
        await connection.connect_to_server()
        await connection.wait_for_status(connected("guest"), 20)
        assert token_store.saved[0].guest_token is None  # forgotten first
        assert token_store.tokens.guest_token not in (None, "not-a-token-this-server-signed")


async def test_server_killed_and_restarted_while_streaming_stores_every_chunk_once_in_order(
    reference_server: ServerProcess,
) -> None:
    client_id = str(uuid.uuid4())
    spool, token_store = MemorySpool(), MemoryTokenStore()
    lines = numbered_lines(10_000)
    texts = group(lines, 10)
    restarts = 5

    async with ServerConnection(
        reference_server.url,
        client_id=client_id,
        chunk_store=spool,
        token_store=token_store,
        config=FAST,
    ) as connection:

        async def produce() -> None:
            for text in texts:
                await connection.ensure_connected_and_send_log_chunk(text)
                await asyncio.sleep(0.002)

        producer = asyncio.create_task(produce())
        for n in range(restarts):
            threshold = (n + 1) * len(texts) // (restarts + 2)
            await wait_until_async(
                lambda threshold=threshold: spool.acknowledged >= threshold,  # type: ignore[misc]
                60,
                f"{threshold} chunks acknowledged",
            )
            kill = n % 2 == 0  # SIGKILL mid-flush and polite SIGTERM, alternately
            await asyncio.to_thread(reference_server.stop, kill)
            await connection.wait_for_status(lambda s: s.state != "connected", 20)
            await asyncio.to_thread(reference_server.start)
        await producer
        await wait_until_async(lambda: not spool.chunks, 60, "every chunk acknowledged")
        assert connection.counters.sockets_opened >= restarts + 2
    assert spool.dead == {}
    assert reference_server.dump(client_id) == "".join(lines).encode()


# ----------------------------------------------------------------------------- fake servers


@dataclass
class FakeServer:
    """A python-socketio server on loopback whose behaviour a test scripts."""

    sio: socketio.AsyncServer
    url: str
    runner: web.AppRunner
    connections: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    ack: bool = True
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = FakeServer(sio, f"ws://127.0.0.1:{port}", runner)
    try:
        yield server
    finally:
        server.release.set()
        await runner.cleanup()


def serve_acks_or_silence(server: FakeServer) -> None:
    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        server.connections.append({"sid": sid, "query": environ.get("QUERY_STRING"), "auth": auth})
        await server.sio.emit("authenticated", {"identity": "guest"}, to=sid, namespace="/client")

    async def on_chunk(sid: str, data: dict[str, Any]) -> dict[str, Any] | None:
        server.chunks.append((len(server.connections), data))
        if server.ack:
            return {"ok": True, "chunkId": data.get("chunkId")}
        await server.release.wait()  # never acknowledge while the test runs
        return None

    server.sio.on("connect", on_connect, namespace="/client")
    server.sio.on("submit_log_chunk", on_chunk, namespace="/client")


async def test_acknowledged_chunks_are_deleted_together_at_once_when_nothing_else_waits(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from main_process.connection import server_connection

    # Only the batch size or an empty spool may trigger a delete here, and the close.
    monkeypatch.setattr(server_connection, "_ACK_LINGER", 3600.0)
    monkeypatch.setattr(server_connection, "_ACK_BATCH", 3)
    serve_acks_or_silence(fake_server)
    spool = MemorySpool()
    deletes: list[list[int]] = []
    real_delete = spool.acknowledge_many

    def recording_delete(seqs: Sequence[int]) -> int:
        deletes.append(list(seqs))
        return real_delete(seqs)

    spool.acknowledge_many = recording_delete  # type: ignore[method-assign]
    async with ServerConnection(
        fake_server.url,
        client_id="client-1",
        chunk_store=spool,
        token_store=MemoryTokenStore(Tokens(guest_token="g-1")),
        config=replace(FAST, window=8),
    ) as connection:
        await connection.ensure_connected_and_send_log_chunk("one\n", None)
        # Acknowledged while it is all the spool holds: deleted at once.
        await wait_until_async(lambda: deletes == [[1]], 10, "the lone chunk deleted")
        fake_server.ack = False
        await connection.ensure_connected_and_send_log_chunk("held\n", None)
        await wait_until_async(lambda: len(fake_server.chunks) == 2, 10, "held chunk sent")
        fake_server.ack = True
        for text in ("a\n", "b\n", "c\n", "d\n"):
            await connection.ensure_connected_and_send_log_chunk(text, None)
        # Three acks make a batch; the fourth waits, as the held chunk is still out.
        await wait_until_async(
            lambda: connection.counters.chunks_acknowledged == 5, 10, "five acks"
        )
        assert deletes == [[1], [3, 4, 5]]
        assert 6 in spool.chunks
        # A new socket starts from the head of the spool: what was acknowledged is
        # deleted first, not sent again; the held chunk is.
        await fake_server.sio.disconnect(fake_server.connections[0]["sid"], namespace="/client")
        await wait_until_async(lambda: not spool.chunks, 10, "the held chunk acknowledged")
        assert deletes == [[1], [3, 4, 5], [6], [2]]
        sent = [data["chunkId"] for _, data in fake_server.chunks]
        assert sent.count("client-1:6") == 1
        assert sent.count("client-1:2") == 2
    assert deletes == [[1], [3, 4, 5], [6], [2]]


async def test_closing_deletes_what_was_acknowledged_and_not_deleted_yet(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from main_process.connection import server_connection

    monkeypatch.setattr(server_connection, "_ACK_LINGER", 3600.0)
    serve_acks_or_silence(fake_server)
    spool = MemorySpool()
    async with ServerConnection(
        fake_server.url,
        client_id="client-1",
        chunk_store=spool,
        token_store=MemoryTokenStore(Tokens(guest_token="g-1")),
        config=FAST,
    ) as connection:
        fake_server.ack = False
        await connection.ensure_connected_and_send_log_chunk("held\n", None)
        await wait_until_async(lambda: len(fake_server.chunks) == 1, 10, "held chunk sent")
        fake_server.ack = True
        await connection.ensure_connected_and_send_log_chunk("acked\n", None)
        await wait_until_async(lambda: connection.counters.chunks_acknowledged == 1, 10, "one ack")
        assert sorted(spool.chunks) == [1, 2]  # acknowledged, not deleted yet
    assert sorted(spool.chunks) == [1]


async def test_a_server_that_never_acks_gets_the_same_chunks_again_after_the_ack_timeout(
    fake_server: FakeServer,
) -> None:
    serve_acks_or_silence(fake_server)
    fake_server.ack = False
    spool, token_store = MemorySpool(), MemoryTokenStore(Tokens(guest_token="g-1"))
    config = replace(FAST, ack_timeout=1.0, window=4)
    statuses: list[ConnectionStatus] = []
    async with ServerConnection(
        fake_server.url,
        client_id="client-1",
        chunk_store=spool,
        token_store=token_store,
        on_status=statuses.append,
        config=config,
        hostname="box-7",
    ) as connection:
        for i in range(6):
            await connection.ensure_connected_and_send_log_chunk(f"text {i}\n")
        await wait_until_async(lambda: len(fake_server.connections) >= 2, 10, "a reconnect")
        await wait_until_async(
            lambda: sum(1 for n, _ in fake_server.chunks if n == 2) >= 4, 10, "the resend"
        )
        first = [c["chunkId"] for n, c in fake_server.chunks if n == 1]
        second = [c["chunkId"] for n, c in fake_server.chunks if n == 2]
        assert first == second == [f"client-1:{i}" for i in range(1, 5)]  # window of 4
        errors = [s.last_error for s in statuses if s.last_error]
        assert errors[0] == "no acknowledgement within 1 s"
        assert list(spool.chunks) == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing deleted
        # Once the server acknowledges again, everything is delivered.
        fake_server.ack = True
        await wait_until_async(lambda: not spool.chunks, 15, "every chunk acknowledged")

    handshake = fake_server.connections[0]
    assert handshake["auth"] == {"token": "g-1"}
    query = parse_qs(handshake["query"])
    assert query["clientId"] == ["client-1"]
    assert query["hostname"] == ["box-7"]
    assert query["userAgent"] == [USER_AGENT]
    payload = fake_server.chunks[0][1]
    assert set(payload) == {"clientId", "chunk", "chunkId", "seq", "sentAt"}
    assert (payload["clientId"], payload["chunk"], payload["seq"]) == ("client-1", "text 0\n", 1)
    assert isinstance(payload["sentAt"], int)
    assert USER_AGENT.startswith(f"log-monitor-client/{client_version()} (")


def test_the_user_agent_carries_whatever_version_the_package_metadata_gives() -> None:
    # A fresh interpreter whose metadata says 9.8.7: the userAgent must follow it.
    script = (
        "import main_process.version as version\n"
        "version.client_version = lambda: '9.8.7'\n"
        "from main_process.connection.server_connection import USER_AGENT\n"
        "print(USER_AGENT)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("log-monitor-client/9.8.7 (")


async def test_unknown_events_and_wrong_shapes_are_counted_never_fatal(
    fake_server: FakeServer,
) -> None:
    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        fake_server.connections.append({"sid": sid, "auth": auth})
        emit = fake_server.sio.emit
        await emit("processed_event", "not an object", to=sid, namespace="/client")
        await emit("processed_event", {"type": "chunk_stored"}, to=sid, namespace="/client")
        await emit("guestToken", {"token": 42}, to=sid, namespace="/client")
        await emit("something_new", {"x": 1}, to=sid, namespace="/client")
        await emit("authenticated", [1, 2], to=sid, namespace="/client")

    fake_server.sio.on("connect", on_connect, namespace="/client")
    forwarded: list[dict[str, Any]] = []
    async with ServerConnection(
        fake_server.url,
        client_id="client-2",
        chunk_store=MemorySpool(),
        token_store=MemoryTokenStore(),
        on_server_event=forwarded.append,
        config=FAST,
    ) as connection:
        await connection.connect_to_server()
        status = await connection.wait_for_status(connected(), 10)
        assert status.identity == "guest"
        await wait_until_async(
            lambda: connection.counters.malformed_payloads == 3, 5, "three counted"
        )
        assert connection.counters.unknown_events == 1
        assert forwarded == [{"type": "chunk_stored"}]
        assert fake_server.connections[0]["auth"] in ({}, None)


async def test_every_status_change_is_broadcast_through_send_connection_status(
    fake_server: FakeServer,
) -> None:
    serve_acks_or_silence(fake_server)

    class RecordingConnection(ServerConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.sent: list[ConnectionStatus | None] = []

        async def send_connection_status(self, status: ConnectionStatus | None = None) -> None:
            self.sent.append(status)
            await super().send_connection_status(status)

    received: list[ConnectionStatus] = []
    connection = RecordingConnection(
        fake_server.url,
        client_id="client-5",
        chunk_store=MemorySpool(),
        token_store=MemoryTokenStore(Tokens(guest_token="g-5")),
        on_status=received.append,
        config=FAST,
    )
    async with connection:
        await connection.connect_to_server()
        await connection.wait_for_status(connected("guest"), 10)
        assert [s.state for s in received] == ["connecting", "connected"]
        assert connection.sent == received
        # Called with nothing, it broadcasts the present (e.g. for a viewer that just came).
        await connection.send_connection_status()
        assert received[-1] == connection.status()
        assert connection.sent[-1] is None


async def test_disconnect_stops_reconnecting_until_connect(fake_server: FakeServer) -> None:
    serve_acks_or_silence(fake_server)
    spool = MemorySpool()
    async with ServerConnection(
        fake_server.url,
        client_id="client-3",
        chunk_store=spool,
        token_store=MemoryTokenStore(Tokens(guest_token="g-3")),
        config=FAST,
    ) as connection:
        await connection.connect_to_server()
        await connection.wait_for_status(connected(), 10)
        await connection.disconnect_from_server()
        assert connection.status().state == "disconnected"
        # Sends while the user is disconnected are spooled, not delivered.
        await connection.ensure_connected_and_send_log_chunk("kept for later\n")
        await asyncio.sleep(0)  # let any (wrong) reconnect start
        assert connection.status().state == "disconnected"
        assert len(fake_server.connections) == 1
        assert list(spool.chunks) == [1]
        await connection.connect_to_server()
        await connection.wait_for_status(connected(), 10)
        await wait_until_async(lambda: not spool.chunks, 10, "the spooled chunk delivered")
        assert len(fake_server.connections) == 2


async def test_stop_during_connect_to_an_unreachable_server(tmp_path: Path) -> None:
    # A port nobody listens on: every attempt fails and backs off.
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with ServerConnection(
        f"http://127.0.0.1:{port}",
        client_id="client-4",
        chunk_store=MemorySpool(),
        token_store=MemoryTokenStore(),
        config=FAST,
    ) as connection:
        await connection.connect_to_server()
        status = await connection.wait_for_status(lambda s: s.attempt >= 2, 10)
        assert status.state in ("disconnected", "connecting")
        assert "could not connect" in (status.last_error or "")
        await connection.disconnect_from_server()
        stopped = connection.status()
        assert (stopped.state, stopped.next_retry_ms) == ("disconnected", None)
        opened = connection.counters.sockets_opened
        await asyncio.sleep(0.6)  # longer than the longest backoff of FAST (0.5 s)
        assert connection.counters.sockets_opened == opened


def test_server_urls_of_every_accepted_scheme() -> None:
    from main_process.connection.server_connection import ServerAddress

    assert ServerAddress.parse("ws://127.0.0.1:5324") == ServerAddress(
        "http://127.0.0.1:5324", "http://127.0.0.1:5324"
    )
    assert ServerAddress.parse("wss://logs.example.com/production/") == ServerAddress(
        "https://logs.example.com", "https://logs.example.com/production"
    )
    assert ServerAddress.parse("https://h:1").http_base == "https://h:1"
    for bad in ("ftp://h", "localhost:5324", "ws://"):
        with pytest.raises(ValueError, match="must look like"):
            ServerAddress.parse(bad)
