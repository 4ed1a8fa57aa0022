"""The reference server, end to end: a real server process on loopback, real Socket.IO.

Every test that is about the protocol runs twice, on SQLite (the data dir) and on
PostgreSQL (``--database``, a fresh database per test: ``tests/support/cluster_parts.py``); those
about the data dir (its secret file, the command line's messages) on SQLite only."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from server.auth import LoginThrottle
from tests.support.cluster_parts import backend, postgres_engine, server_database, signing_secret

__all__ = ["backend", "postgres_engine", "server_database"]  # fixtures of cluster_parts
from harness.protocol_client import ProtocolClient, authenticated_guest
from harness.server_process import ServerProcess, server_cli

PASSWORD = "correct horse battery staple"


@pytest.fixture
def server(tmp_path: Path, server_database: str | None) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server", database=server_database).start()
    yield process
    process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(url, data=data, headers={"content-type": "application/json"}) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


def add_user(server: ServerProcess, name: str = "alice", password: str = PASSWORD) -> None:
    result = server.run_cli("add-user", name, "--password-stdin", input_text=password + "\n")
    assert result.returncode == 0, result.stderr


async def login(http: aiohttp.ClientSession, server: ServerProcess, name: str = "alice") -> Any:
    status, body = await post(
        http,
        f"{server.url}/api/auth/login",
        {"identifier": name, "password": PASSWORD, "hostname": "h", "clientId": "c"},
    )
    assert status == 200, body
    return body


async def test_guest_flow_end_to_end(server: ServerProcess) -> None:
    bare = await ProtocolClient(server.url).connect()
    token = (await bare.expect("guestToken"))["token"]
    await bare.close()

    client = await ProtocolClient(server.url, bare.client_id, token).connect()
    identity = await client.expect("authenticated")
    assert identity["identity"] == "guest"
    assert identity["guestId"]
    ack = await client.submit(client.chunk("first line\n", 1))
    assert ack == {"ok": True, "chunkId": f"{client.client_id}:1"}
    await client.close()
    assert server.dump(client.client_id) == b"first line\n"


async def test_login_refresh_rotation_and_reuse_of_old_refresh_token(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    add_user(server)
    first = await login(http, server)
    assert first["user"]["username"] == "alice"

    client = await ProtocolClient(server.url, token=first["access_token"]).connect()
    identity = await client.expect("authenticated")
    assert identity == {"identity": "user", "userId": first["user"]["id"], "username": "alice"}
    await client.close()

    status, second = await post(
        http, f"{server.url}/api/auth/refresh", {"refreshToken": first["refresh_token"]}
    )
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]

    status, reused = await post(
        http, f"{server.url}/api/auth/refresh", {"refreshToken": first["refresh_token"]}
    )
    assert (status, reused) == (401, {"error": "refresh_token_reused"})
    # Reuse means two parties hold the family: its newest token and access tokens die too.
    status, _ = await post(
        http, f"{server.url}/api/auth/refresh", {"refreshToken": second["refresh_token"]}
    )
    assert status == 401
    revoked = await ProtocolClient(server.url, token=second["access_token"]).connect()
    assert await revoked.expect("retry_auth") == {"reason": "token_revoked"}
    await revoked.close()


async def test_logout_revokes_the_session(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    add_user(server)
    tokens = await login(http, server)
    status, _ = await post(
        http, f"{server.url}/api/auth/logout", {"refreshToken": tokens["refresh_token"]}
    )
    assert status == 204
    status, _ = await post(
        http, f"{server.url}/api/auth/refresh", {"refreshToken": tokens["refresh_token"]}
    )
    assert status == 401


async def test_failed_logins_are_slowed_down(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    add_user(server)
    url = f"{server.url}/api/auth/login"
    for _ in range(5):
        status, body = await post(http, url, {"identifier": "alice", "password": "wrong"})
        assert (status, body) == (401, {"error": "invalid_credentials"})
    async with http.post(url, json={"identifier": "ALICE", "password": PASSWORD}) as response:
        assert response.status == 429
        assert int(response.headers["retry-after"]) > 0
    # Another identifier is not held back by alice's failures.
    status, _ = await post(http, url, {"identifier": "bob", "password": "wrong"})
    assert status == 401


def test_login_throttle_window_with_a_fake_clock() -> None:
    now = [1000.0]
    throttle = LoginThrottle(limit=2, window=60, clock=lambda: now[0])
    assert throttle.admit("a") is None
    assert throttle.retry_after("a") is None
    assert throttle.admit("A") is None
    assert throttle.retry_after("a") == 60
    # A refused attempt is not counted: the wait does not grow by asking.
    assert throttle.admit("a") == 60
    now[0] += 30
    assert throttle.admit("a") == 30
    now[0] += 30.5
    assert throttle.retry_after("a") is None
    assert throttle.admit("a") is None
    throttle.record_success("a")
    assert throttle.retry_after("a") is None


async def test_access_token_expiring_while_connected_gets_retry_auth(
    tmp_path: Path, http: aiohttp.ClientSession, server_database: str | None
) -> None:
    server = ServerProcess(
        tmp_path / "server", "--access-ttl", "1.5", database=server_database
    ).start()
    try:
        add_user(server)
        tokens = await login(http, server)
        client = await ProtocolClient(server.url, token=tokens["access_token"]).connect()
        await client.expect("authenticated")
        assert (await client.submit(client.chunk("before\n", 1)))["ok"] is True
        started = time.monotonic()
        assert await client.expect("retry_auth", timeout=10) == {"reason": "token_expired"}
        assert time.monotonic() - started < 5
        assert await client.submit(client.chunk("after\n", 2)) == {"error": "unauthenticated"}
        await client.close()
        # The same token at a new handshake is expired too.
        late = await ProtocolClient(server.url, token=tokens["access_token"]).connect()
        assert await late.expect("retry_auth") == {"reason": "token_expired"}
        await late.close()
    finally:
        server.stop()


async def test_badly_signed_and_unknown_tokens_at_handshake(server: ServerProcess) -> None:
    forged = jwt.encode(
        {"typ": "access", "sub": "x", "name": "x", "sid": "s", "exp": time.time() + 60},
        b"not the server's secret" * 2,
        algorithm="HS256",
    )
    client = await ProtocolClient(server.url, token=forged).connect()
    assert await client.expect("retry_auth") == {"reason": "invalid_signature"}
    await client.close()

    garbage = await ProtocolClient(server.url, token="not a jwt").connect()
    assert await garbage.expect("retry_auth") == {"reason": "invalid_token"}
    await garbage.close()

    # A guest token correctly signed but naming a guest this server never registered is
    # replaced, not refused: the client just gets a new guest identity.
    secret = await signing_secret(server.data_dir, server.database)
    unknown = jwt.encode({"typ": "guest", "sub": str(uuid.uuid4())}, secret, algorithm="HS256")
    stranger = await ProtocolClient(server.url, token=unknown).connect()
    assert "token" in await stranger.expect("guestToken")
    await stranger.close()


async def test_thousand_chunks_back_to_back_arrive_in_order(server: ServerProcess) -> None:
    client = await authenticated_guest(server.url)
    lines = [f"line {i:04d} {'x' * (i % 50)}\n" for i in range(1000)]
    acks = [
        await client.send("submit_log_chunk", client.chunk(line, i + 1))
        for i, line in enumerate(lines)
    ]
    results = await asyncio.wait_for(asyncio.gather(*acks), 60)
    assert all(ack["ok"] is True and "duplicate" not in ack for ack in results)
    await client.close()
    assert server.dump(client.client_id) == "".join(lines).encode()
    records = [json.loads(line) for line in server.run_cli("dump", "--json").stdout.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 1001))


async def test_resent_chunks_are_stored_once(server: ServerProcess) -> None:
    client = await authenticated_guest(server.url)
    first = await client.submit(client.chunk("once\n", 7))
    again = await client.submit(client.chunk("once\n", 7))
    assert first == {"ok": True, "chunkId": f"{client.client_id}:7"}
    assert again == {"ok": True, "chunkId": f"{client.client_id}:7", "duplicate": True}
    await client.close()
    assert server.dump(client.client_id) == b"once\n"


async def test_bad_payloads_are_answered_while_another_client_keeps_working(
    tmp_path: Path, server_database: str | None
) -> None:
    server = ServerProcess(
        tmp_path / "server", "--max-chunk-bytes", "1000", database=server_database
    ).start()
    try:
        good = await authenticated_guest(server.url)
        bad = await authenticated_guest(server.url)
        good_acks = [
            await good.send("submit_log_chunk", good.chunk(f"good {i}\n", i)) for i in range(1, 51)
        ]

        mismatch = await bad.submit({"clientId": "someone-else", "chunk": "x\n"})
        assert mismatch["error"] == "invalid"
        assert "clientId" in mismatch["message"]
        oversize = await bad.submit(bad.chunk("é" * 600, 1))
        assert oversize["error"] == "too_large"
        for payload in (
            {"clientId": bad.client_id, "chunk": 42},
            {"clientId": bad.client_id},
            "just a string",
            None,
            [1, 2, 3],
            {"clientId": bad.client_id, "chunk": "x", "seq": "one"},
            {"clientId": bad.client_id, "chunk": "x", "source": {"path": 3}},
            {"clientId": bad.client_id, "chunk": "\ud800 lone surrogate"},
        ):
            ack = await bad.submit(payload)
            assert ack["error"] == "invalid", (payload, ack)
            assert ack["message"]
        two_args = await asyncio.wait_for(
            await bad.send("submit_log_chunk", bad.chunk("a", 2), "extra"), 10
        )
        assert two_args["error"] == "invalid"
        unknown = await asyncio.wait_for(await bad.send("no_such_event", {"x": 1}), 10)
        assert unknown == {"error": "unknown_event"}

        assert all(ack["ok"] for ack in await asyncio.wait_for(asyncio.gather(*good_acks), 30))
        # The bad client is still served: nothing it sent broke its connection.
        assert (await bad.submit(bad.chunk("fine\n", 3)))["ok"] is True
        await good.close()
        await bad.close()

        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/stats") as response:
            stats = await response.json()
        assert stats["rejected_invalid"] == 10
        assert stats["rejected_too_large"] == 1
        assert stats["unknown_events"] == 1
        assert stats["chunks_stored"] == 51
        assert "Traceback" not in server.log_text()
        assert server.dump(good.client_id) == "".join(f"good {i}\n" for i in range(1, 51)).encode()
        assert server.dump(bad.client_id) == b"fine\n"
    finally:
        server.stop()


async def test_unauthenticated_connection_cannot_store(server: ServerProcess) -> None:
    bare = await ProtocolClient(server.url).connect()
    await bare.expect("guestToken")
    assert await bare.submit(bare.chunk("x\n", 1)) == {"error": "unauthenticated"}
    await bare.close()
    assert server.dump() == b""


async def test_data_and_guests_survive_a_restart(server: ServerProcess) -> None:
    bare = await ProtocolClient(server.url).connect()
    token = (await bare.expect("guestToken"))["token"]
    await bare.close()
    client = await ProtocolClient(server.url, bare.client_id, token).connect()
    await client.expect("authenticated")
    assert (await client.submit(client.chunk("kept\n", 1)))["ok"]
    await client.close()

    server.stop(kill=True)
    server.start()
    again = await ProtocolClient(server.url, bare.client_id, token).connect()
    assert (await again.expect("authenticated"))["identity"] == "guest"
    assert (await again.submit(again.chunk("kept\n", 1))).get("duplicate") is True
    assert (await again.submit(again.chunk("more\n", 2)))["ok"]
    await again.close()
    assert server.dump(bare.client_id) == b"kept\nmore\n"


async def test_dump_is_byte_exact(server: ServerProcess) -> None:
    client = await authenticated_guest(server.url)
    texts = [
        "héllo wörld ✓\r\n",
        "日本語のログ 🎉\n",
        "tab\tand NUL \x00 end\n",
        "no newline at end",
    ]
    for seq, text in enumerate(texts, start=1):
        assert (
            await client.submit(
                client.chunk(text, seq, source={"path": "/var/log/a.log", "offset": seq})
            )
        )["ok"]
    await client.close()
    assert server.dump(client.client_id) == "".join(texts).encode("utf-8")
    records = [json.loads(line) for line in server.run_cli("dump", "--json").stdout.splitlines()]
    assert [r["chunk"] for r in records] == texts
    assert records[0]["source"] == {"path": "/var/log/a.log", "offset": 1}
    assert records[0]["identity"] == "guest"


async def test_ping_is_answered_with_pong(server: ServerProcess) -> None:
    client = await authenticated_guest(server.url)
    await client.sio.emit(
        "ping", {"timestamp": 12345, "clientId": client.client_id}, namespace="/client"
    )
    assert await client.expect("pong") == {"timestamp": 12345}
    await client.close()


async def test_http_bad_input_gets_clear_answers(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, f"{server.url}/api/auth/login", b"{not json")
    assert status == 400
    assert body["error"] == "invalid"
    assert "malformed" in body["message"]
    status, body = await post(
        http, f"{server.url}/api/auth/login", {"identifier": 1, "password": "x"}
    )
    assert status == 400
    assert "identifier" in body["message"]
    status, body = await post(http, f"{server.url}/api/auth/refresh", b"x" * (65 * 1024))
    assert (status, body) == (413, {"error": "too_large"})
    status, body = await post(http, f"{server.url}/api/nothing", {})
    assert status == 404
    async with http.get(f"{server.url}/api/auth/login") as response:
        assert response.status == 405
    status, body = await post(http, f"{server.url}/api/auth/refresh", {"refreshToken": "garbage"})
    assert (status, body) == (401, {"error": "invalid_token"})
    status, body = await post(
        http, f"{server.url}/api/auth/register-guest", {"clientId": "c", "hostname": "h"}
    )
    assert status == 200
    assert body["guestToken"]
    async with http.get(f"{server.url}/api/health") as response:
        assert await response.json() == {"ok": True}
    assert "Traceback" not in server.log_text()


async def test_secrets_never_reach_the_log(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    add_user(server)
    await post(
        http, f"{server.url}/api/auth/login", {"identifier": "alice", "password": "wrong-guess-123"}
    )
    tokens = await login(http, server)
    status, refreshed = await post(
        http, f"{server.url}/api/auth/refresh", {"refreshToken": tokens["refresh_token"]}
    )
    assert status == 200
    client = await ProtocolClient(server.url, token=refreshed["access_token"]).connect()
    await client.expect("authenticated")
    await client.close()
    guest = await authenticated_guest(server.url)
    await guest.close()
    server.stop()
    log = server.log_text()
    assert "login" in log  # the log did record the events...
    for secret in (
        PASSWORD,
        "wrong-guess-123",
        *tokens.values(),
        refreshed["access_token"],
        refreshed["refresh_token"],
    ):
        if isinstance(secret, str):
            assert secret not in log
    assert "eyJ" not in log  # ...and no JWT of any kind


def test_secret_file_is_private_and_stable(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server").start()
    try:
        secret = server.data_dir / "secret.key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
        before = secret.read_bytes()
        server.stop()
        server.start()
    finally:
        server.stop()
    assert secret.read_bytes() == before


def test_cli_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    data = tmp_path / "d"
    ok = server_cli(data, "add-user", "bob", "--password-stdin", input_text="pw\n")
    assert ok.returncode == 0
    again = server_cli(data, "add-user", "bob", "--password-stdin", input_text="pw\n")
    assert again.returncode == 1
    assert again.stderr.decode().strip() == "log-monitor-server: a user named 'bob' exists already."
    empty = server_cli(data, "add-user", "carol", "--password-stdin", input_text="\n")
    assert empty.returncode == 1
    assert b"password is empty" in empty.stderr
    unknown = server_cli(data, "revoke", "nobody")
    assert unknown.returncode == 1
    assert b"Traceback" not in unknown.stderr
    bad_flag = server_cli(data, "serve", "--port", "seventy")
    assert bad_flag.returncode == 2
    assert b"--port" in bad_flag.stderr
    assert b"Traceback" not in bad_flag.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    broken = server_cli(not_a_dir, "dump")
    assert broken.returncode == 1
    assert b"Traceback" not in broken.stderr
    assert os.path.isfile(not_a_dir)
