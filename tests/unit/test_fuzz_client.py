"""Fuzzing what a server sends the client, with hypothesis: event payloads, acks, refreshes.

The client reads what arrives from a server with ``protocol``'s ``parse_*`` functions,
and turns it into state-machine events in ``main_process/connection/socket_attempt.py`` (the
Socket.IO handlers of a ``SocketAttempt``: ``authenticated``, ``guestToken``,
``retry_auth``, ``pong``, ``processed_event``, ``connect_error``, the catch-all, and the
ack callback of ``send_chunk``) and in ``auth_client.refresh_tokens`` (the HTTP refresh
answer). The targets, each with a bounded budget:

1. The client's ``parse_*`` functions with any JSON value: a typed value or
   ``ProtocolError``, nothing else; ``parse_connect_error`` and ``is_auth_error`` always
   answer.
2. The handlers and the ack callback of real ``SocketAttempt``s (their Socket.IO clients
   replaced by recorders), fed random event names and argument lists; every event they
   produce is fed to a ``ConnectionState`` on a fake clock, interleaved with time
   passing, new chunks and refresh answers. Nothing raises,
   the status is one of the four states, at most ``window`` chunks are in flight, and an
   in-flight chunk is still in the spool. A hostile server's words stay bounded: every
   string an event carries is cut (a 560 KB user name included), ``identity: "user"`` is
   believed only on a socket that presented a user token, and ``client_id_taken`` makes
   a new installation id at most once per authenticated connection.
3. ``refresh_tokens`` with any HTTP status and any body: one ``Refresh*`` event, with
   tokens only when the body had them as strings.
4. End to end: a tiny python-socketio server emits random events and acks random shapes
   at a real ``ServerConnection``; it stays connected on its first socket, counts every
   unknown event and malformed payload, and delivers every chunk once acks turn valid.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
import pytest
import socketio
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.waiting import wait_until_async
from main_process.connection.auth_client import refresh_tokens
from main_process.connection.backoff import BackoffPolicy
from main_process.connection.credential_saves import ClientIdInMemory, ConnectionCredentials
from main_process.connection.server_connection import ServerConnection
from main_process.connection.socket_attempt import SocketAttempt
from main_process.connection.state import (
    MAX_MESSAGE_CHARS,
    MAX_NAME_CHARS,
    AcknowledgeChunk,
    AckReceived,
    Action,
    Authenticated,
    ChunksAppended,
    ChunksLoaded,
    ClientIdRenewed,
    ConnectFailed,
    ConnectionConfig,
    ConnectionState,
    ConnectRequested,
    DeadLetterChunk,
    Event,
    GuestTokenReceived,
    LoadChunks,
    MalformedPayload,
    OpenSocket,
    PersistTokens,
    RefreshFailed,
    RefreshRefused,
    RefreshSucceeded,
    RefreshTokens,
    RenewClientId,
    RetryAuthRequested,
    SendChunk,
    ServerActivity,
    SocketConnected,
    SocketDisconnected,
    TokensSaved,
    UnknownServerEvent,
    is_auth_error,
)
from main_process.credentials import Tokens
from protocol import (
    MAX_TOKEN_CHARS,
    ChunkRefused,
    ProtocolError,
    parse_authenticated,
    parse_chunk_ack,
    parse_connect_error,
    parse_guest_token,
    parse_login_answer,
    parse_logout_answer,
    parse_processed_event,
    parse_refresh_answer,
    parse_retry_auth,
)
from tests.support.connection_fakes import MemorySpool, MemoryTokenStore

pytestmark = pytest.mark.timeout(120)

# ----------------------------------------------------------------------------- strategies

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)
ACK_CODES = ["unauthenticated", "too_large", "invalid", "server_error", "", "ok"]
# Shaped like the protocol's payloads, with random values, so the handlers' checks are
# exercised beyond "not a dict".
shaped_payloads = st.fixed_dictionaries(
    {},
    optional={
        "identity": st.sampled_from(["user", "guest", "admin"]) | json_values,
        "username": any_text | json_values,
        "token": st.sampled_from(["", "tok"]) | json_values,
        "reason": st.sampled_from(["client_id_taken", "client_mismatch", "token_expired"])
        | any_text
        | json_values,
        "timestamp": json_values,
        "error": st.sampled_from(ACK_CODES) | json_values,
        "message": any_text | json_values,
        "ok": json_values,
    },
)
payloads = shaped_payloads | json_values
argument_lists = st.lists(payloads, max_size=3)
# Strings a hostile server sends to hurt, long enough to flood a log line or a window
# (handed to the handlers directly: over a socket, megabytes of them would only test the
# transport's message limit).
long_text = st.sampled_from([200, 5000, 560_000]).map(lambda n: "é\n" * (n // 2))
hostile_payloads = st.fixed_dictionaries(
    {},
    optional={
        "identity": st.sampled_from(["user", "guest"]),
        "username": long_text,
        "token": st.sampled_from(["t" * 8193, "t" * 100_000]),
        "reason": long_text,
        "error": long_text,
        "message": long_text,
    },
)
hostile_argument_lists = st.lists(payloads | hostile_payloads, max_size=3)
SERVER_EVENTS = ["authenticated", "guestToken", "retry_auth", "pong", "processed_event"]
RESERVED = ["connect", "connect_error", "disconnect", "__disconnect_final"]
event_names = st.sampled_from(SERVER_EVENTS * 3 + RESERVED) | any_text

SOCKET_EVENTS = (
    SocketConnected,
    SocketDisconnected,
    Authenticated,
    GuestTokenReceived,
    RetryAuthRequested,
    ServerActivity,
    UnknownServerEvent,
    MalformedPayload,
    AckReceived,
)
STATES = {"disconnected", "connecting", "connected", "error"}


# ----------------------------------------------------------------------------- 1. pure parsers


def ack_error(payload: Any) -> str | None:
    """The error code an ack carries, ``None`` when it means delivered."""
    ack = parse_chunk_ack(payload)
    return ack.error if isinstance(ack, ChunkRefused) else None


@settings(max_examples=1000, deadline=timedelta(seconds=2), database=None)
@given(payload=payloads)
def test_chunk_ack_of_any_json_value(payload: Any) -> None:
    ack = parse_chunk_ack(payload)
    has_error = isinstance(payload, dict) and payload.get("error") is not None
    assert isinstance(ack, ChunkRefused) == has_error
    if isinstance(ack, ChunkRefused):
        assert bounded(ack.error, 100)
        assert ack.message is None or bounded(ack.message, MAX_MESSAGE_CHARS)


@settings(max_examples=500, deadline=timedelta(seconds=2), database=None)
@given(payload=payloads)
def test_connect_error_message_of_any_json_value(payload: Any) -> None:
    message = parse_connect_error(payload)
    assert bounded(message, MAX_MESSAGE_CHARS)
    assert isinstance(is_auth_error(message), bool)


CLIENT_PARSERS: list[Callable[[Any], object]] = [
    parse_authenticated,
    parse_guest_token,
    parse_retry_auth,
    parse_processed_event,
    parse_refresh_answer,
    parse_login_answer,
    parse_logout_answer,
]
token_answers = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.just("a-9") | json_values,
        "refresh_token": st.just("r-9") | json_values,
        "user": st.fixed_dictionaries({}, optional={"id": json_values, "username": json_values})
        | json_values,
        "guestToken": st.sampled_from(["", "g", "g" * 8193]) | json_values,
    },
)


@pytest.mark.parametrize("parse", CLIENT_PARSERS, ids=lambda parse: parse.__name__)
@settings(max_examples=300, deadline=timedelta(seconds=2), database=None)
@given(payload=payloads | hostile_payloads | token_answers)
def test_client_parsers_answer_any_json_value_or_say_why(
    parse: Callable[[Any], object], payload: Any
) -> None:
    try:
        parsed = parse(payload)
    except ProtocolError as exc:
        problem = str(exc)
        parsed = None
    else:
        problem = "parsed"
    assert problem  # a refusal says why
    # Whatever a parser keeps is bounded: a token, or a name or reason cut short.
    kept = msgspec.structs.asdict(parsed) if isinstance(parsed, msgspec.Struct) else {}
    assert all(len(v) <= MAX_TOKEN_CHARS for v in kept.values() if isinstance(v, str))


# ----------------------------------------------------------------------------- fakes


class RecordingSocket:
    """Stands in for ``socketio.AsyncClient``: keeps the handlers and the ack callbacks."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[..., None]] = {}
        self.callbacks: list[Callable[..., None]] = []

    def on(self, event: str, handler: Callable[..., None], namespace: str | None = None) -> None:
        self.handlers[event] = handler

    async def emit(
        self,
        event: str,
        data: Any = None,
        namespace: str | None = None,
        callback: Callable[..., None] | None = None,
    ) -> None:
        if callback is not None:
            self.callbacks.append(callback)

    def deliver(self, event: str, args: list[Any]) -> None:
        """Call the handler as python-socketio's client does for an incoming event."""
        if event in self.handlers:
            self.handlers[event](*args)
        elif event not in socketio.AsyncClient.reserved_events and "*" in self.handlers:
            self.handlers["*"](event, *args)


