"""Fuzzing the reference server with hypothesis: HTTP bodies and socket event payloads.

Four targets, each with a bounded budget (``max_examples`` and a deadline) so the module
runs in well under a minute on two shared cores:

1. The HTTP auth API, driven in-process through the real ASGI app (``server.app.build``)
   with hand-built ASGI scopes: random bytes, random JSON values, objects with random,
   missing and wrong-typed fields, strings around the body limit, bodies split over
   several ``http.request`` messages, and now and then the real credentials or a real
   refresh token. Every answer is a well-formed JSON error (400/401/413/429) or a
   success, never a 500, nothing is logged at ERROR (no traceback), and the app still
   serves a valid request afterwards. In-process runs about 4,600 requests/s here, the
   same requests over loopback HTTP to ``ServerProcess`` with aiohttp about 22/s (each
   keep-alive request waits ~42 ms), so in-process gets 200 times the examples in the
   budget; uvicorn's HTTP parser is not the target here.
2. Socket events, sent by a real python-socketio client to a real server process
   (``ServerProcess``, one per module and backend: SQLite and PostgreSQL): ``submit_log_chunk`` with random payloads and
   argument counts (``chunkId``s of its own and of other installations), ``ping`` with
   anything, unknown and reserved event names. Every ``submit_log_chunk`` is answered
   (guarded by a timeout) with ``{"ok": true, ...}`` or ``{"error": ...}``, never an
   internal error; the connection stays up; a valid chunk still works afterwards; and
   ``server dump`` holds exactly the chunks acked ok.
3. Handshakes of peers posing as installations they are not: any token (none, another
   installation's, garbage, badly signed) with any ``clientId`` (owned by someone, or new),
   then a chunk under either id. Exactly the owner's credentials get in, and no hostile
   text reaches another installation's chunks.
4. The server's readers in ``protocol``, directly: ``parse_*_request`` with any body,
   ``parse_submit_log_chunk``, ``parse_ping`` and ``parse_handshake`` with any arguments.
   Each answers a typed value of the protocol's shape or ``ProtocolError``, nothing else;
   every payload the server must accept parses.

Nothing waits by sleeping: every wait is for an answer, with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import tempfile
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from harness.protocol_client import ProtocolClient, authenticated_guest
from harness.server_process import ServerProcess
from protocol import (
    LOGIN_PATH,
    LOGOUT_PATH,
    REFRESH_PATH,
    REGISTER_GUEST_PATH,
    LoginRequest,
    LogoutRequest,
    ProtocolError,
    RefreshRequest,
    RegisterGuestRequest,
    SubmitLogChunk,
    parse_handshake,
    parse_login_request,
    parse_logout_request,
    parse_ping,
    parse_refresh_request,
    parse_register_guest_request,
    parse_submit_log_chunk,
)
from server.app import ServerConfig, build
from server.http_api import MAX_BODY_BYTES
from server.passwords import hash_password
from tests.support.asgi_request import Answer, asgi_request
from tests.support.cluster_parts import BACKENDS, new_database, postgres_engine

pytestmark = pytest.mark.timeout(120)

__all__ = ["postgres_engine"]  # a fixture of cluster_parts

T = TypeVar("T")

# A missing ack costs the emit timeout on every run, so the socket tests skip the phases
# that would re-run a hanging example hundreds of times: the explain phase always, and
# shrinking where an example is a single small event anyway.
NO_EXPLAIN = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)

# ----------------------------------------------------------------------------- strategies

# Text that includes lone surrogates: Python's json (python-socketio's serializer) writes
# them as \udXXX escapes and reads them back, so a server can receive them.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(any_text, children, max_size=5),
    ),
    max_leaves=20,
)

ENDPOINT_FIELDS: dict[str, tuple[str, ...]] = {
    LOGIN_PATH: (
        "identifier",
        "password",
        "hostname",
        "clientId",
        "guestToken",
        "refreshToken",
    ),
    REFRESH_PATH: ("refreshToken",),
    REGISTER_GUEST_PATH: ("clientId", "hostname"),
    LOGOUT_PATH: ("refreshToken", "clientId"),
}
ENDPOINTS = tuple(ENDPOINT_FIELDS)
USER, PASSWORD = "alice", "correct horse battery staple"
REFRESH_SLOTS = ("@refresh-1@", "@refresh-2@", "@refresh-3@")


def plausible_object(fields: tuple[str, ...], strings: st.SearchStrategy[str]) -> Any:
    """An object with some of ``fields`` (right type or any JSON value) and maybe extras."""
    value = st.one_of(strings, strings, json_values)
    return st.fixed_dictionaries({}, optional={name: value for name in fields}) | st.dictionaries(
        st.sampled_from(fields) | any_text, value, max_size=6
    )


# ----------------------------------------------------------------------------- helpers


@dataclass
class ErrorLog(logging.Handler):
    """Collects every record at ERROR or above, or with a traceback attached."""

    records: list[logging.LogRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, level=logging.DEBUG)

    def __hash__(self) -> int:
        return id(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("log_monitor_server")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(body)) for c in cuts})
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)] or [b""]


def check_answer(method: str, path: str, answer: Answer) -> Any:
    """The answer is a success or a well-formed JSON error; returns the decoded body."""
    if path not in ENDPOINTS:
        allowed = {404}
    elif method != "POST":
        allowed = {405}
    else:
        allowed = {200, 204, 400, 401, 409, 413, 429, 503}
    assert answer.status in allowed, (answer.status, answer.body[:300])
    assert answer.headers[b"content-type"] == b"application/json"
    assert answer.headers[b"content-length"] == str(len(answer.body)).encode()
    if answer.status == 204:
        assert answer.body == b""
        return None
    decoded = json.loads(answer.body)
    assert isinstance(decoded, dict)
    if answer.status >= 400:
        assert isinstance(decoded.get("error"), str), decoded
    if answer.status == 429:
        assert answer.headers[b"retry-after"].isdigit()
    return decoded


class Loop:
    """One event loop a synchronous hypothesis test runs its examples on."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Awaitable[T], timeout: float = 20.0) -> T:
        async def guarded() -> T:
            return await asyncio.wait_for(coroutine, timeout)

        return self.loop.run_until_complete(guarded())

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


