"""The client side of the HTTP auth API (PROTOCOL.md section 5) for sign-in and sign-out.

Used by the running main process (the ipc ``Login``/``Logout`` commands) and by
``log-monitor login``/``logout`` when no main process runs. Refresh is not here: the
connection owns it. Every failure is a :class:`SignInFailed` with a code and one sentence
for a person; the password is never put in a message or a log line.

Installation binding (PROTOCOL.md section 3): a login names the installation's
``clientId`` and shows the credentials the installation holds for it (extension fields
``guestToken`` and ``refreshToken``), so a server that binds ids lets the user use this
installation's id and nobody else's; a base server ignores both fields. A logout names the
``clientId`` too, and a server that binds ids may answer with a guest token for it, which
the installation then uses, so signing out keeps its id.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import aiohttp

from main_process.connection_state import MAX_NAME_CHARS, MAX_TOKEN_CHARS, bounded_text
from main_process.identity import Tokens


class SignInFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SignedIn:
    tokens: Tokens


def _token(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_CHARS:
        raise TypeError("not a token")
    return value


def _retry_after(header: str | None) -> str:
    return f" in {header} s" if header and header.isdigit() and len(header) < 6 else " later"


async def sign_in(
    http_base: str,
    identifier: str,
    password: str,
    *,
    client_id: str,
    keep_guest_token: str | None,
    proof_refresh_token: str | None = None,
    timeout: float = 15.0,
) -> SignedIn:
    """Sign in as ``identifier`` from the installation ``client_id``.

    ``keep_guest_token`` is the installation's guest token: kept in the returned tokens and
    shown to the server as proof that ``client_id`` is this installation's;
    ``proof_refresh_token`` (the refresh token of a user signed in here now) is shown too.
    """
    body: dict[str, Any] = {
        "identifier": identifier,
        "password": password,
        "hostname": socket.gethostname(),
        "clientId": client_id,
    }
    if keep_guest_token:
        body["guestToken"] = keep_guest_token
    if proof_refresh_token:
        body["refreshToken"] = proof_refresh_token
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
    if status == 409:
        raise SignInFailed(
            "client_mismatch",
            "the server holds this installation's id for other credentials; "
            "run log-monitor once so it takes a new id, then sign in again.",
        )
    if status == 429:
        wait = _retry_after(retry_after)
        raise SignInFailed("too_many_attempts", f"too many failed attempts; try again{wait}.")
    if status == 503:
        wait = _retry_after(retry_after)
        raise SignInFailed("busy", f"the server is busy; try again{wait}.")
    if status != 200:
        raise SignInFailed("server_error", f"the server answered HTTP {status}.")
    try:
        user = data["user"]
        tokens = Tokens(
            access_token=_token(data["access_token"]),
            refresh_token=_token(data["refresh_token"]),
            guest_token=keep_guest_token,
            user_id=bounded_text(str(user["id"]), MAX_NAME_CHARS),
            username=bounded_text(str(user["username"]), MAX_NAME_CHARS),
        )
    except (KeyError, TypeError):
        raise SignInFailed(
            "server_error", "the server's answer to the login had no tokens."
        ) from None
    return SignedIn(tokens)


async def sign_out(
    http_base: str,
    refresh_token: str | None,
    *,
    client_id: str | None = None,
    timeout: float = 10.0,
) -> str | None:
    """Tell the server to revoke the session; returns the guest token it hands back for
    ``client_id`` (a server that binds ids), else None. Failures are ignored: signing out
    locally does not depend on the server hearing it (PROTOCOL.md section 5)."""
    if not refresh_token:
        return None
    body: dict[str, Any] = {"refreshToken": refresh_token}
    if client_id:
        body["clientId"] = client_id
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(f"{http_base}/api/auth/logout", json=body) as response,
        ):
            if response.status != 200:
                return None
            data: Any = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    try:
        return _token(data["guestToken"]) if isinstance(data, dict) else None
    except (KeyError, TypeError):
        return None


def signed_out(tokens: Tokens, guest_token: str | None = None) -> Tokens:
    """The tokens after a sign-out: the user's tokens go; the guest token the server handed
    back, else the one held before, stays."""
    return Tokens(guest_token=guest_token or tokens.guest_token)