# ----------------------------------------------------------------------------- 2. handlers + machine


def bounded(text: str, limit: int) -> bool:
    """A server's string as the client keeps it: cut to ``limit`` (plus an ellipsis), with
    no control characters."""
    return isinstance(text, str) and len(text) <= limit + 1 and text.isprintable()


class Harness:
    """The shell's part, played by hand: real handlers, a machine on a fake clock."""

    def __init__(self, tokens: Tokens, chunk_count: int) -> None:
        self.now = 1000.0
        self.spool = MemorySpool()
        for i in range(chunk_count):
            self.spool.append(f"line {i}\n")
        self.config = ConnectionConfig(
            window=3, backoff=BackoffPolicy(base=0.5, factor=2.0, cap=4.0, reset_after=5.0)
        )
        self.credentials = ConnectionCredentials(
            MemoryTokenStore(tokens), ClientIdInMemory(), "fuzz-client"
        )
        # No driver: events the handlers feed are taken off this queue and handed to
        # ``machine`` by the harness.
        self.queue = asyncio.Queue[Event]()
        self.machine = ConnectionState(self.config, tokens, random_source=lambda: 0.5)
        self.sockets: dict[int, RecordingSocket] = {}
        self.attempts: dict[int, SocketAttempt] = {}
        self.refreshes: list[int] = []
        self.produced = 0
        self.renewals = 0
        self.authentications = 0
        self.opened: list[OpenSocket] = []

    async def feed(self, event: Event) -> None:
        await self.execute(self.machine.handle(event, self.now))

    async def tick(self, seconds: float) -> None:
        self.now += seconds
        await self.execute(self.machine.tick(self.now))

    async def execute(self, actions: list[Action]) -> None:
        for action in actions:
            self.check()
            match action:
                case OpenSocket():
                    self.opened.append(action)
                    socket = RecordingSocket()
                    attempt = SocketAttempt(
                        action.epoch, socket, "/client", self.queue.put_nowait, lambda _: None
                    )
                    self.sockets[action.epoch] = socket
                    self.attempts[action.epoch] = attempt
                case LoadChunks():
                    chunks = self.spool.pending(action.after_seq, action.limit)
                    more = self.machine.handle(ChunksLoaded(action.epoch, chunks), self.now)
                    await self.execute(more)
                case SendChunk():
                    await self.attempts[action.epoch].send_chunk(
                        self.credentials.client_id, action.chunk, 0
                    )
                case AcknowledgeChunk():
                    self.spool.acknowledge_many([action.seq])
                case DeadLetterChunk():
                    self.spool.dead_letter(action.seq, action.code, action.message or "")
                case RefreshTokens():
                    self.refreshes.append(action.request_id)
                case PersistTokens():
                    # The token file takes the save; the machine goes on once told so.
                    await self.execute(self.machine.handle(TokensSaved(action.tokens), self.now))
                case RenewClientId():
                    # A hostile server must not make the client churn ids: at most one new
                    # id before each authenticated connection.
                    self.renewals += 1
                    assert self.renewals <= self.authentications + 1
                    renewed = self.credentials.renew_client_id()
                    assert isinstance(renewed, ClientIdRenewed)
                    await self.execute(self.machine.handle(renewed, self.now))
                case _:
                    pass
        self.check()

    async def drain(self) -> None:
        """Hand every event the handlers produced to the machine, checking each."""
        while not self.queue.empty():
            event = self.queue.get_nowait()
            self.produced += 1
            assert isinstance(event, SOCKET_EVENTS), event
            assert event.epoch in self.attempts
            match event:
                case Authenticated():
                    assert event.identity in (None, "user", "guest")
                    assert event.username is None or bounded(event.username, MAX_NAME_CHARS)
                    if event.epoch == self.machine.live_epoch:
                        self.authentications += 1
                case GuestTokenReceived():
                    assert isinstance(event.token, str)
                    assert 0 < len(event.token) <= 8192
                case RetryAuthRequested():
                    assert event.reason is None or bounded(event.reason, MAX_MESSAGE_CHARS)
                case AckReceived():
                    assert event.error is None or bounded(event.error, MAX_MESSAGE_CHARS)
                    assert event.message is None or bounded(event.message, MAX_MESSAGE_CHARS)
                case _:
                    pass
            await self.feed(event)

    def check(self) -> None:
        status = self.machine.status(self.now)
        assert status.state in STATES
        assert status.username is None or bounded(status.username, MAX_NAME_CHARS)
        if status.identity == "user":
            live = self.machine.live_epoch
            opened = [a for a in self.opened if a.epoch == live]
            assert opened, "connected as a user on a socket never opened"
            assert opened[0].credential == "user", "a server made a guest socket a user"
        assert status.attempt >= 0
        assert status.next_retry_ms is None or status.next_retry_ms >= 0
        in_flight = self.machine.in_flight_seqs
        assert len(in_flight) <= self.config.window
        assert set(in_flight) <= set(self.spool.chunks)
        deadline = self.machine.next_deadline()
        assert deadline is None or deadline == deadline  # never NaN

    def socket(self, pick: int) -> tuple[int, RecordingSocket] | None:
        """The live socket most of the time, an older one otherwise."""
        if not self.sockets:
            return None
        epochs = sorted(self.sockets)
        live = self.machine.live_epoch
        if live in self.sockets and pick % 4 != 0:
            return live, self.sockets[live]
        epoch = epochs[pick % len(epochs)]
        return epoch, self.sockets[epoch]