# ----------------------------------------------------------------------------- HTTP


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(method, path, body): mostly POSTs of hostile bodies to the four auth endpoints.

    ``REFRESH_SLOTS`` stand for refresh tokens the server issued earlier in the run; the
    test puts the real ones in (the strategy itself must not depend on the run)."""
    path = draw(st.sampled_from([*ENDPOINTS * 6, "/api/auth/", "/api/nope", "/"]))
    method = draw(st.sampled_from(["POST"] * 12 + ["GET", "PUT", "DELETE"]))
    fields = ENDPOINT_FIELDS.get(path, ("x",))
    # "alice" only ever comes with her password (below), so the throttle, which "mallory"
    # soon trips, never locks out the logins that issue refresh tokens.
    known = ["mallory", PASSWORD, *REFRESH_SLOTS]
    strings = any_text | st.sampled_from(known)
    kind = draw(st.integers(0, 7))
    if kind == 0:
        body = draw(st.binary(max_size=200))
    elif kind == 1:
        body = json.dumps(draw(json_values)).encode()
    elif kind == 2:
        # Around the body limit: just under (read whole), just over (413).
        size = draw(st.integers(MAX_BODY_BYTES - 64, MAX_BODY_BYTES + 64))
        name = draw(st.sampled_from(fields))
        body = json.dumps({name: "x" * size}).encode()
    elif kind == 3:
        body = draw(st.binary(min_size=MAX_BODY_BYTES - 2, max_size=MAX_BODY_BYTES + 2))
    elif kind <= 5:
        body = json.dumps(draw(plausible_object(fields, strings))).encode()
    else:
        # Well formed, often with the real credentials or a refresh token issued earlier.
        likely = st.sampled_from(known) | strings
        request = {name: draw(likely) for name in fields}
        if path == "/api/auth/login" and draw(st.booleans()):
            request |= {"identifier": USER, "password": PASSWORD}
        body = json.dumps(request).encode()
    return method, path, body


def test_http_auth_bodies_never_fail_the_server(tmp_path: Path, server_errors: ErrorLog) -> None:
    app = build(ServerConfig(data_dir=tmp_path / "server", login_attempts_per_minute=3))
    app.store.database.add_user(USER, hash_password(PASSWORD))
    refresh_tokens: list[str] = []
    statuses: dict[int, int] = {}
    loop = Loop()

    @settings(
        max_examples=1200,
        deadline=timedelta(seconds=5),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(
        request=http_requests(),
        cuts=st.lists(st.integers(0, 2 * MAX_BODY_BYTES), max_size=3),
        content_length=st.booleans(),
    )
    def fuzz(request: tuple[str, str, bytes], cuts: list[int], content_length: bool) -> None:
        method, path, body = request
        for age, slot in enumerate(REFRESH_SLOTS, start=1):
            token = refresh_tokens[-age] if len(refresh_tokens) >= age else "not.a.token"
            body = body.replace(slot.encode(), token.encode())
        answer = loop.run(asgi_request(app, method, path, split(body, cuts), content_length))
        decoded = check_answer(method, path, answer)
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        if answer.status == 200 and isinstance(decoded, dict) and "refresh_token" in decoded:
            refresh_tokens.append(decoded["refresh_token"])
        assert not server_errors.records, server_errors.records[0].getMessage()

    try:
        fuzz()
        # Still serving: a health probe and a valid guest registration.
        health = loop.run(asgi_request(app, "GET", "/api/health", []))
        assert (health.status, json.loads(health.body)) == (200, {"ok": True})
        body = json.dumps({"clientId": str(uuid.uuid4()), "hostname": "h"}).encode()
        guest = loop.run(asgi_request(app, "POST", "/api/auth/register-guest", [body]))
        assert guest.status == 200
        assert isinstance(json.loads(guest.body)["guestToken"], str)
    finally:
        loop.run(asyncio.to_thread(app.store.close))
        loop.close()
    # The run reached the interesting answers (each comes dozens of times in a run), not
    # only the 400s, and refreshed with tokens the server had issued.
    assert {200, 204, 400, 401, 409, 413, 429}.issubset(statuses), statuses
    assert refresh_tokens
    assert not server_errors.records


# ----------------------------------------------------------------------------- socket


@pytest.fixture(scope="module", params=BACKENDS)
def socket_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One server per backend: the socket fuzzers run on SQLite and on PostgreSQL (whose
    ``text`` cannot hold U+0000, and whose binding and dedup are their own code)."""
    database = None
    if request.param == "postgresql":
        database = new_database(request.getfixturevalue("postgres_engine"))
    with tempfile.TemporaryDirectory(prefix="fuzz-server-") as directory:
        server = ServerProcess(
            Path(directory) / "server", "--max-chunk-bytes", "4096", database=database
        ).start()
        try:
            yield server
        finally:
            server.stop()
            log = server.log_text()
            assert "Traceback" not in log, log[-3000:]


