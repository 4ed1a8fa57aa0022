"""The client against a hostile server: what a server says about who we are, and every
string it sends, is bounded before it is logged, shown or stored.

The connection is the real ``ServerConnection`` against a tiny python-socketio server on
loopback whose events the test scripts; sign-in is the real ``sign_in`` against a tiny
aiohttp app. Before the fix, a 560 KB ``username`` was logged on every connect and
published in status, and ``identity: "user"`` was believed on a guest connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import socketio
from aiohttp import web

from main_process.connection.auth_client import sign_in
from main_process.connection.backoff import BackoffPolicy
from main_process.connection.server_connection import ServerConnection
from main_process.connection.state import (
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    ConnectionConfig,
    ConnectionStatus,
)
from main_process.credentials import Tokens
from tests.support.connection_fakes import MemorySpool, MemoryTokenStore

HUGE = "x" * 560_000
FAST = ConnectionConfig(
    handshake_timeout=5.0,
    backoff=BackoffPolicy(base=0.05, factor=2.0, cap=0.5, reset_after=2.0),
)
USER = Tokens(access_token="acc", refresh_token="ref", guest_token="guest", username="ada")

OnConnect = Callable[[socketio.AsyncServer, str], Awaitable[None]]


@dataclass
class HostileServer:
    url: str
    on_connect: OnConnect | None = None
    chunk_answer: Any = None


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    # The default Engine.IO limit (1 MB) lets a 560 KB string through, as a real server would.
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = HostileServer(f"ws://127.0.0.1:{runner.addresses[0][1]}")

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if server.on_connect is not None:
            await server.on_connect(sio, sid)

    async def chunk(sid: str, data: Any) -> Any:
        return server.chunk_answer

    sio.on("connect", connect, namespace="/client")
    sio.on("submit_log_chunk", chunk, namespace="/client")
    try:
        yield server
    finally:
        await runner.cleanup()


def emitting(*events: tuple[str, Any]) -> OnConnect:
    async def on_connect(sio: socketio.AsyncServer, sid: str) -> None:
        for name, payload in events:
            await sio.emit(name, payload, to=sid, namespace="/client")

    return on_connect


def longest_log_line(caplog: pytest.LogCaptureFixture) -> int:
    return max((len(record.getMessage()) for record in caplog.records), default=0)


async def test_a_560_kb_user_name_is_cut_before_it_is_logged_or_shown(
    hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hostile.on_connect = emitting(
        ("authenticated", {"identity": "user", "username": HUGE + "\nforged log line"})
    )
    statuses: list[ConnectionStatus] = []
    async with ServerConnection(
        hostile.url,
        client_id="client-1",
        chunk_store=MemorySpool(),
        token_store=MemoryTokenStore(USER),
        on_status=statuses.append,
        config=FAST,
    ) as connection:
        await connection.connect_to_server()
        status = await connection.wait_for_status(lambda s: s.state == "connected", 10)
    assert status.identity == "user"
    assert status.username is not None
    assert status.username.startswith("xxx")
    assert len(status.username) <= MAX_NAME_CHARS + 1
    assert "\n" not in status.username
    assert max(len(s.username or "") for s in statuses) <= MAX_NAME_CHARS + 1
    assert longest_log_line(caplog) < 2000


async def test_identity_user_is_believed_only_when_a_user_token_was_presented(
    hostile: HostileServer,
) -> None:
    hostile.on_connect = emitting(("authenticated", {"identity": "user", "username": "admin"}))
    async with ServerConnection(
        hostile.url,
        client_id="client-2",
        chunk_store=MemorySpool(),
        token_store=MemoryTokenStore(Tokens(guest_token="guest")),
        config=FAST,
    ) as connection:
        await connection.connect_to_server()
        status = await connection.wait_for_status(lambda s: s.state == "connected", 10)
    assert (status.identity, status.username) == ("guest", None)


async def test_reasons_messages_and_tokens_from_a_server_are_bounded(
    hostile: HostileServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hostile.on_connect = emitting(
        ("guestToken", {"token": "t" * 100_000}),
        ("authenticated", {"identity": "guest"}),
    )
    hostile.chunk_answer = {"error": "server_error", "message": HUGE}
    spool = MemorySpool()
    tokens = MemoryTokenStore(Tokens(guest_token="guest"))
    async with ServerConnection(
        hostile.url,
        client_id="client-3",
        chunk_store=spool,
        token_store=tokens,
        config=FAST,
    ) as connection:
        await connection.ensure_connected_and_send_log_chunk("a line\n")
        status = await connection.wait_for_status(
            lambda s: s.state == "connected" and s.last_error is not None, 10
        )
        # The 100,000-character guest token is a malformed payload: not saved, not used.
        assert connection.counters.malformed_payloads == 1
        assert tokens.saved == []
        assert connection.tokens.guest_token == "guest"
    assert status.last_error is not None
    assert status.last_error.startswith("server rejected chunk 1 (server_error): xxx")
    assert len(status.last_error) < MAX_MESSAGE_CHARS + 100
    assert spool.chunks  # a server_error is retried later, never dropped
    assert longest_log_line(caplog) < 2000

    hostile.on_connect = emitting(("retry_auth", {"reason": HUGE}))
    async with ServerConnection(
        hostile.url,
        client_id="client-4",
        chunk_store=MemorySpool(),
        token_store=MemoryTokenStore(),
        config=FAST,
    ) as connection:
        await connection.connect_to_server()
        refused = await connection.wait_for_status(lambda s: s.last_error is not None, 10)
    assert refused.last_error is not None
    assert len(refused.last_error) < MAX_MESSAGE_CHARS + 100
    assert longest_log_line(caplog) < 2000


async def test_a_sign_in_answer_with_a_560_kb_user_name_is_cut() -> None:
    async def login(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "access_token": "acc",
                "refresh_token": "ref",
                "user": {"id": "7" * 100_000, "username": HUGE},
            }
        )

    app = web.Application()
    app.router.add_post("/api/auth/login", login)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        signed = await sign_in(
            f"http://127.0.0.1:{runner.addresses[0][1]}",
            "ada",
            "pw",
            client_id="client-5",
            keep_guest_token=None,
        )
    finally:
        await runner.cleanup()
    assert signed.tokens.username is not None
    assert signed.tokens.user_id is not None
    assert len(signed.tokens.username) <= MAX_NAME_CHARS + 1
    assert len(signed.tokens.user_id) <= MAX_NAME_CHARS + 1
