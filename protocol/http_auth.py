"""The HTTP auth API's bodies (PROTOCOL.md section 5): requests and answers as msgspec
Structs, and the ``parse_*`` functions of both sides.

Owns: the shapes of the login, refresh, logout and register-guest requests and of their
answers, and the bounds the reference server puts on what a request may carry.
Must not: do I/O, log, or hold a status code's meaning (the caller decides what a 401 is).

Rules. The server reads request bodies as raw bytes, strictly: a missing field or a wrong
type raises ``ProtocolError`` with msgspec's own sentence, which the server answers 400.
The client reads answers already decoded from JSON; what it needs is checked (tokens are
non-empty strings of bounded length), names are bounded.

Theory. The client's two token readers differ on purpose: a login answer without its
user is not a login (``parse_login_answer`` raises), while a refresh answer needs only
its tokens, the user's id and name being extras it shows when present
(``parse_refresh_answer``).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

from protocol.text import (
    MAX_CLIENT_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_TOKEN_CHARS,
    ProtocolError,
    bounded_text,
    token_or_none,
)

# Bounds on what a request may carry: an e-mail address is at most 254 characters, and
# nobody types a 1,024-character password; anything longer is not a login, it is load.
Identifier = Annotated[str, msgspec.Meta(max_length=320)]
Password = Annotated[str, msgspec.Meta(max_length=1024)]
ClientId = Annotated[str, msgspec.Meta(max_length=MAX_CLIENT_ID_CHARS)]
Token = Annotated[str, msgspec.Meta(max_length=MAX_TOKEN_CHARS)]


# ----------------------------------------------------------------------------- requests


class LoginRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    identifier: Identifier
    password: Password
    hostname: str = ""
    clientId: ClientId = ""  # the wire's own spelling
    # Extension: the installation's credentials, shown to take a clientId it owns.
    guestToken: Token | None = None
    refreshToken: Token | None = None


class RefreshRequest(msgspec.Struct, frozen=True):
    refreshToken: str


class LogoutRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    refreshToken: str
    clientId: ClientId | None = None  # extension: hand this id back to a guest


class RegisterGuestRequest(msgspec.Struct, frozen=True):
    clientId: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CLIENT_ID_CHARS)]
    hostname: str = ""


AuthRequest = LoginRequest | RefreshRequest | LogoutRequest | RegisterGuestRequest
_Request = TypeVar("_Request", LoginRequest, RefreshRequest, LogoutRequest, RegisterGuestRequest)


def parse_request(body: bytes, request_type: type[_Request]) -> _Request:
    """A request body (raw bytes) as ``request_type``; ``ProtocolError`` with msgspec's
    sentence when it is not JSON of that shape."""
    try:
        return msgspec.json.decode(body, type=request_type)
    except msgspec.DecodeError as exc:
        raise ProtocolError(str(exc)) from None


def parse_login_request(body: bytes) -> LoginRequest:
    return parse_request(body, LoginRequest)


def parse_refresh_request(body: bytes) -> RefreshRequest:
    return parse_request(body, RefreshRequest)


def parse_logout_request(body: bytes) -> LogoutRequest:
    return parse_request(body, LogoutRequest)


def parse_register_guest_request(body: bytes) -> RegisterGuestRequest:
    return parse_request(body, RegisterGuestRequest)


# ----------------------------------------------------------------------------- answers


class UserInfo(msgspec.Struct, frozen=True):
    id: str
    username: str


class TokenAnswer(msgspec.Struct, frozen=True):
    """The answer to a login or a refresh."""

    access_token: str
    refresh_token: str
    user: UserInfo


class GuestTokenAnswer(msgspec.Struct, frozen=True):
    """The answer to a register-guest, or (extension) to a logout."""

    guestToken: str


class ErrorAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    error: str
    message: str | None = None


class ReceivedTokens(msgspec.Struct, frozen=True):
    """Tokens as the client read them from an answer, with the user when named."""

    access_token: str
    refresh_token: str
    user_id: str | None = None
    username: str | None = None


def parse_login_answer(body: Any) -> ReceivedTokens:
    """A login's 200 answer: both tokens and the user's ``id`` and ``username``."""
    try:
        user = body["user"]
        access = token_or_none(body["access_token"])
        refresh = token_or_none(body["refresh_token"])
        user_id, username = str(user["id"]), str(user["username"])
    except (KeyError, TypeError, IndexError):
        access = refresh = None
    if access is None or refresh is None:
        raise ProtocolError("the server's answer to the login had no tokens.")
    return ReceivedTokens(
        access,
        refresh,
        bounded_text(user_id, MAX_NAME_CHARS),
        bounded_text(username, MAX_NAME_CHARS),
    )


def parse_refresh_answer(body: Any) -> ReceivedTokens:
    """A refresh's 200 answer: both tokens; the user's id and name when it has them."""
    access = token_or_none(body.get("access_token")) if isinstance(body, dict) else None
    refresh = token_or_none(body.get("refresh_token")) if isinstance(body, dict) else None
    if access is None or refresh is None:
        raise ProtocolError("the refresh answer had no usable tokens")
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    username = user.get("username") if isinstance(user, dict) else None
    return ReceivedTokens(
        access,
        refresh,
        user_id=None if user_id is None else bounded_text(str(user_id), MAX_NAME_CHARS),
        username=bounded_text(username, MAX_NAME_CHARS) if isinstance(username, str) else None,
    )


def parse_logout_answer(body: Any) -> str | None:
    """The guest token a logout's 200 answer hands back, or ``None`` when it has none."""
    if not isinstance(body, dict) or "guestToken" not in body:
        return None
    token = token_or_none(body["guestToken"])
    if token is None:
        raise ProtocolError("the logout answer's guestToken is not a token")
    return token
