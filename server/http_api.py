"""The HTTP half of the reference server: ``/api/auth/*`` and two read-only probes.

A plain ASGI callable; four JSON endpoints do not justify a web framework. Bodies are
decoded straight into msgspec Structs, so a missing field or a wrong type is a 400 whose
message is msgspec's own sentence. Bodies over ``MAX_BODY_BYTES`` are refused with 413
before they are read whole. No token or password is ever logged.

| request | answer |
|---|---|
| ``POST /api/auth/login`` | 200 tokens and user / 401 / 409 (a clientId not the user's) / 429 / 503 |
| ``POST /api/auth/refresh`` | 200 the next pair (the presented token is spent) / 401 |
| ``POST /api/auth/register-guest`` | 200 ``{"guestToken"}`` / 409 (the clientId is claimed) |
| ``POST /api/auth/logout`` | 204 (the session is revoked) / 200 ``{"guestToken"}`` (see auth) |
| ``GET /api/health`` | 200 ``{"ok": true}`` |
| ``GET /api/stats`` | 200 counters (socket front end, connections) to direct local requests; 404 to others unless ``--public-stats`` |
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import msgspec

from server.auth import MAX_CLIENT_ID_CHARS, AuthFailure, AuthService, TokenPair

log = logging.getLogger("log_monitor_server.http")

MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# Bounds on what a request may carry: an e-mail address is at most 254 characters, and
# nobody types a 1,024-character password; anything longer is not a login, it is load.
Identifier = Annotated[str, msgspec.Meta(max_length=320)]
Password = Annotated[str, msgspec.Meta(max_length=1024)]
ClientId = Annotated[str, msgspec.Meta(max_length=MAX_CLIENT_ID_CHARS)]
Token = Annotated[str, msgspec.Meta(max_length=8192)]


class LoginRequest(msgspec.Struct, frozen=True):
    identifier: Identifier
    password: Password
    hostname: str = ""
    clientId: ClientId = ""  # the wire's own spelling
    # Extension: the installation's credentials, shown to take a clientId it owns.
    guestToken: Token | None = None
    refreshToken: Token | None = None


class RefreshRequest(msgspec.Struct, frozen=True):
    refreshToken: str


class LogoutRequest(msgspec.Struct, frozen=True):
    refreshToken: str
    clientId: ClientId | None = None  # extension: hand this id back to a guest


class RegisterGuestRequest(msgspec.Struct, frozen=True):
    clientId: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CLIENT_ID_CHARS)]
    hostname: str = ""


class BodyTooLarge(Exception):
    pass


_json = msgspec.json.Encoder()


def _token_body(pair: TokenPair) -> dict[str, Any]:
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "user": {"id": pair.user_id, "username": pair.username},
    }


class HttpApi:
    def __init__(self, auth: AuthService, stats: Callable[[], dict[str, int]]) -> None:
        self._auth = auth
        self._stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            status, body, headers = await self._route(method, path, scope, receive)
        except BodyTooLarge:
            status, body, headers = 413, {"error": "too_large"}, []
        except Exception:
            # A bug here must cost one request, not the server; the client sees no trace.
            log.exception("request %s %s failed", method, path)
            status, body, headers = 500, {"error": "internal"}, []
        await self._respond(send, status, body, headers)

    async def _route(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        if path == "/api/health" and method == "GET":
            return 200, {"ok": True}, []
        if path == "/api/stats" and method == "GET":
            return 200, self._stats(), []
        handlers: dict[str, tuple[type[msgspec.Struct], Callable[[Any], Awaitable[Any]]]] = {
            "/api/auth/login": (LoginRequest, self._login),
            "/api/auth/refresh": (RefreshRequest, self._refresh),
            "/api/auth/register-guest": (RegisterGuestRequest, self._register_guest),
            "/api/auth/logout": (LogoutRequest, self._logout),
        }
        if path not in handlers:
            return 404, {"error": "not_found"}, []
        if method != "POST":
            return 405, {"error": "method_not_allowed"}, [(b"allow", b"POST")]
        body = await self._read_body(scope, receive)
        request_type, handler = handlers[path]
        try:
            request = msgspec.json.decode(body, type=request_type)
        except msgspec.DecodeError as exc:
            return 400, {"error": "invalid", "message": str(exc)}, []
        result: tuple[int, Any, list[tuple[bytes, bytes]]] = await handler(request)
        return result

    async def _login(self, request: LoginRequest) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        outcome = await self._auth.login(
            request.identifier,
            request.password,
            request.clientId,
            guest_token=request.guestToken,
            refresh_token=request.refreshToken,
        )
        if isinstance(outcome, AuthFailure):
            log.info("login refused for a user (%s)", outcome.code)
            headers = []
            if outcome.retry_after is not None:
                headers.append((b"retry-after", str(outcome.retry_after).encode()))
            return outcome.status, {"error": outcome.code}, headers
        log.info("login: user %s", outcome.username)
        return 200, _token_body(outcome), []

    async def _refresh(self, request: RefreshRequest) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        outcome = await self._auth.refresh(request.refreshToken)
        if isinstance(outcome, AuthFailure):
            log.info("refresh refused (%s)", outcome.code)
            return outcome.status, {"error": outcome.code}, []
        return 200, _token_body(outcome), []

    async def _register_guest(
        self, request: RegisterGuestRequest
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        token = await self._auth.register_guest(request.clientId, request.hostname)
        if token is None:
            return 409, {"error": "client_id_taken"}, []
        return 200, {"guestToken": token}, []

    async def _logout(self, request: LogoutRequest) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        guest_token = await self._auth.logout(request.refreshToken, request.clientId)
        if guest_token is None:
            return 204, None, []
        return 200, {"guestToken": guest_token}, []

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY_BYTES:
                raise BodyTooLarge
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BodyTooLarge
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    @staticmethod
    async def _respond(
        send: Send, status: int, body: Any, extra_headers: list[tuple[bytes, bytes]]
    ) -> None:
        payload = b"" if body is None else _json.encode(body)
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        headers.append((b"content-length", str(len(payload)).encode()))
        await send(
            {"type": "http.response.start", "status": status, "headers": headers + extra_headers}
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