class SocketSession:
    """A guest connection to the module's server, on a loop the examples share."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.loop = Loop()
        self.client: ProtocolClient = self.loop.run(authenticated_guest(server.url))

    def emit(self, event: str, args: list[Any], timeout: float = 3.0) -> Any:
        """Emit ``event`` with ``args`` as its arguments and wait for the ack.

        An ack takes milliseconds; the short timeout makes a missing one a quick failure
        (and keeps shrinking a hang affordable)."""

        async def go() -> Any:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[Any] = loop.create_future()

            def on_ack(*ack: Any) -> None:
                if not future.done():
                    future.set_result(list(ack))

            # python-socketio sends a tuple as its items, one argument each; a bare None
            # would be sent as no argument at all.
            await self.client.sio.emit(event, tuple(args), namespace="/client", callback=on_ack)
            return await asyncio.wait_for(future, timeout)

        return self.loop.run(go(), timeout + 5)

    def stats(self) -> dict[str, int]:
        async def go() -> dict[str, int]:
            async with (
                aiohttp.ClientSession() as http,
                http.get(self.server.url + "/api/stats") as response,
            ):
                assert response.status == 200
                result: dict[str, int] = await response.json()
                return result

        return self.loop.run(go())

    def close(self) -> None:
        self.loop.run(self.client.close())
        self.loop.close()


@pytest.fixture
def session(socket_server: ServerProcess) -> Iterator[SocketSession]:
    session = SocketSession(socket_server)
    try:
        yield session
    finally:
        session.close()


# Integers of the right type, including the edges of SQLite's signed 64-bit INTEGER.
wire_ints = (
    st.integers(-10, 10**4)
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30])
)


@st.composite
def chunk_payloads(draw: st.DrawFn, client_id: str) -> Any:
    """``submit_log_chunk`` payloads: every field of the right type (at odd values), then
    up to two fields replaced by any JSON value or dropped; now and then any JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    fields: dict[str, st.SearchStrategy[Any]] = {
        "clientId": st.sampled_from([client_id] * 9 + [str(uuid.uuid4())]),
        "chunk": any_text
        | st.builds(lambda n, c: c * n, st.integers(1300, 4200), st.sampled_from("yé€")),
        # A small alphabet, so chunk ids repeat and duplicates are exercised; now and then
        # another installation's prefix, or none, which must be refused.
        "chunkId": st.text("ab", max_size=4).map(lambda t: f"{client_id}:{t}")
        | st.text("ab", max_size=4).map(lambda t: f"{uuid.uuid4()}:{t}")
        | st.sampled_from([client_id, f"{client_id}x:1", f":{client_id}:1"])
        | any_text
        | st.none(),
        "seq": wire_ints | st.none(),
        "source": st.fixed_dictionaries({"path": any_text, "offset": wire_ints}) | st.none(),
        "sentAt": wire_ints | st.none(),
    }
    payload: dict[str, Any] = {}
    for name, strategy in fields.items():
        value = draw(strategy)
        if value is not None or draw(st.booleans()):
            payload[name] = value
    for name in draw(st.lists(st.sampled_from([*fields, "extra"]), max_size=2)):
        if draw(st.booleans()):
            payload[name] = draw(json_values)
        else:
            payload.pop(name, None)
    return payload


