"""The reference server's credentials under a hostile peer: password guessing (concurrent,
and many names at once), deleted users, and pings made to hurt.

Most tests run the real server as a child process on loopback; the one that counts how
many scrypt checks run at once drives the real ASGI app in-process, with the real
``verify_password`` wrapped in a counter. Each test says what happened before the fix.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from harness.protocol_client import ProtocolClient, authenticated_guest
from harness.server_process import ServerProcess, server_cli
from server import auth as server_auth
from server.app import ServerConfig, build
from server.auth import DEFAULT_PASSWORD_CHECKS, DEFAULT_PASSWORD_QUEUE
from server.passwords import hash_password, verify_password
from tests.support.asgi_request import asgi_request

PASSWORD = "correct horse battery staple"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "server"
    added = server_cli(data, "add-user", "alice", "--password-stdin", input_text=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    process = ServerProcess(data).start()
    yield process
    process.stop()


async def post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, Any, dict[str, str]]:
    async with http.post(url, json=body) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None, dict(response.headers)


async def stats(server: ServerProcess) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/api/stats") as response:
        result: dict[str, int] = await response.json()
        return result


# ----------------------------------------------------------------------------- password guessing


async def test_sixty_guesses_at_once_get_401_five_times_then_429(server: ServerProcess) -> None:
    """Before: the limit was checked before the password and the failure recorded after,
    so 60 simultaneous guesses were all checked (59 x 401, and 300 at once got no 429)."""
    url = f"{server.url}/api/auth/login"
    guesses = [{"identifier": "alice", "password": f"guess {i}"} for i in range(60)]
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(post(http, url, body) for body in guesses))
        statuses = Counter(status for status, _, _ in answers)
        assert statuses == {401: 5, 429: 55}
        assert all(
            body == {"error": "too_many_attempts"} and int(headers["Retry-After"]) > 0
            for status, body, headers in answers
            if status == 429
        )
        # The right password, after the limit, is held back like any other attempt.
        status, body, _ = await post(http, url, {"identifier": "alice", "password": PASSWORD})
        assert (status, body) == (429, {"error": "too_many_attempts"})


async def test_password_checks_run_a_few_at_a_time_whatever_the_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 logins for 100 names at once: scrypt (~80 ms of CPU each) runs at most
    ``DEFAULT_PASSWORD_CHECKS`` at a time, and past ``DEFAULT_PASSWORD_QUEUE`` waiting the
    answer is 503 at once. Before: every login took a thread of the default executor."""
    running = 0
    most = 0
    lock = threading.Lock()

    def counted_verify(password: str, stored: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return verify_password(password, stored)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(server_auth, "verify_password", counted_verify)
    app = build(ServerConfig(data_dir=tmp_path / "server"))
    app.store.database.add_user("alice", hash_password(PASSWORD))
    try:
        bodies = [
            json.dumps({"identifier": f"user-{i}", "password": "guess"}).encode()
            for i in range(100)
        ]
        started = time.monotonic()
        answers = await asyncio.gather(
            *(asgi_request(app, "POST", "/api/auth/login", [body]) for body in bodies)
        )
        elapsed = time.monotonic() - started
        statuses = Counter(answer.status for answer in answers)
        assert set(statuses) == {401, 503}, statuses
        assert statuses[401] >= DEFAULT_PASSWORD_QUEUE
        assert all(
            json.loads(a.body) == {"error": "busy"} and a.headers[b"retry-after"] == b"1"
            for a in answers
            if a.status == 503
        )
        assert 1 <= most <= DEFAULT_PASSWORD_CHECKS, most
        # A login is still served once the storm is over.
        body = json.dumps({"identifier": "alice", "password": PASSWORD}).encode()
        ok = await asgi_request(app, "POST", "/api/auth/login", [body])
        assert ok.status == 200
    finally:
        await asyncio.to_thread(app.store.close)
    print(
        f"100 logins at once: {dict(statuses)}, at most {most} scrypt checks at a time,"
        f" {elapsed:.2f} s"
    )


# ----------------------------------------------------------------------------- deleted users


async def test_a_deleted_users_tokens_stop_working_at_once_on_the_running_server(
    server: ServerProcess,
) -> None:
    """Before: there was no way to delete a user, and a removed user's access tokens kept
    working until they expired."""
    client_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        status, tokens, _ = await post(
            http,
            f"{server.url}/api/auth/login",
            {"identifier": "alice", "password": PASSWORD, "clientId": client_id},
        )
    assert status == 200
    client = await ProtocolClient(server.url, client_id, tokens["access_token"]).connect()
    assert (await client.expect("authenticated"))["username"] == "alice"
    assert (await client.submit(client.chunk("before\n", 1)))["ok"] is True

    deleted = await asyncio.to_thread(server.run_cli, "delete-user", "alice")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.decode().strip() == "deleted user alice; ended 1 session(s)"

    # The open connection: its next chunk is refused, and it is told why.
    assert await client.submit(client.chunk("after\n", 2)) == {"error": "unauthenticated"}
    assert await client.expect("retry_auth") == {"reason": "token_revoked"}
    await client.close()
    # A new handshake, a refresh and a login are all refused.
    again = await ProtocolClient(server.url, client_id, tokens["access_token"]).connect()
    assert await again.expect("retry_auth") == {"reason": "token_revoked"}
    await again.close()
    async with aiohttp.ClientSession() as http:
        refreshed = await post(
            http, f"{server.url}/api/auth/refresh", {"refreshToken": tokens["refresh_token"]}
        )
        assert refreshed[:2] == (401, {"error": "unknown_user"})
        relogin = await post(
            http, f"{server.url}/api/auth/login", {"identifier": "alice", "password": PASSWORD}
        )
        assert relogin[:2] == (401, {"error": "invalid_credentials"})
    assert server.dump(client_id) == b"before\n"

    missing = await asyncio.to_thread(server.run_cli, "delete-user", "alice")
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == "log-monitor-server: no user named 'alice'."


def test_add_user_refuses_names_no_one_could_show(tmp_path: Path) -> None:
    data = tmp_path / "server"
    for name in ("x" * 65, "eve\nINFO forged log line", "\x1b[31mred", "tab\there"):
        result = server_cli(data, "add-user", name, "--password-stdin", input_text="pw\n")
        assert result.returncode == 1, name
        assert result.stderr.decode().strip() == (
            "log-monitor-server: a user name must be 1 to 64 printable characters."
        )
    ok = server_cli(data, "add-user", "x" * 64, "--password-stdin", input_text="pw\n")
    assert ok.returncode == 0, ok.stderr


# ----------------------------------------------------------------------------- pings


async def test_a_packet_that_cannot_be_decoded_costs_one_line_and_a_count(
    server: ServerProcess,
) -> None:
    """Before: a ping with a 301-digit timestamp or 100,000 nested arrays made
    python-socketio log a 30-line traceback, twice."""
    client = await authenticated_guest(server.url)
    before = await stats(server)
    await client.sio.eio.send('2/client,["ping",{"timestamp":' + "9" * 301 + "}]")
    await client.sio.eio.send('2/client,["ping",' + "[" * 100_000 + "]" * 100_000 + "]")
    # Packets of one connection are handled in order: once this is acked, both were seen.
    assert (await client.submit(client.chunk("still served\n", 1)))["ok"] is True
    after = await stats(server)
    await client.close()
    assert after["undecodable_packets"] - before["undecodable_packets"] == 2
    log = server.log_text()
    assert "Traceback" not in log
    dropped = [line for line in log.splitlines() if "undecodable packet" in line]
    assert len(dropped) == 2, dropped
    assert all(len(line) < 300 for line in dropped)


async def test_pong_carries_only_finite_timestamps(server: ServerProcess) -> None:
    """Before: ``pong`` echoed NaN and Infinity, which are not JSON."""
    client = await authenticated_guest(server.url)
    before = await stats(server)
    hostile: list[Any] = [
        math.nan,
        math.inf,
        -math.inf,
        1e300,
        10**30,
        "12345",
        True,
        [12345],
        None,
    ]
    now_ms = time.time() * 1000
    for value in hostile:
        await client.sio.emit("ping", {"timestamp": value}, namespace="/client")
        timestamp = (await client.expect("pong"))["timestamp"]
        assert isinstance(timestamp, int), (value, timestamp)
        assert abs(timestamp - now_ms) < 60_000, (value, timestamp)
    for value in (12345, 1.5e12, 0):
        await client.sio.emit("ping", {"timestamp": value}, namespace="/client")
        assert await client.expect("pong") == {"timestamp": value}
    await client.close()
    after = await stats(server)
    # None is a ping without a timestamp, answered with the clock and not counted.
    assert after["invalid_pings"] - before["invalid_pings"] == len(hostile) - 1
    assert "Traceback" not in server.log_text()