step_kinds = st.sampled_from(["event"] * 6 + ["ack"] * 4 + ["tick", "append", "refresh", "fail"])


@settings(
    max_examples=600,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(
    tokens=st.sampled_from(
        [
            Tokens(),
            Tokens(guest_token="g-1"),
            Tokens(access_token="a-1", refresh_token="r-1", guest_token="g-1", username="ada"),
            Tokens(refresh_token="r-1"),
        ]
    ),
    chunk_count=st.integers(0, 8),
    data=st.data(),
)
def test_server_events_and_acks_through_the_handlers_into_the_machine(
    tokens: Tokens, chunk_count: int, data: st.DataObject
) -> None:
    async def run() -> None:
        h = Harness(tokens, chunk_count)
        await h.feed(ConnectRequested())
        # Usually get as far as a connected socket first, so acks have chunks to answer.
        if data.draw(st.booleans()) and h.machine.live_epoch is not None:
            epoch = h.machine.live_epoch
            h.sockets[epoch].deliver("connect", [])
            h.sockets[epoch].deliver("authenticated", [{"identity": "guest"}])
            await h.drain()
        for _ in range(data.draw(st.integers(1, 40), label="steps")):
            kind = data.draw(step_kinds)
            target = h.socket(data.draw(st.integers(0, 7)))
            if kind == "event" and target is not None:
                name, args = data.draw(event_names), data.draw(hostile_argument_lists)
                target[1].deliver(name, args)
            elif kind == "ack" and target is not None and target[1].callbacks:
                callbacks = target[1].callbacks
                callback = callbacks.pop(data.draw(st.integers(0, len(callbacks) - 1)))
                callback(*data.draw(hostile_argument_lists))
            elif kind == "tick":
                await h.tick(data.draw(st.floats(0, 40)))
            elif kind == "append":
                h.spool.append("more\n")
                await h.feed(ChunksAppended())
            elif kind == "refresh" and h.refreshes:
                request_id = h.refreshes.pop(0)
                outcome = data.draw(st.integers(0, 2))
                if outcome == 0:
                    await h.feed(RefreshSucceeded(request_id, "a-2", "r-2", None, "ada"))
                elif outcome == 1:
                    await h.feed(RefreshRefused(request_id, 401))
                else:
                    await h.feed(RefreshFailed(request_id, "HTTP 502"))
            elif kind == "fail" and target is not None:
                # What ``_connect`` feeds when the handshake is refused.
                attempt = h.attempts[target[0]]
                await h.feed(ConnectFailed(target[0], attempt.connect_error or "refused"))
            await h.drain()

    asyncio.run(run())


# ----------------------------------------------------------------------------- 3. refresh answers


class FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self._body = body

    async def json(self, content_type: str | None = None) -> Any:
        return json.loads(self._body)  # ValueError on garbage, as aiohttp raises


class FakeHttp:
    def __init__(self, status: int, body: bytes) -> None:
        self.response = FakeResponse(status, body)

    @asynccontextmanager
    async def post(self, url: str, **_: Any) -> AsyncIterator[FakeResponse]:
        yield self.response


token_bodies = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.just("a-9") | json_values,
        "refresh_token": st.just("r-9") | json_values,
        "user": st.fixed_dictionaries({}, optional={"id": json_values, "username": json_values})
        | json_values,
    },
)


