"""The client side of the HTTP auth API (PROTOCOL.md section 5) for sign-in and sign-out.

Used by the running main process (the ipc ``Login``/``Logout`` commands) and by
``log-monitor login``/``logout`` when no main process runs. Refresh is not here: the
connection owns it. Every failure is a :class:`SignInFailed` with a code and one sentence
for a person; the password is never put in a message or a log line.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import aiohttp

from main_process.identity import Tokens


class SignInFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SignedIn:
    tokens: Tokens


async def sign_in(
    http_base: str,
    identifier: str,
    password: str,
    *,
    client_id: str,
    keep_guest_token: str | None,
    timeout: float = 15.0,
) -> SignedIn:
    body = {
        "identifier": identifier,
        "password": password,
        "hostname": socket.gethostname(),
        "clientId": client_id,
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(f"{http_base}/api/auth/login", json=body) as response,
        ):
            status = response.status
            retry_after = response.headers.get("retry-after")
            data: Any = await response.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise SignInFailed(
            "unreachable", f"the server at {http_base} could not be reached ({type(exc).__name__})."
        ) from None
    if status in (400, 401, 403):
        raise SignInFailed("invalid_credentials", "wrong user name or password.")
    if status == 429:
        wait = f" in {retry_after} s" if retry_after and retry_after.isdigit() else " later"
        raise SignInFailed("too_many_attempts", f"too many failed attempts; try again{wait}.")
    if status != 200:
        raise SignInFailed("server_error", f"the server answered HTTP {status}.")
    try:
        user = data["user"]
        tokens = Tokens(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            guest_token=keep_guest_token,
            user_id=str(user["id"]),
            username=str(user["username"]),
        )
    except (KeyError, TypeError):
        raise SignInFailed(
            "server_error", "the server's answer to the login had no tokens."
        ) from None
    return SignedIn(tokens)


async def sign_out(http_base: str, refresh_token: str | None, timeout: float = 10.0) -> None:
    """Tell the server to revoke the session; the answer is ignored (PROTOCOL.md §5)."""
    if not refresh_token:
        return
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(f"{http_base}/api/auth/logout", json={"refreshToken": refresh_token}),
        ):
            pass
    except (aiohttp.ClientError, TimeoutError):
        pass  # signing out locally does not depend on the server hearing it


def signed_out(tokens: Tokens) -> Tokens:
    """The tokens after a sign-out: the guest identity stays, the user's tokens go."""
    return Tokens(guest_token=tokens.guest_token)
