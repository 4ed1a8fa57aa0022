"""The HTTP half of the reference server: ``/api/auth/*`` and two read-only probes.

A plain ASGI callable; four JSON endpoints do not justify a web framework. Bodies are
decoded straight into ``protocol``'s msgspec Structs (``protocol.http_auth``), so a
missing field or a wrong type is a 400 whose message is msgspec's own sentence. Bodies over ``MAX_BODY_BYTES`` are refused with 413
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
from typing import Any

import msgspec

from protocol import (
    LOGIN_PATH,
    LOGOUT_PATH,
    REFRESH_PATH,
    REGISTER_GUEST_PATH,
    ErrorAnswer,
    GuestTokenAnswer,
    LoginRequest,
    LogoutRequest,
    ProtocolError,
    RefreshRequest,
    RegisterGuestRequest,
    TokenAnswer,
    UserInfo,
    parse_login_request,
    parse_logout_request,
    parse_refresh_request,
    parse_register_guest_request,
)
from server.auth import AuthFailure, AuthService, TokenPair

log = logging.getLogger("log_monitor_server.http")

MAX_BODY_BYTES = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


_json = msgspec.json.Encoder()


def _token_body(pair: TokenPair) -> TokenAnswer:
    return TokenAnswer(pair.access_token, pair.refresh_token, UserInfo(pair.user_id, pair.username))


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
        handlers: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], Awaitable[Any]]]] = {
            LOGIN_PATH: (parse_login_request, self._login),
            REFRESH_PATH: (parse_refresh_request, self._refresh),
            REGISTER_GUEST_PATH: (parse_register_guest_request, self._register_guest),
            LOGOUT_PATH: (parse_logout_request, self._logout),
        }
        if path not in handlers:
            return 404, {"error": "not_found"}, []
        if method != "POST":
            return 405, {"error": "method_not_allowed"}, [(b"allow", b"POST")]
        body = await self._read_body(scope, receive)
        parse, handler = handlers[path]
        try:
            request = parse(body)
        except ProtocolError as exc:
            return 400, ErrorAnswer("invalid", str(exc)), []
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
            return outcome.status, ErrorAnswer(outcome.code), headers
        log.info("login: user %s", outcome.username)
        return 200, _token_body(outcome), []

    async def _refresh(self, request: RefreshRequest) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        outcome = await self._auth.refresh(request.refreshToken)
        if isinstance(outcome, AuthFailure):
            log.info("refresh refused (%s)", outcome.code)
            return outcome.status, ErrorAnswer(outcome.code), []
        return 200, _token_body(outcome), []

    async def _register_guest(
        self, request: RegisterGuestRequest
    ) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        token = await self._auth.register_guest(request.clientId, request.hostname)
        if token is None:
            return 409, ErrorAnswer("client_id_taken"), []
        return 200, GuestTokenAnswer(token), []

    async def _logout(self, request: LogoutRequest) -> tuple[int, Any, list[tuple[bytes, bytes]]]:
        guest_token = await self._auth.logout(request.refreshToken, request.clientId)
        if guest_token is None:
            return 204, None, []
        return 200, GuestTokenAnswer(guest_token), []

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