@settings(max_examples=400, deadline=timedelta(seconds=2), database=None)
@given(
    status=st.sampled_from([200, 200, 200, 201, 204, 400, 401, 403, 404, 500, 502]),
    body=token_bodies.map(lambda b: json.dumps(b).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=40),
)
def test_refresh_answers_of_any_shape(status: int, body: bytes) -> None:
    http = FakeHttp(status, body)
    event = asyncio.run(
        refresh_tokens(
            http,  # type: ignore[arg-type]
            "http://127.0.0.1:9",
            RefreshTokens(7, "r-1"),
            timeout=15.0,
            ssl_verify=True,
        )
    )
    assert event.request_id == 7
    if status in (401, 403):
        assert event == RefreshRefused(7, status)
    elif isinstance(event, RefreshSucceeded):
        decoded = json.loads(body)
        assert status == 200
        assert (event.access_token, event.refresh_token) == (
            decoded["access_token"],
            decoded["refresh_token"],
        )
        assert isinstance(event.access_token, str)
        assert isinstance(event.refresh_token, str)
        assert event.user_id is None or isinstance(event.user_id, str)
        assert event.username is None or isinstance(event.username, str)
    else:
        assert isinstance(event, RefreshFailed)
        assert isinstance(event.message, str)


# ----------------------------------------------------------------------------- 4. end to end


