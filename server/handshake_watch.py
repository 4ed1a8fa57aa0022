"""The ASGI side of the connection limits: tells the gate where each connection is in its
handshake, and refuses WebSockets that are not Socket.IO's.

:class:`HandshakeWatch` wraps the whole ASGI application (Socket.IO and the HTTP API). It
finds the gate's :class:`~server.connection_limits.Connection` by ``scope["client"]`` and
reports, without changing a byte:

- an HTTP request started, its body received whole (the app read it, or it has none
  left), its response finished: the connection then waits for its next request under
  the handshake deadline again;
- a WebSocket opened, and then connected to a Socket.IO namespace: the server sent a
  Socket.IO ``CONNECT`` packet (``40`` as Engine.IO text, e.g. ``40/client,{"sid":…}``),
  or, for an Engine.IO transport upgrade (``sid`` in the query), its session has a
  namespace connected (asked when the server answers the ``2probe``, and again when the
  deadline passes: the connect may have gone over long-polling meanwhile). That is the
  end of the handshake.

A WebSocket on any other path than Socket.IO's is refused with 403 here, quietly: left to
the HTTP API, uvicorn would log an error for each one.

Must not: delay or alter a message, or hold state of its own (the gate holds it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from server.connection_limits import Connection, ConnectionGate, Phase

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SOCKET_IO_CONNECT = "40"  # Engine.IO message (4) carrying a Socket.IO CONNECT (0)
ENGINE_IO_PROBE_ANSWER = "3probe"


class HandshakeWatch:
    def __init__(
        self,
        app: App,
        gate: ConnectionGate,
        socketio_path: str,
        session_connected: Callable[[str], bool],
    ) -> None:
        self._app = app
        self._gate = gate
        self._socketio_prefix = "/" + socketio_path.strip("/") + "/"
        self._session_connected = session_connected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and not self._is_socketio(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        connection = self._gate.find(scope.get("client"))
        if connection is None or kind not in ("http", "websocket"):
            await self._app(scope, receive, send)
        elif kind == "http":
            await self._http(connection, scope, receive, send)
        else:
            await self._websocket(connection, scope, receive, send)

    def _is_socketio(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        return (path if path.endswith("/") else path + "/").startswith(self._socketio_prefix)

    async def _http(
        self, connection: Connection, scope: Scope, receive: Receive, send: Send
    ) -> None:
        gate = self._gate
        gate.request_started(connection)

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                gate.request_received(connection)
            return message

        async def watched_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                gate.response_finished(connection)

        try:
            await self._app(scope, watched_receive, watched_send)
        finally:
            # An app that failed leaves uvicorn to answer 500; the connection then waits
            # for its next request like after any response.
            gate.response_finished(connection)

    async def _websocket(
        self, connection: Connection, scope: Scope, receive: Receive, send: Send
    ) -> None:
        gate = self._gate
        gate.websocket_opened(connection)
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        upgraded_session = query.get("sid", [None])[0]
        if upgraded_session is not None:
            session = upgraded_session
            connection.finished_elsewhere = lambda: self._session_connected(session)

        async def watched_send(message: Message) -> None:
            await send(message)
            if connection.phase is Phase.ESTABLISHED or message["type"] != "websocket.send":
                return
            text = message.get("text")
            if not isinstance(text, str):
                return
            if text.startswith(SOCKET_IO_CONNECT) or (
                upgraded_session is not None
                and text == ENGINE_IO_PROBE_ANSWER
                and self._session_connected(upgraded_session)
            ):
                gate.established(connection)

        await self._app(scope, receive, watched_send)
