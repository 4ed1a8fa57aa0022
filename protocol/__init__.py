"""The wire protocol between log-monitor and a log server (docs/PROTOCOL.md), shared by
the client (``main_process``) and the reference server (``server``).

Owns: the names both sides spell the same way (``names``), the payloads of the
Socket.IO events (``socket_events``) and of the HTTP auth API (``http_auth``) as msgspec
Structs, the pure ``parse_*`` functions that read what arrives, the bounds on a peer's
words (``text``) and the server URL parser (``server_url``).

Must not: do I/O of any kind (no sockets, no asyncio, no files, no logging), or import
``main_process``, ``server``, ``renderer`` or ``ipc``: both sides import this, never the
other way round.

Rules: every ``parse_*`` returns a typed value or raises ``ProtocolError`` (a
``ValueError``) with one sentence; what a payload then leads to is the caller's to decide.
A change here is a change of the wire: docs/PROTOCOL.md says what may change (nothing a
compatible peer relies on).
"""

from protocol.http_auth import (
    ErrorAnswer,
    GuestTokenAnswer,
    LoginRequest,
    LogoutRequest,
    ReceivedTokens,
    RefreshRequest,
    RegisterGuestRequest,
    TokenAnswer,
    UserInfo,
    parse_login_answer,
    parse_login_request,
    parse_logout_answer,
    parse_logout_request,
    parse_refresh_answer,
    parse_refresh_request,
    parse_register_guest_request,
)
from protocol.names import (
    AUTHENTICATED,
    DEFAULT_NAMESPACE,
    DEFAULT_SOCKETIO_PATH,
    GUEST_TOKEN,
    LOGIN_PATH,
    LOGOUT_PATH,
    PING,
    PONG,
    PROCESSED_EVENT,
    REFRESH_PATH,
    REGISTER_GUEST_PATH,
    RETRY_AUTH,
    SUBMIT_LOG_CHUNK,
)
from protocol.server_url import ServerAddress, parse_server_url
from protocol.socket_events import (
    AuthenticatedEvent,
    ChunkAccepted,
    ChunkRefused,
    ChunkSource,
    ChunkStoredEvent,
    GuestTokenEvent,
    Handshake,
    Ping,
    PongEvent,
    RetryAuthEvent,
    SubmitLogChunk,
    handshake_auth,
    handshake_query,
    parse_authenticated,
    parse_chunk_ack,
    parse_connect_error,
    parse_guest_token,
    parse_handshake,
    parse_ping,
    parse_processed_event,
    parse_retry_auth,
    parse_submit_log_chunk,
    to_wire,
)
from protocol.text import (
    MAX_CLIENT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_TOKEN_CHARS,
    ProtocolError,
    bounded_text,
)

__all__ = [
    "AUTHENTICATED",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SOCKETIO_PATH",
    "GUEST_TOKEN",
    "LOGIN_PATH",
    "LOGOUT_PATH",
    "MAX_CLIENT_ID_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_NAME_CHARS",
    "MAX_TOKEN_CHARS",
    "PING",
    "PONG",
    "PROCESSED_EVENT",
    "REFRESH_PATH",
    "REGISTER_GUEST_PATH",
    "RETRY_AUTH",
    "SUBMIT_LOG_CHUNK",
    "AuthenticatedEvent",
    "ChunkAccepted",
    "ChunkRefused",
    "ChunkSource",
    "ChunkStoredEvent",
    "ErrorAnswer",
    "GuestTokenAnswer",
    "GuestTokenEvent",
    "Handshake",
    "LoginRequest",
    "LogoutRequest",
    "Ping",
    "PongEvent",
    "ProtocolError",
    "ReceivedTokens",
    "RefreshRequest",
    "RegisterGuestRequest",
    "RetryAuthEvent",
    "ServerAddress",
    "SubmitLogChunk",
    "TokenAnswer",
    "UserInfo",
    "bounded_text",
    "handshake_auth",
    "handshake_query",
    "parse_authenticated",
    "parse_chunk_ack",
    "parse_connect_error",
    "parse_guest_token",
    "parse_handshake",
    "parse_login_answer",
    "parse_login_request",
    "parse_logout_answer",
    "parse_logout_request",
    "parse_ping",
    "parse_processed_event",
    "parse_refresh_answer",
    "parse_refresh_request",
    "parse_register_guest_request",
    "parse_retry_auth",
    "parse_server_url",
    "parse_submit_log_chunk",
    "to_wire",
]