@dataclass
class Emitted:
    event: str
    args: list[Any]


def classify(emitted: Emitted) -> str:
    """What the client makes of an event: "unknown", "malformed", or "fine"."""
    first = emitted.args[0] if emitted.args else None
    match emitted.event:
        case "pong":
            return "fine"
        case "processed_event":
            return "fine" if isinstance(first, dict) else "malformed"
        case "authenticated":
            return "fine" if first is None or isinstance(first, dict) else "malformed"
        case "guestToken":
            return "malformed"  # only malformed ones are emitted, see below
        case _:
            return "unknown"


def harmless(emitted: Emitted) -> bool:
    """Events that must not change the connection (others legitimately reconnect)."""
    if emitted.event in ("retry_auth", *RESERVED):
        return False
    if emitted.event == "guestToken":
        first = emitted.args[0] if emitted.args else None
        token = first.get("token") if isinstance(first, dict) else None
        return not (isinstance(token, str) and token)
    return True


emits = st.lists(
    st.builds(Emitted, event_names, argument_lists).filter(harmless), min_size=1, max_size=30
)
harmless_acks = st.lists(payloads, max_size=2).filter(
    lambda args: ack_error(args[0] if args else None) != "unauthenticated"
)


async def fuzz_end_to_end(events: list[Emitted], acks: list[list[Any]]) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    connects: list[str] = []
    answers = list(acks)

    async def on_connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        connects.append(sid)
        await sio.emit("authenticated", {"identity": "guest"}, to=sid, namespace="/client")
        for item in events:
            await sio.emit(item.event, tuple(item.args), to=sid, namespace="/client")

    async def on_chunk(sid: str, *data: Any) -> Any:
        if answers:
            return tuple(answers.pop(0))
        return {"ok": True}

    sio.on("connect", on_connect, namespace="/client")
    sio.on("submit_log_chunk", on_chunk, namespace="/client")
    spool = MemorySpool()
    forwarded: list[dict[str, Any]] = []
    config = ConnectionConfig(
        handshake_timeout=5.0,
        ack_timeout=10.0,
        backoff=BackoffPolicy(base=0.02, factor=2.0, cap=0.1, reset_after=2.0),
    )
    try:
        async with ServerConnection(
            f"ws://127.0.0.1:{port}",
            client_id="fuzz-e2e",
            chunk_store=spool,
            token_store=MemoryTokenStore(Tokens(guest_token="g-1")),
            on_server_event=forwarded.append,
            config=config,
        ) as connection:
            for i in range(6):
                await connection.ensure_connected_and_send_log_chunk(f"line {i}\n")
            kinds = [classify(item) for item in events]
            expected_forwarded = [
                e.args[0]
                for e, kind in zip(events, kinds, strict=True)
                if e.event == "processed_event" and kind == "fine"
            ]
            counters = connection.counters
            expected = (kinds.count("unknown"), kinds.count("malformed"), len(expected_forwarded))

            def counted() -> tuple[int, int, int]:
                return (counters.unknown_events, counters.malformed_payloads, len(forwarded))

            try:
                await wait_until_async(lambda: counted() == expected, 5, "the counters")
            except TimeoutError:
                # What was counted, and after which events: the fuzz case to replay.
                raise AssertionError(
                    f"timed out after 5 s waiting for (unknown, malformed, forwarded) =="
                    f" {expected}, have {counted()} after {[(e.event, e.args) for e in events]}"
                ) from None
            await wait_until_async(lambda: not spool.chunks, 5, "every chunk delivered")
            assert spool.acknowledged + len(spool.dead) == 6
            status = connection.status()
            assert status.state == "connected", status
            assert counters.sockets_opened == 1
            assert len(connects) == 1
            assert forwarded == expected_forwarded
    finally:
        await runner.cleanup()


@settings(
    max_examples=40,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
    # A failing example costs a wait of seconds, so no shrinking: the failure message
    # lists the events and what was counted instead.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
@given(events=emits, acks=st.lists(harmless_acks, max_size=8))
def test_a_server_emitting_garbage_at_a_real_connection(
    events: list[Emitted], acks: list[list[Any]]
) -> None:
    asyncio.run(fuzz_end_to_end(events, acks))