def is_valid_chunk(payload: Any, client_id: str, limit: int) -> bool:
    """What the server must accept: the protocol's shape, in range, storable text."""

    def text(value: Any) -> bool:
        try:
            value.encode("utf-8")
        except (AttributeError, UnicodeEncodeError):
            return False
        return isinstance(value, str)

    def int64(value: Any) -> bool:
        return type(value) is int and -(2**63) <= value < 2**63

    if not isinstance(payload, dict) or payload.get("clientId") != client_id:
        return False
    if not text(payload.get("chunk")) or len(payload["chunk"].encode()) > limit:
        return False
    chunk_id = payload.get("chunkId")
    if chunk_id is not None and not (text(chunk_id) and chunk_id.startswith(f"{client_id}:")):
        return False
    for name in ("seq", "sentAt"):
        if payload.get(name) is not None and not int64(payload[name]):
            return False
    source = payload.get("source")
    if source is not None:
        if not isinstance(source, dict) or not text(source.get("path")):
            return False
        if not int64(source.get("offset")):
            return False
    return True


@dataclass
class Accepted:
    chunk_id: str | None
    seq: int | None
    text: str


def test_submit_log_chunk_payloads_are_always_answered(session: SocketSession) -> None:
    client_id = session.client.client_id
    before = session.stats()
    accepted: list[Accepted] = []
    seen_chunk_ids: set[str] = set()

    @settings(
        max_examples=800,
        deadline=timedelta(seconds=5),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
        phases=NO_EXPLAIN,
    )
    @given(
        payload=chunk_payloads(client_id),
        extra_args=st.lists(json_values, max_size=2),
        no_args=st.integers(0, 30),
    )
    # A lone surrogate (the Socket.IO parser lets one through) as a key and as a value.
    @example(payload={"\ud800": None}, extra_args=[], no_args=1)
    @example(payload={"clientId": "\udfff"}, extra_args=[], no_args=1)
    def fuzz(payload: Any, extra_args: list[Any], no_args: int) -> None:
        args = [] if no_args == 0 else [payload, *extra_args]
        (ack,) = session.emit("submit_log_chunk", args)
        assert isinstance(ack, dict), ack
        valid = len(args) == 1 and is_valid_chunk(payload, client_id, 4096)
        if not valid:
            assert ack.get("error") in ("invalid", "too_large"), (args, ack)
            return
        chunk_id = payload.get("chunkId")
        duplicate = chunk_id is not None and chunk_id in seen_chunk_ids
        expected: dict[str, Any] = {"ok": True}
        if chunk_id is not None:
            expected["chunkId"] = chunk_id
            seen_chunk_ids.add(chunk_id)
        if duplicate:
            expected["duplicate"] = True
        assert ack == expected, (payload, ack)
        if not duplicate:
            accepted.append(Accepted(chunk_id, payload.get("seq"), payload["chunk"]))

    fuzz()
    # The connection is still up and a valid chunk still works.
    assert session.client.sio.connected
    (ack,) = session.emit("submit_log_chunk", [session.client.chunk("after the storm\n", 10**5)])
    assert ack == {"ok": True, "chunkId": f"{client_id}:100000"}
    accepted.append(Accepted(f"{client_id}:100000", 10**5, "after the storm\n"))

    after = session.stats()
    assert after["internal_errors"] == before["internal_errors"]
    # The store holds exactly the chunks acked ok (not as duplicates), in dump's order:
    # by seq, chunks without one last, ties in the order they were stored.
    result = session.server.run_cli("dump", "--client-id", client_id, "--json")
    assert result.returncode == 0, result.stderr
    dumped = [json.loads(line) for line in result.stdout.splitlines()]
    order = sorted(
        range(len(accepted)),
        key=lambda i: (accepted[i].seq is None, accepted[i].seq or 0, i),
    )
    expected_rows = [(accepted[i].chunk_id, accepted[i].seq, accepted[i].text) for i in order]
    assert [(row["chunkId"], row["seq"], row["chunk"]) for row in dumped] == expected_rows


