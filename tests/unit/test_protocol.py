"""The wire protocol's shared module (``protocol/``): each ``parse_*`` with what it must
accept and each kind of thing it must refuse (one ``ProtocolError`` that says why), the
server URL parser, and the payloads as they go on the wire (field order included)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import msgspec
import pytest

from protocol import (
    DEFAULT_NAMESPACE,
    DEFAULT_SOCKETIO_PATH,
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    MAX_TOKEN_CHARS,
    AuthenticatedEvent,
    ChunkAccepted,
    ChunkRefused,
    ChunkSource,
    ChunkStoredEvent,
    ErrorAnswer,
    GuestTokenAnswer,
    LoginRequest,
    LogoutRequest,
    Ping,
    ProtocolError,
    ReceivedTokens,
    RefreshRequest,
    RegisterGuestRequest,
    ServerAddress,
    SubmitLogChunk,
    TokenAnswer,
    UserInfo,
    bounded_text,
    handshake_auth,
    handshake_query,
    parse_authenticated,
    parse_chunk_ack,
    parse_connect_error,
    parse_guest_token,
    parse_handshake,
    parse_login_answer,
    parse_login_request,
    parse_logout_answer,
    parse_logout_request,
    parse_ping,
    parse_processed_event,
    parse_refresh_answer,
    parse_refresh_request,
    parse_register_guest_request,
    parse_retry_auth,
    parse_server_url,
    parse_submit_log_chunk,
    to_wire,
)

LONG = "é\n" * 1000
TOKEN = "t" * MAX_TOKEN_CHARS


def test_names_and_the_error_type() -> None:
    assert (DEFAULT_SOCKETIO_PATH, DEFAULT_NAMESPACE) == ("/socket.io/", "/client")
    assert issubclass(ProtocolError, ValueError)


def test_bounded_text_cuts_and_replaces_control_characters() -> None:
    assert bounded_text("a\nb", 10) == "a\ufffdb"
    assert bounded_text("abcdef", 3) == "abc…"


# ----------------------------------------------------------------------------- server URL


@pytest.mark.parametrize(
    ("url", "socket_url", "http_base"),
    [
        ("ws://127.0.0.1:5324", "http://127.0.0.1:5324", "http://127.0.0.1:5324"),
        (
            "wss://logs.example.com/production/",
            "https://logs.example.com",
            "https://logs.example.com/production",
        ),
        ("HTTPS://h:1 ", "https://h:1", "https://h:1"),
        ("http://h/team", "http://h", "http://h/team"),
    ],
)
def test_server_urls_of_every_accepted_scheme(url: str, socket_url: str, http_base: str) -> None:
    assert parse_server_url(url) == ServerAddress(socket_url, http_base)
    assert ServerAddress.parse(url) == parse_server_url(url)


@pytest.mark.parametrize("url", ["ftp://h", "localhost:5324", "ws://", "", "//h"])
def test_server_urls_refused_say_what_they_must_look_like(url: str) -> None:
    with pytest.raises(ProtocolError, match=r"must look like ws://host:port, wss://host"):
        parse_server_url(url)


# ----------------------------------------------------------------------------- handshake


def test_handshake_fields_round_trip() -> None:
    query = handshake_query("id-1", "host", "agent/1 (x)")
    assert parse_qs(query) == {
        "clientId": ["id-1"],
        "hostname": ["host"],
        "userAgent": ["agent/1 (x)"],
    }
    assert handshake_auth("T") == {"token": "T"}
    assert handshake_auth(None) == {}
    handshake = parse_handshake(query, handshake_auth("T"))
    assert (handshake.client_id, handshake.hostname, handshake.token) == ("id-1", "host", "T")


@pytest.mark.parametrize(
    ("query", "auth", "expected"),
    [
        ("", None, (None, "", None)),
        ("hostname=h", {}, (None, "h", None)),
        ("clientId=a&clientId=b", {"token": 5}, ("a", "", None)),
        ("clientId=a", "token", ("a", "", None)),
        ("clientId=a", {"token": ["x"]}, ("a", "", None)),
    ],
)
def test_handshake_without_fields_or_with_a_token_of_the_wrong_type(
    query: str, auth: Any, expected: tuple[Any, ...]
) -> None:
    handshake = parse_handshake(query, auth)
    assert (handshake.client_id, handshake.hostname, handshake.token) == expected


# ----------------------------------------------------------------------------- submit_log_chunk


def test_a_chunk_goes_on_the_wire_in_the_protocols_field_order() -> None:
    chunk = SubmitLogChunk("c", "text\n", "c:1", 1, ChunkSource("/log", 7), 1700)
    assert json.dumps(to_wire(chunk)) == (
        '{"clientId": "c", "chunk": "text\\n", "chunkId": "c:1", "seq": 1, '
        '"source": {"path": "/log", "offset": 7}, "sentAt": 1700}'
    )
    assert "source" not in to_wire(SubmitLogChunk("c", "x", "c:1", 1, None, 1))


def test_a_valid_chunk_parses() -> None:
    payload = {"clientId": "c", "chunk": "x", "chunkId": "c:1", "seq": 1, "extra": [1]}
    chunk = parse_submit_log_chunk((payload,))
    assert (chunk.clientId, chunk.chunk, chunk.chunkId, chunk.seq) == ("c", "x", "c:1", 1)
    assert parse_submit_log_chunk(({"clientId": "c", "chunk": ""},)).source is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "expected one payload object, got 0 arguments"),
        (({"clientId": "c", "chunk": "x"}, 2), "expected one payload object, got 2 arguments"),
        (("text",), "Expected `object`, got `str`"),
        (({"chunk": "x"},), "Object missing required field `clientId`"),
        (({"clientId": "c", "chunk": 5},), "Expected `str`, got `int` - at `$.chunk`"),
        (({"clientId": "c", "chunk": "x", "seq": 2**63},), "at `$.seq`"),
        (
            ({"clientId": "c", "chunk": "x", "source": {"path": "p"}},),
            "missing required field `offset`",
        ),
        (
            ({"clientId": "c", "chunk": "x", "\ud800": 1},),
            "a string holds a lone surrogate (not valid Unicode)",
        ),
    ],
)
def test_invalid_chunks_say_why(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_submit_log_chunk(args)
    assert message in str(refused.value)


# ----------------------------------------------------------------------------- acks


def test_acks_on_the_wire() -> None:
    assert to_wire(ChunkAccepted(ok=True)) == {"ok": True}
    assert to_wire(ChunkAccepted(ok=True, chunkId="c:1", duplicate=True)) == {
        "ok": True,
        "chunkId": "c:1",
        "duplicate": True,
    }
    assert to_wire(ChunkRefused("unauthenticated")) == {"error": "unauthenticated"}
    assert to_wire(ChunkRefused("invalid", "why")) == {"error": "invalid", "message": "why"}


@pytest.mark.parametrize(
    "payload", [{"ok": True}, {"message": "stored"}, {}, None, "ok", [1], {"error": None}]
)
def test_an_ack_without_an_error_means_delivered(payload: Any) -> None:
    assert parse_chunk_ack(payload) == ChunkAccepted(ok=True)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"error": "too_large", "message": "big"}, ChunkRefused("too_large", "big")),
        ({"error": "invalid", "message": 5}, ChunkRefused("invalid", None)),
        ({"error": 7}, ChunkRefused("7", None)),
        ({"error": "e" * 200}, ChunkRefused("e" * 100 + "…", None)),
    ],
)
def test_an_ack_with_an_error_is_a_refusal_with_bounded_words(
    payload: Any, expected: ChunkRefused
) -> None:
    assert parse_chunk_ack(payload) == expected


def test_an_acks_message_is_bounded() -> None:
    refused = parse_chunk_ack({"error": "invalid", "message": LONG})
    assert isinstance(refused, ChunkRefused)
    assert refused.message is not None
    assert len(refused.message) == MAX_MESSAGE_CHARS + 1
    assert refused.message.isprintable()


# ----------------------------------------------------------------------------- ping / pong


def test_ping_on_the_wire_and_back() -> None:
    assert to_wire(Ping(1700, "c")) == {"timestamp": 1700, "clientId": "c"}
    assert parse_ping(({"timestamp": 1700, "clientId": "c"},)).timestamp == 1700
    assert parse_ping(({"timestamp": 1.5, "clientId": 5},)).timestamp == 1.5
    assert parse_ping(()).timestamp is None
    assert parse_ping(({},)).timestamp is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("now",), "Expected `object`, got `str`"),
        (({"timestamp": "now"},), "got `str` - at `$.timestamp`"),
        (({"timestamp": 2**53 + 1},), "- at `$.timestamp`"),
        (({"timestamp": -1e300},), "Expected `float` >= -9007199254740992.0 - at `$.timestamp`"),
        (({"\ud800": 1},), "surrogate"),
    ],
)
def test_invalid_pings_say_why(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_ping(args)
    assert message in str(refused.value)


def test_a_pings_client_id_is_not_read() -> None:
    assert parse_ping(({"timestamp": 1, "clientId": "\ud800"},)).timestamp == 1


# ----------------------------------------------------------------------------- server events


def test_server_events_on_the_wire() -> None:
    user = AuthenticatedEvent("user", userId="u-1", username="ada")
    assert json.dumps(to_wire(user)) == '{"identity": "user", "userId": "u-1", "username": "ada"}'
    guest = AuthenticatedEvent("guest", guestId="g-1")
    assert to_wire(guest) == {"identity": "guest", "guestId": "g-1"}
    stored = ChunkStoredEvent(chunkId=None, bytes=3, lines=1)
    assert json.dumps(to_wire(stored)) == (
        '{"type": "chunk_stored", "chunkId": null, "bytes": 3, "lines": 1}'
    )


@pytest.mark.parametrize(
    ("data", "identity", "username"),
    [
        (None, None, None),
        ({}, None, None),
        ({"identity": "user", "username": "ada"}, "user", "ada"),
        ({"identity": "guest", "guestId": "g"}, "guest", None),
        ({"identity": "admin", "username": 5}, None, None),
        ({"identity": "user", "username": "a\n" * 100}, "user", "a\ufffd" * 64 + "…"),
    ],
)
def test_authenticated_reads_what_it_can(data: Any, identity: Any, username: Any) -> None:
    event = parse_authenticated(data)
    assert (event.identity, event.username) == (identity, username)
    if username is not None:
        assert len(username) <= MAX_NAME_CHARS + 1


@pytest.mark.parametrize(
    ("data", "kind"), [("yes", "a string"), ([1], "an array"), (True, "a boolean"), (3, "a number")]
)
def test_authenticated_of_the_wrong_kind_is_refused(data: Any, kind: str) -> None:
    with pytest.raises(ProtocolError, match=f"authenticated: expected an object, got {kind}"):
        parse_authenticated(data)


def test_guest_token() -> None:
    assert parse_guest_token({"token": "g-1"}).token == "g-1"
    assert parse_guest_token({"token": TOKEN}).token == TOKEN


@pytest.mark.parametrize(
    "data", [None, "g-1", {}, {"token": ""}, {"token": 5}, {"token": TOKEN + "t"}, [{"token": "g"}]]
)
def test_a_guest_token_that_is_no_token_is_refused(data: Any) -> None:
    with pytest.raises(ProtocolError, match="guestToken: expected"):
        parse_guest_token(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"reason": "token_expired"}, "token_expired"),
        ({}, None),
        (None, None),
        ("token_expired", None),
        ({"reason": 5}, None),
        ({"reason": LONG}, bounded_text(LONG, MAX_MESSAGE_CHARS)),
    ],
)
def test_retry_auth_is_always_one_with_a_reason_when_it_has_one(data: Any, reason: Any) -> None:
    assert parse_retry_auth(data).reason == reason


def test_processed_event() -> None:
    assert parse_processed_event({"type": "x", "n": [1]}) == {"type": "x", "n": [1]}
    with pytest.raises(ProtocolError, match="processed_event: expected an object, got null"):
        parse_processed_event(None)
    with pytest.raises(ProtocolError, match="got an array"):
        parse_processed_event([{"type": "x"}])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"message": "invalid signature"}, "invalid signature"),
        ("jwt expired", "jwt expired"),
        ({"message": 5}, "{'message': 5}"),
        (None, "None"),
        ({"message": LONG}, bounded_text(LONG, MAX_MESSAGE_CHARS)),
    ],
)
def test_connect_error_message(data: Any, message: str) -> None:
    assert parse_connect_error(data) == message


# ----------------------------------------------------------------------------- HTTP requests


def test_requests_on_the_wire() -> None:
    login = LoginRequest("ada", "pw", hostname="h", clientId="c")
    assert to_wire(login) == {
        "identifier": "ada",
        "password": "pw",
        "hostname": "h",
        "clientId": "c",
    }
    login = LoginRequest("ada", "pw", hostname="h", clientId="c", guestToken="g", refreshToken="r")
    assert list(to_wire(login)) == [
        "identifier",
        "password",
        "hostname",
        "clientId",
        "guestToken",
        "refreshToken",
    ]
    assert to_wire(LogoutRequest("r")) == {"refreshToken": "r"}
    assert to_wire(LogoutRequest("r", clientId="c")) == {"refreshToken": "r", "clientId": "c"}
    assert to_wire(RefreshRequest("r")) == {"refreshToken": "r"}


def test_valid_requests_parse() -> None:
    login = parse_login_request(b'{"identifier": "ada", "password": "pw", "clientId": "c"}')
    assert (login.identifier, login.hostname, login.clientId, login.guestToken) == (
        "ada",
        "",
        "c",
        None,
    )
    assert parse_refresh_request(b'{"refreshToken": "r"}') == RefreshRequest("r")
    assert parse_logout_request(b'{"refreshToken": "r"}') == LogoutRequest("r")
    assert parse_register_guest_request(b'{"clientId": "c"}') == RegisterGuestRequest("c")


@pytest.mark.parametrize(
    ("parse", "body", "message"),
    [
        (parse_login_request, b"", "Input data was truncated"),
        (parse_login_request, b"{", "Input data was truncated"),
        (parse_login_request, b"\xff", "invalid character"),
        (parse_login_request, b"[]", "Expected `object`, got `array`"),
        (parse_login_request, b'{"identifier": "a"}', "Object missing required field `password`"),
        (parse_login_request, b'{"identifier": 1, "password": "p"}', "at `$.identifier`"),
        (
            parse_login_request,
            json.dumps({"identifier": "a" * 321, "password": "p"}).encode(),
            "Expected `str` of length <= 320 - at `$.identifier`",
        ),
        (parse_refresh_request, b"{}", "Object missing required field `refreshToken`"),
        (parse_logout_request, b'{"refreshToken": "r", "clientId": 5}', "at `$.clientId`"),
        (parse_register_guest_request, b'{"clientId": ""}', "Expected `str` of length >= 1"),
    ],
)
def test_invalid_requests_say_why_in_msgspecs_words(parse: Any, body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse(body)
    assert message in str(refused.value)


# ----------------------------------------------------------------------------- HTTP answers


def test_answers_on_the_wire() -> None:
    answer = TokenAnswer("a", "r", UserInfo("1", "ada"))
    assert msgspec.json.encode(answer) == (
        b'{"access_token":"a","refresh_token":"r","user":{"id":"1","username":"ada"}}'
    )
    assert msgspec.json.encode(GuestTokenAnswer("g")) == b'{"guestToken":"g"}'
    assert msgspec.json.encode(ErrorAnswer("busy")) == b'{"error":"busy"}'
    assert msgspec.json.encode(ErrorAnswer("invalid", "m")) == b'{"error":"invalid","message":"m"}'


TOKENS = {"access_token": "a", "refresh_token": "r"}


def test_login_answer() -> None:
    body = TOKENS | {"user": {"id": 7, "username": "ada\n"}}
    assert parse_login_answer(body) == ReceivedTokens("a", "r", "7", "ada\ufffd")


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "tokens",
        TOKENS,
        TOKENS | {"user": "ada"},
        TOKENS | {"user": {"id": 1}},
        {"access_token": "a", "user": {"id": 1, "username": "ada"}},
        TOKENS | {"refresh_token": "", "user": {"id": 1, "username": "ada"}},
        TOKENS | {"access_token": 5, "user": {"id": 1, "username": "ada"}},
    ],
)
def test_a_login_answer_without_tokens_and_user_is_refused(body: Any) -> None:
    with pytest.raises(ProtocolError, match=r"^the server's answer to the login had no tokens\.$"):
        parse_login_answer(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (TOKENS, ReceivedTokens("a", "r")),
        (TOKENS | {"user": {"id": 1, "username": "ada"}}, ReceivedTokens("a", "r", "1", "ada")),
        (TOKENS | {"user": {"id": None, "username": 5}}, ReceivedTokens("a", "r")),
        (TOKENS | {"user": "ada"}, ReceivedTokens("a", "r")),
    ],
)
def test_refresh_answer_needs_only_the_tokens(body: Any, expected: ReceivedTokens) -> None:
    assert parse_refresh_answer(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {},
        {"access_token": "a"},
        TOKENS | {"refresh_token": TOKEN + "t"},
        TOKENS | {"access_token": 1},
    ],
)
def test_a_refresh_answer_without_usable_tokens_is_refused(body: Any) -> None:
    with pytest.raises(ProtocolError, match=r"^the refresh answer had no usable tokens$"):
        parse_refresh_answer(body)


def test_logout_answer() -> None:
    assert parse_logout_answer({"guestToken": "g"}) == "g"
    assert parse_logout_answer({}) is None
    assert parse_logout_answer(None) is None
    assert parse_logout_answer(["g"]) is None
    for body in ({"guestToken": ""}, {"guestToken": 5}, {"guestToken": None}):
        with pytest.raises(ProtocolError, match="the logout answer's guestToken is not a token"):
            parse_logout_answer(body)
