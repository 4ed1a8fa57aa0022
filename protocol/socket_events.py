"""The Socket.IO payloads of both directions (PROTOCOL.md sections 2 to 4): their shapes
as msgspec Structs, what builds them, and the ``parse_*`` functions that read them.

Owns: the handshake's query and ``auth`` fields, ``submit_log_chunk`` and its acks,
``ping``/``pong``, ``authenticated``, ``guestToken``, ``retry_auth`` and
``processed_event``.
Must not: do I/O, log, or decide what a payload leads to (the client's state machine and
the server's handlers do).

Rules. The sender builds a Struct and hands ``to_wire(struct)`` to python-socketio (which
encodes plain JSON values); a Struct's field order is the order on the wire. What each
side reads arrives already decoded by python-socketio, so every ``parse_*`` takes
decoded JSON values and returns a typed value or raises ``ProtocolError``.

Theory. The two sides read differently on purpose. The server holds the client to the
shapes (msgspec validation, 64-bit integers, valid Unicode), because what it accepts it
stores. The client reads a server leniently (PROTOCOL.md section 3: a field of the wrong
type counts as absent, only a payload of the wrong kind is malformed), because any
compatible server must keep working, and it bounds every string before it goes anywhere.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode

import msgspec

from protocol.text import (
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    ProtocolError,
    bounded_text,
    kind_of,
    token_or_none,
)

# What SQLite's INTEGER holds; a larger number is the client's mistake, not the store's.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]

# Epoch milliseconds, with room either side; JSON numbers beyond 2**53 lose precision and
# NaN or Infinity are not JSON at all, so a pong never echoes them.
TIMESTAMP_BOUND = 2**53
Timestamp = (
    Annotated[int, msgspec.Meta(ge=-TIMESTAMP_BOUND, le=TIMESTAMP_BOUND)]
    | Annotated[float, msgspec.Meta(ge=-TIMESTAMP_BOUND, le=TIMESTAMP_BOUND)]
)

Identity = Literal["user", "guest"]


def to_wire(payload: msgspec.Struct) -> Any:
    """A Struct as the plain JSON values python-socketio sends (fields in order)."""
    return msgspec.to_builtins(payload)


# ----------------------------------------------------------------------------- handshake


class Handshake(msgspec.Struct, frozen=True):
    """What a connection opens with: its query's ``clientId`` and ``hostname``, and the
    token of its ``auth`` object (section 2)."""

    client_id: str | None
    hostname: str
    token: str | None


def handshake_query(client_id: str, hostname: str, user_agent: str) -> str:
    """The query string the client connects with."""
    return urlencode({"clientId": client_id, "hostname": hostname, "userAgent": user_agent})


def handshake_auth(token: str | None) -> dict[str, str]:
    """The ``auth`` object: ``{"token": T}``, or ``{}`` with no token."""
    return {"token": token} if token is not None else {}


def parse_handshake(query_string: str, auth: Any) -> Handshake:
    """What the server reads of a handshake; never raises: a missing ``clientId`` is
    ``None`` (the server refuses it as ``invalid_client_id``), a token that is not a
    string is no token."""
    query = parse_qs(query_string)
    client_id = query["clientId"][0] if "clientId" in query else None
    hostname = query["hostname"][0] if "hostname" in query else ""
    token = auth.get("token") if isinstance(auth, dict) else None
    return Handshake(client_id, hostname, token if isinstance(token, str) else None)


# ----------------------------------------------------------------------------- client → server


class ChunkSource(msgspec.Struct, frozen=True):
    path: str
    offset: Int64


class SubmitLogChunk(msgspec.Struct, frozen=True, omit_defaults=True):
    """``submit_log_chunk``: the base fields, then the extensions (section 4)."""

    clientId: str  # the wire's own spelling
    chunk: str
    chunkId: str | None = None
    seq: Int64 | None = None
    source: ChunkSource | None = None
    sentAt: Int64 | None = None


class Ping(msgspec.Struct, frozen=True):
    """``ping``. The server reads only ``timestamp``; ``clientId`` is whatever came."""

    timestamp: Timestamp | None = None
    clientId: Any = None


def parse_submit_log_chunk(args: tuple[Any, ...]) -> SubmitLogChunk:
    """The payload of a ``submit_log_chunk`` (its handler's arguments), validated."""
    if len(args) != 1:
        raise ProtocolError(f"expected one payload object, got {len(args)} arguments")
    try:
        return msgspec.convert(args[0], type=SubmitLogChunk)
    except msgspec.ValidationError as exc:
        raise ProtocolError(str(exc)) from None
    except UnicodeEncodeError:
        # The Socket.IO parser (the stdlib's json) lets a lone surrogate through, and
        # msgspec refuses to read one as a string: malformed input, not a fault.
        raise ProtocolError("a string holds a lone surrogate (not valid Unicode)") from None


def parse_ping(args: tuple[Any, ...]) -> Ping:
    """The payload of a ``ping`` (its handler's arguments); none at all is ``Ping()``."""
    if not args:
        return Ping()
    try:
        return msgspec.convert(args[0], type=Ping)
    except (msgspec.ValidationError, UnicodeEncodeError) as exc:
        raise ProtocolError(str(exc)) from None


# ----------------------------------------------------------------------------- acks


class ChunkAccepted(msgspec.Struct, frozen=True, omit_defaults=True):
    """A delivered ack: ``{"ok": true, "chunkId"?, "duplicate"?: true}``."""

    ok: bool
    chunkId: str | None = None
    duplicate: bool = False


class ChunkRefused(msgspec.Struct, frozen=True, omit_defaults=True):
    """A refusing ack: ``{"error": code, "message"?}``."""

    error: str
    message: str | None = None


def parse_chunk_ack(payload: Any) -> ChunkAccepted | ChunkRefused:
    """What an ack means to the client; never raises.

    Any ack without an ``error`` field (``{"ok": true}``, ``{"message": ...}``, ``{}``,
    ``null``, a bare string) means delivered (section 4). A JSON ``null`` error counts as
    absent. The code and the message are bounded (``bounded_text``)."""
    if not isinstance(payload, dict) or payload.get("error") is None:
        return ChunkAccepted(ok=True)
    code = payload["error"]
    message = payload.get("message")
    return ChunkRefused(
        bounded_text(code if isinstance(code, str) else repr(code)[:MAX_MESSAGE_CHARS], 100),
        bounded_text(message, MAX_MESSAGE_CHARS) if isinstance(message, str) else None,
    )


# ----------------------------------------------------------------------------- server → client


class AuthenticatedEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """``authenticated``: no payload, or (extension) who the server knows us as."""

    identity: Identity | None = None
    userId: str | None = None
    username: str | None = None
    guestId: str | None = None


class GuestTokenEvent(msgspec.Struct, frozen=True):
    token: str


class RetryAuthEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    reason: str | None = None


class PongEvent(msgspec.Struct, frozen=True):
    timestamp: int | float


class ChunkStoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The reference server's ``processed_event`` after it stored a chunk."""

    type: str = "chunk_stored"
    chunkId: str | None
    bytes: int
    lines: int


def parse_authenticated(data: Any) -> AuthenticatedEvent:
    """``authenticated`` as the client reads it: an ``identity`` other than ``user`` or
    ``guest`` and a ``username`` that is not a string count as absent; the name is
    bounded. Raises when the payload is neither nothing nor an object."""
    if data is None:
        return AuthenticatedEvent()
    if not isinstance(data, dict):
        raise ProtocolError(f"authenticated: expected an object, got {kind_of(data)}")
    found = data.get("identity")
    name = data.get("username")
    return AuthenticatedEvent(
        identity=found if found == "user" or found == "guest" else None,
        username=bounded_text(name, MAX_NAME_CHARS) if isinstance(name, str) else None,
    )


def parse_guest_token(data: Any) -> GuestTokenEvent:
    """``guestToken``: an object whose ``token`` is a non-empty string of bounded length."""
    token = token_or_none(data.get("token")) if isinstance(data, dict) else None
    if token is None:
        raise ProtocolError('guestToken: expected {"token": <a token>}')
    return GuestTokenEvent(token)


def parse_retry_auth(data: Any) -> RetryAuthEvent:
    """``retry_auth``: its ``reason``, bounded, when it is a string; never raises (any
    ``retry_auth`` is one, whatever it carries)."""
    reason = data.get("reason") if isinstance(data, dict) else None
    return RetryAuthEvent(
        bounded_text(reason, MAX_MESSAGE_CHARS) if isinstance(reason, str) else None
    )


def parse_processed_event(data: Any) -> dict[str, Any]:
    """``processed_event``: any JSON object, passed on as is."""
    if not isinstance(data, dict):
        raise ProtocolError(f"processed_event: expected an object, got {kind_of(data)}")
    return data


def parse_connect_error(data: Any) -> str:
    """The message of a refused handshake (``connect_error``): ``{"message": ...}``, a
    string, or anything else shown short; bounded; never raises."""
    if isinstance(data, dict):
        message = data.get("message")
        if isinstance(message, str):
            return bounded_text(message, MAX_MESSAGE_CHARS)
    if isinstance(data, str):
        return bounded_text(data, MAX_MESSAGE_CHARS)
    return bounded_text(repr(data)[:200], MAX_MESSAGE_CHARS)