RESERVED_OR_KNOWN = ["connect", "disconnect", "connect_error", "ping", "message", "*", ""]


def test_ping_and_unknown_events_are_answered(session: SocketSession) -> None:
    before = session.stats()
    unknown = 0

    @settings(
        max_examples=400,
        deadline=timedelta(seconds=5),
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
        phases=NO_SHRINK,
    )
    @given(
        event=st.sampled_from(["ping"] * 4 + RESERVED_OR_KNOWN) | any_text,
        args=st.lists(json_values, max_size=3),
    )
    @example(event="ping", args=[{"\ud800": 1}])
    def fuzz(event: str, args: list[Any]) -> None:
        nonlocal unknown
        if event == "submit_log_chunk":
            return  # the target of the test above
        ack = session.emit(event, args)
        if event == "ping":
            # The ping handler answers with a pong event, not an ack.
            assert ack == []
            return
        unknown += 1
        assert ack == [{"error": "unknown_event"}], (event, args, ack)

    fuzz()
    assert session.client.sio.connected
    after = session.stats()
    assert after["unknown_events"] - before["unknown_events"] == unknown
    assert after["internal_errors"] == before["internal_errors"]
    # Pongs arrived for the pings (drain them), and the connection still takes chunks.
    (ack,) = session.emit("submit_log_chunk", [session.client.chunk("still here\n", 1)])
    assert ack.get("ok") is True


def test_reserved_event_names_from_a_client_change_nothing(session: SocketSession) -> None:
    """A client emitting ``connect`` or ``disconnect`` as an ordinary event."""
    before = session.stats()

    @settings(max_examples=40, deadline=timedelta(seconds=5), database=None, phases=NO_SHRINK)
    @given(
        event=st.sampled_from(["connect", "disconnect"]),
        args=st.lists(json_values, max_size=3),
    )
    def fuzz(event: str, args: list[Any]) -> None:
        ack = session.emit(event, args)
        assert ack == [{"error": "unknown_event"}], (event, args, ack)
        # Still authenticated: a valid chunk is taken.
        (chunk_ack,) = session.emit(
            "submit_log_chunk", [session.client.chunk("x\n", 7, chunkId=None)]
        )
        assert chunk_ack == {"ok": True}, chunk_ack

    fuzz()
    assert session.client.sio.connected
    assert session.stats()["internal_errors"] == before["internal_errors"]


# ----------------------------------------------------------------------------- spoofing


@dataclass
class Installation:
    client_id: str
    token: str


HOSTILE_TEXT = "hostile\n"


