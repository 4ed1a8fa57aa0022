"""What the connection tests against the reference server share: short timers (``FAST``), the
condition of a connected status (``connected``), signing a user in (``login``), numbered log
lines and their chunks (``numbered_lines``, ``group``), and the server's counters
(``server_stats``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from harness.server_process import ServerProcess
from main_process.connection.backoff import BackoffPolicy
from main_process.connection.state import (
    ConnectionConfig,
    ConnectionStatus,
)
from main_process.credentials import Tokens

# Short timers so a test sees many reconnects in seconds; the logic is the same.
FAST = ConnectionConfig(
    handshake_timeout=5.0,
    ack_timeout=10.0,
    guest_token_reconnect_delay=0.05,
    retry_auth_reconnect_delay=0.2,
    backoff=BackoffPolicy(base=0.05, factor=2.0, cap=0.5, reset_after=2.0),
)


def connected(identity: str | None = None) -> Callable[[ConnectionStatus], bool]:
    """The condition that a status is connected (as ``identity``, if given)."""

    def check(status: ConnectionStatus) -> bool:
        return status.state == "connected" and (identity is None or status.identity == identity)

    return check


async def login(
    server: ServerProcess, name: str, client_id: str, guest_token: str | None = None
) -> Tokens:
    """Add the user and sign in from ``client_id`` (showing its guest token, if any)."""
    result = await asyncio.to_thread(
        server.run_cli, "add-user", name, "--password-stdin", input_text="s3cret-pass\n"
    )
    assert result.returncode == 0, result.stderr
    request = {
        "identifier": name,
        "password": "s3cret-pass",
        "hostname": "test-host",
        "clientId": client_id,
    }
    if guest_token is not None:
        request["guestToken"] = guest_token
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.url + "/api/auth/login", json=request) as response,
    ):
        assert response.status == 200
        body = await response.json()
    return Tokens(
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
        guest_token=guest_token,
        user_id=body["user"]["id"],
        username=body["user"]["username"],
    )


def numbered_lines(count: int, tag: str = "line") -> list[str]:
    """``count`` log lines, each with its number (and ``tag``) in it."""
    return [f'{tag} {i:05d} level=info msg="player joined" zone=7\n' for i in range(count)]


def group(lines: list[str], per_chunk: int) -> list[str]:
    """``lines`` joined ``per_chunk`` at a time, as the chunks they are shipped in."""
    return ["".join(lines[i : i + per_chunk]) for i in range(0, len(lines), per_chunk)]


async def server_stats(server: ServerProcess) -> dict[str, int]:
    """The reference server's counters (``/api/stats``)."""
    async with aiohttp.ClientSession() as http, http.get(server.url + "/api/stats") as response:
        assert response.status == 200
        stats: dict[str, int] = await response.json()
        return stats
