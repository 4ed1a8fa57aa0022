"""The client side of the HTTP auth API (PROTOCOL.md section 5): sign-in, sign-out and
the token refresh.

Owns: the three requests and what their answers mean to the client. The bodies' shapes
and their parsing are ``protocol.http_auth``'s.

Used by the running main process (the ipc ``Login``/``Logout`` commands) and by
``log-monitor login``/``logout`` when no main process runs; ``refresh_tokens`` by the
connection, which decides when to refresh (``connection/state.py``) and hands the outcome
to its state machine. Every sign-in failure is a :class:`SignInFailed` with a code and one
sentence for a person; the password is never put in a message or a log line, and no
token ever is.

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

from main_process.connection.socket_attempt import describe
from main_process.connection.state import (
    RefreshFailed,
    RefreshRefused,
    RefreshSucceeded,
    RefreshTokens,
)
from main_process.credentials import Tokens
from protocol import (
    LOGIN_PATH,
    LOGOUT_PATH,
    REFRESH_PATH,
    LoginRequest,
    LogoutRequest,
    ProtocolError,
    RefreshRequest,
    parse_login_answer,
    parse_logout_answer,
    parse_refresh_answer,
    to_wire,
)


class SignInFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class SignedIn:
    tokens: Tokens


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
    body = LoginRequest(
        identifier,
        password,
        hostname=socket.gethostname(),
        clientId=client_id,
        guestToken=keep_guest_token or None,
        refreshToken=proof_refresh_token or None,
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(f"{http_base}{LOGIN_PATH}", json=to_wire(body)) as response,
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
        answer = parse_login_answer(data)
    except ProtocolError as exc:
        raise SignInFailed("server_error", str(exc)) from None
    return SignedIn(
        Tokens(
            access_token=answer.access_token,
            refresh_token=answer.refresh_token,
            guest_token=keep_guest_token,
            user_id=answer.user_id,
            username=answer.username,
        )
    )


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
    body = LogoutRequest(refresh_token, clientId=client_id or None)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(f"{http_base}{LOGOUT_PATH}", json=to_wire(body)) as response,
        ):
            if response.status != 200:
                return None
            data: Any = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    try:
        return parse_logout_answer(data)
    except ProtocolError:
        return None


def signed_out(tokens: Tokens, guest_token: str | None = None) -> Tokens:
    """The tokens after a sign-out: the user's tokens go; the guest token the server handed
    back, else the one held before, stays."""
    return Tokens(guest_token=guest_token or tokens.guest_token)


async def refresh_tokens(
    http: aiohttp.ClientSession,
    http_base: str,
    request: RefreshTokens,
    *,
    timeout: float,
    ssl_verify: bool,
) -> RefreshSucceeded | RefreshFailed | RefreshRefused:
    """Present the refresh token; the answer as the connection's state machine takes it.

    401 and 403 are a refusal (the user's tokens go); anything else that is not a 200 with
    both tokens is a failure (the tokens are kept and the refresh tried again)."""
    request_id = request.request_id
    try:
        async with http.post(
            http_base + REFRESH_PATH,
            json=to_wire(RefreshRequest(request.refresh_token)),
            timeout=aiohttp.ClientTimeout(total=timeout),
            ssl=ssl_verify,
        ) as response:
            status = response.status
            if status in (401, 403):
                return RefreshRefused(request_id, status)
            if status != 200:
                return RefreshFailed(request_id, f"HTTP {status}")
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return RefreshFailed(request_id, describe(exc))
    try:
        answer = parse_refresh_answer(body)
    except ProtocolError as exc:
        return RefreshFailed(request_id, str(exc))
    return RefreshSucceeded(
        request_id,
        answer.access_token,
        answer.refresh_token,
        user_id=answer.user_id,
        username=answer.username,
    )