def test_peers_posing_as_other_installations_are_refused(socket_server: ServerProcess) -> None:
    loop = Loop()

    async def installation() -> Installation:
        client = await authenticated_guest(socket_server.url)
        assert client.token is not None
        await client.close()
        return Installation(client.client_id, client.token)

    a, b = loop.run(installation()), loop.run(installation())
    forged = jwt.encode({"typ": "guest", "sub": str(uuid.uuid4())}, b"x" * 64, algorithm="HS256")
    tokens: dict[str, str | None] = {
        "none": None,
        "a": a.token,
        "b": b.token,
        "garbage": "not.a.token",
        "forged": forged,
    }
    owners = {"a": a, "b": b}

    @settings(max_examples=60, deadline=timedelta(seconds=10), database=None, phases=NO_SHRINK)
    @given(
        token_of=st.sampled_from(sorted(tokens)),
        id_of=st.sampled_from(["a", "b", "new"]),
        chunk_id_of=st.sampled_from(["a", "b", "own"]),
    )
    def fuzz(token_of: str, id_of: str, chunk_id_of: str) -> None:
        client_id = owners[id_of].client_id if id_of in owners else str(uuid.uuid4())
        if token_of in owners and token_of == id_of:
            expected: tuple[str, Any] = ("authenticated", "guest")
        elif token_of == "none":
            expected = ("guestToken", None) if id_of == "new" else ("retry_auth", "client_id_taken")
        elif token_of in owners:
            expected = ("retry_auth", "client_mismatch")
        else:
            reason = "invalid_signature" if token_of == "forged" else "invalid_token"
            expected = ("retry_auth", reason)
        prefix = client_id if chunk_id_of == "own" else owners[chunk_id_of].client_id

        async def attempt() -> tuple[tuple[str, Any], Any]:
            client = await ProtocolClient(socket_server.url, client_id, tokens[token_of]).connect()
            try:
                event, data = await client.next_event()
                said = data.get("identity" if event == "authenticated" else "reason")
                text = HOSTILE_TEXT if expected[0] != "authenticated" else "owner\n"
                payload = {"clientId": client_id, "chunk": text, "chunkId": f"{prefix}:9"}
                return (event, said), await client.submit(payload)
            finally:
                await client.close()

        said, ack = loop.run(attempt())
        assert said == expected, (token_of, id_of, said)
        if expected[0] != "authenticated":
            assert ack == {"error": "unauthenticated"}, ack
        elif prefix != client_id:
            assert ack["error"] == "invalid", ack
        else:
            assert ack.get("ok") is True, ack

    try:
        fuzz()
    finally:
        loop.close()
    for owner in owners.values():
        assert HOSTILE_TEXT.encode() not in socket_server.dump(owner.client_id)


# ----------------------------------------------------------------------------- 4. parsers

REQUEST_PARSERS: dict[str, tuple[Any, type[Any]]] = {
    LOGIN_PATH: (parse_login_request, LoginRequest),
    REFRESH_PATH: (parse_refresh_request, RefreshRequest),
    REGISTER_GUEST_PATH: (parse_register_guest_request, RegisterGuestRequest),
    LOGOUT_PATH: (parse_logout_request, LogoutRequest),
}


# Fewer examples than the others: a quarter of these bodies are around the 64 KiB limit.
@settings(max_examples=150, deadline=timedelta(seconds=2), database=None)
@given(request=http_requests())
def test_request_parsers_answer_any_body_or_say_why(request: tuple[str, str, bytes]) -> None:
    _, path, body = request
    parse, request_type = REQUEST_PARSERS.get(path, REQUEST_PARSERS[LOGIN_PATH])
    problem: str | None = None
    try:
        parsed = parse(body)
    except ProtocolError as exc:
        problem = str(exc)
    else:
        assert isinstance(parsed, request_type)
    assert problem != "", "a refusal says why"


@settings(max_examples=400, deadline=timedelta(seconds=2), database=None)
@given(
    client_id=st.sampled_from(["6f1c0d6e-0000-4000-8000-000000000001"]),
    data=st.data(),
    extra=st.lists(json_values, max_size=2),
)
def test_chunk_parser_accepts_every_valid_chunk_and_says_why_otherwise(
    client_id: str, data: st.DataObject, extra: list[Any]
) -> None:
    payload = data.draw(chunk_payloads(client_id))
    args = (payload, *extra)
    problem: str | None = None
    try:
        chunk = parse_submit_log_chunk(args)
    except ProtocolError as exc:
        problem = str(exc)
    if problem is not None:
        assert problem, "a refusal says why"
        assert extra or not is_valid_chunk(payload, client_id, 2**40)
        return
    assert not extra
    assert isinstance(chunk, SubmitLogChunk)
    assert isinstance(chunk.clientId, str)
    assert isinstance(chunk.chunk, str)
    for number in (chunk.seq, chunk.sentAt, chunk.source.offset if chunk.source else None):
        assert number is None or (type(number) is int and -(2**63) <= number < 2**63)


@settings(max_examples=300, deadline=timedelta(seconds=2), database=None)
@given(args=st.lists(json_values | st.fixed_dictionaries({"timestamp": json_values}), max_size=2))
def test_ping_parser_keeps_only_json_numbers_in_range(args: list[Any]) -> None:
    try:
        timestamp = parse_ping(tuple(args)).timestamp
    except ProtocolError:
        return
    assert timestamp is None or (
        type(timestamp) in (int, float) and abs(timestamp) <= 2**53 and timestamp == timestamp
    )


@settings(max_examples=300, deadline=timedelta(seconds=2), database=None)
@given(
    query=any_text | st.sampled_from(["clientId=a&hostname=h", "clientId=&clientId=b", "x"]),
    auth=json_values | st.fixed_dictionaries({"token": json_values}),
)
def test_handshake_parser_reads_anything(query: str, auth: Any) -> None:
    handshake = parse_handshake(query, auth)
    assert handshake.client_id is None or isinstance(handshake.client_id, str)
    assert isinstance(handshake.hostname, str)
    assert handshake.token is None or isinstance(handshake.token, str)


# ----------------------------------------------------------------------------- regressions
# Examples the fuzzers above found, kept as plain tests.


async def event_ack(client: ProtocolClient, event: str, *args: Any) -> list[Any]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[Any]] = loop.create_future()

    def on_ack(*ack: Any) -> None:
        if not future.done():
            future.set_result(list(ack))

    await client.sio.emit(event, args, namespace="/client", callback=on_ack)
    return await asyncio.wait_for(future, 10)


async def test_out_of_range_integers_and_lone_surrogates_are_invalid_chunks(
    socket_server: ServerProcess,
) -> None:
    """Found by the submit_log_chunk fuzzer: ``sentAt: 2**63`` passed validation, made
    SQLite raise OverflowError and was answered ``server_error`` (which a client retries
    forever) with a traceback in the log. A lone surrogate in ``chunkId`` or
    ``source.path`` did the same with UnicodeEncodeError."""
    client = await authenticated_guest(socket_server.url)
    try:
        for extra in (
            {"sentAt": 2**63},
            {"seq": -(2**63) - 1},
            {"source": {"path": "/var/log/x.log", "offset": 2**64}},
            {"chunkId": "\ud800"},
            {"source": {"path": "\udfff", "offset": 0}},
        ):
            ack = await client.submit({"clientId": client.client_id, "chunk": "x\n", **extra})
            assert ack["error"] == "invalid", (extra, ack)
        edge = {"seq": 2**63 - 1, "sentAt": -(2**63), "chunkId": f"{client.client_id}:edge"}
        ack = await client.submit({"clientId": client.client_id, "chunk": "edge\n", **edge})
        assert ack == {"ok": True, "chunkId": f"{client.client_id}:edge"}
    finally:
        await client.close()
    log = socket_server.log_text()
    assert "Traceback" not in log
    assert "submit_log_chunk from" not in log


async def test_events_named_connect_disconnect_or_star_are_unknown_events(
    socket_server: ServerProcess,
) -> None:
    """Found by the event fuzzer: python-socketio hands an ordinary event named
    ``connect``, ``disconnect`` or ``*`` to the handler registered under that name. The
    server re-ran its handshake (traceback and no ack without a dict argument; with one,
    the connection lost its identity), forgot the connection on ``disconnect`` (every
    later chunk ``unauthenticated``), and raised TypeError for ``*`` without arguments."""
    client = await authenticated_guest(socket_server.url)
    try:
        for event, args in (
            ("connect", ()),
            ("connect", (1,)),
            ("connect", ({},)),
            ("connect", ({"QUERY_STRING": "clientId=x"}, {"token": "t"})),
            ("disconnect", ()),
            ("disconnect", ("client namespace disconnect",)),
            ("*", ()),
            ("*", (1, 2)),
        ):
            assert await event_ack(client, event, *args) == [{"error": "unknown_event"}], event
            ack = await client.submit(client.chunk(f"{event}\n", len(event), chunkId=None))
            assert ack == {"ok": True}, (event, args, ack)
        assert client.sio.connected
        assert client.events.empty(), "the server answered with a handshake event"
    finally:
        await client.close()
    assert "Traceback" not in socket_server.log_text()
