"""Every transition of the connection state machine, with a fake clock and a fake spool.

``Driver`` plays the shell's part the way ``connection/server_connection.py`` does: it executes actions in
order, answers ``LoadChunks`` from an in-memory spool at once, deletes on
``AcknowledgeChunk``, writes ``PersistTokens`` to an imaginary token file (which a test
can make refuse writes) and feeds the answer as the next event, answers
``RenewClientId`` with the next of a list of ids, and records everything else so tests
can look at it. It also checks rule 8 on every action: a socket presents
only a token the file holds, and a refresh only the refresh token the file holds. Sockets
are imaginary: tests feed the events a server would cause.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TypeVar

import pytest

from main_process.connection.backoff import BackoffPolicy
from main_process.connection.state import (
    CLIENT_MISMATCH_MESSAGE,
    MAX_MESSAGE_CHARS,
    SIGNED_OUT_MESSAGE,
    AcknowledgeChunk,
    AckReceived,
    Action,
    Authenticated,
    Chunk,
    ChunksAppended,
    ChunksLoaded,
    ClientIdRenewed,
    CloseSocket,
    ConnectFailed,
    ConnectionConfig,
    ConnectionState,
    ConnectRequested,
    CredentialsChanged,
    DeadLetterChunk,
    DisconnectRequested,
    EnsureConnected,
    FatalError,
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
    SendPing,
    ServerActivity,
    SocketConnected,
    SocketDisconnected,
    StatusChanged,
    TokensNotSaved,
    TokensSaved,
    UnknownServerEvent,
    is_auth_error,
)
from main_process.credentials import Tokens
from protocol.socket_events import ChunkRefused, parse_chunk_ack
from tests.support.connection_driver import GUEST, USER, Driver

ActionT = TypeVar("ActionT")


def of_type(actions: list[Action], kind: type[ActionT]) -> list[ActionT]:
    return [a for a in actions if isinstance(a, kind)]


# ----------------------------------------------------------------------------- handshake


@pytest.mark.parametrize(
    ("tokens", "token", "credential"),
    [
        (USER, "acc-1", "user"),
        (GUEST, "guest-1", "guest"),
        (Tokens(), None, "none"),
    ],
)
def test_handshake_token_is_access_else_guest_else_none(
    tokens: Tokens, token: str | None, credential: str
) -> None:
    d = Driver(tokens=tokens)
    assert d.status()[0] == "disconnected"
    actions = d.feed(ConnectRequested())
    opened = of_type(actions, OpenSocket)
    assert opened == [OpenSocket(1, token, credential)]  # type: ignore[arg-type]
    assert d.status()[0] == "connecting"


def test_connected_only_after_authenticated_actually_arrives() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    d.feed(SocketConnected(d.epoch))
    d.advance(19.9)
    assert d.status()[0] == "connecting"
    assert not d.machine.status(d.now).authenticated
    d.feed(Authenticated(d.epoch, "guest", None))
    status = d.machine.status(d.now)
    assert status.state == "connected"
    assert status.authenticated
    assert status.identity == "guest"


def test_no_authenticated_within_the_handshake_timeout_is_a_failure() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    d.feed(SocketConnected(d.epoch))
    first = d.epoch
    actions = d.advance(20.0)
    assert CloseSocket(first) in actions
    state, attempt, next_retry_ms, error = d.status()
    assert (state, attempt, next_retry_ms) == ("disconnected", 1, 500)
    assert error == "server did not authenticate within 20 s"


def test_authenticated_before_the_namespace_is_accepted_waits_for_it() -> None:
    # Some servers emit from their connect handler before accepting the namespace;
    # nothing can be sent on the socket until the namespace is connected.
    d = Driver(tokens=GUEST)
    d.spool.append(2)
    d.feed(ConnectRequested())
    d.feed(Authenticated(d.epoch, "guest"))
    assert d.status()[0] == "connecting"
    assert d.sent_seqs() == []
    d.feed(SocketConnected(d.epoch))
    assert d.status()[0] == "connected"
    assert d.sent_seqs() == [1, 2]


def test_authenticated_payload_sets_identity_and_username() -> None:
    d = Driver(tokens=USER)
    d.feed(ConnectRequested())
    d.feed(SocketConnected(d.epoch))
    actions = d.feed(Authenticated(d.epoch, "user", "ada-from-server"))
    (changed,) = of_type(actions, StatusChanged)
    assert changed.status.identity == "user"
    assert changed.status.username == "ada-from-server"


def test_identity_is_inferred_when_a_base_server_sends_no_payload() -> None:
    d = Driver(tokens=USER)
    d.connect()
    status = d.machine.status(d.now)
    assert (status.identity, status.username) == ("user", "ada")
    d2 = Driver(tokens=GUEST)
    d2.connect()
    assert d2.machine.status(d2.now).identity == "guest"


def test_refused_handshake_backs_off_and_counts_attempts() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    d.feed(ConnectFailed(d.epoch, "Connection refused"))
    assert d.status() == ("disconnected", 1, 500, "could not connect: Connection refused")
    # The second failure waits up to 2 s (jitter 0.5 → 1 s), the third up to 4 s.
    d.advance(0.5)
    assert d.last_open().epoch == 2
    d.feed(ConnectFailed(2, "Connection refused"))
    assert d.status()[1:3] == (2, 1000)
    d.advance(1.0)
    d.feed(SocketDisconnected(3, "transport close"))
    assert d.status()[1:3] == (3, 2000)
    assert d.status()[3] == "handshake failed: transport close"


# ----------------------------------------------------------------------------- guest tokens


def test_guest_token_is_persisted_then_used_about_100_ms_later() -> None:
    d = Driver(tokens=Tokens())
    d.feed(ConnectRequested())
    first = d.epoch
    actions = d.feed(GuestTokenReceived(first, "guest-new"))
    assert actions[:2] == [PersistTokens(Tokens(guest_token="guest-new")), CloseSocket(first)]
    assert d.status()[:3] == ("disconnected", 0, 100)
    d.advance(0.099)
    assert d.last_open().epoch == first
    d.advance(0.001)
    assert d.last_open() == OpenSocket(first + 1, "guest-new", "guest")


def test_guest_token_while_signed_in_is_kept_but_does_not_reconnect() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    actions = d.feed(GuestTokenReceived(d.epoch, "guest-2"))
    assert of_type(actions, PersistTokens) == [PersistTokens(replace(USER, guest_token="guest-2"))]
    assert of_type(actions, CloseSocket) == []
    assert d.status()[0] == "connected"


def test_refused_guest_token_is_forgotten_and_the_client_reconnects_with_none() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    actions = d.feed(RetryAuthRequested(d.epoch, "invalid_token"))
    assert PersistTokens(Tokens()) in actions
    assert d.machine.tokens == Tokens()
    d.advance(0.1)
    assert d.last_open() == OpenSocket(2, None, "none")


def test_guest_token_refused_at_the_handshake_is_forgotten_too() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    d.feed(ConnectFailed(d.epoch, "jwt expired"))
    assert d.machine.tokens.guest_token is None
    d.advance(0.1)
    assert d.last_open().token is None


def test_a_server_refusing_even_no_token_gets_the_backoff() -> None:
    d = Driver(tokens=Tokens())
    d.feed(ConnectRequested())
    d.feed(ConnectFailed(d.epoch, "Authentication required"))
    assert d.status()[:3] == ("disconnected", 1, 500)
    assert "refused" in (d.status()[3] or "")


def test_auth_driven_reconnect_loops_fall_back_to_the_backoff() -> None:
    config = ConnectionConfig(auth_reconnects_before_backoff=3)
    d = Driver(config=config, tokens=Tokens(), jitter=1.0)
    d.feed(ConnectRequested())
    delays = []
    for n in range(5):
        d.feed(GuestTokenReceived(d.epoch, f"g{n}"))
        delay_ms = d.status()[2]
        assert delay_ms is not None
        delays.append(delay_ms)
        d.advance(delay_ms / 1000)
    assert delays == [100, 100, 100, 1000, 2000]


# ----------------------------------------------------------------------------- user tokens


def test_retry_auth_saves_refreshes_saves_again_then_reconnects_at_once() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    first = d.epoch
    actions = d.feed(RetryAuthRequested(first, "token_expired"))
    assert CloseSocket(first) in actions
    # The file is written (so known to be writable) before the server spends ref-1.
    steps = [type(a) for a in actions if isinstance(a, PersistTokens | RefreshTokens)]
    assert steps == [PersistTokens, RefreshTokens]
    assert of_type(actions, RefreshTokens) == [RefreshTokens(1, "ref-1")]
    assert d.status()[0] == "connecting"

    actions = d.feed(RefreshSucceeded(1, "acc-2", "ref-2", username="ada"))
    rotated = Tokens(
        access_token="acc-2", refresh_token="ref-2", guest_token="guest-1", username="ada"
    )
    # Rule 8, then rule 10: on disk first, then presented at once, not ~2 s later.
    opening = [type(a) for a in actions if isinstance(a, PersistTokens | OpenSocket)]
    assert opening == [PersistTokens, OpenSocket]
    assert of_type(actions, PersistTokens) == [PersistTokens(rotated)]
    assert d.last_open() == OpenSocket(first + 1, "acc-2", "user")
    assert d.token_file == rotated
    assert d.status()[0] == "connecting"


def test_an_access_token_shorter_than_the_retry_auth_delay_still_connects_and_ships() -> None:
    """A server with ``--access-ttl 1``: each access token expires 1 s after its refresh,
    before the 2 s ``retry_auth`` delay is over. The client must present each one at once,
    get ``authenticated`` and ship, cycle after cycle, without backing off."""
    ttl = 1.0
    d = Driver(tokens=USER)
    d.spool.append(5)
    d.connect("user")
    d.ack(*d.machine.in_flight_seqs)
    for n in range(2, 12):
        d.spool.append(5)  # lines keep coming
        d.feed(ChunksAppended())
        d.advance(ttl - 0.1)  # the rest of the token's life
        d.feed(RetryAuthRequested(d.epoch, "token_expired"))
        refresh = of_type(d.actions, RefreshTokens)[-1]
        d.advance(0.02)  # the HTTP round trip
        d.feed(RefreshSucceeded(refresh.request_id, f"acc-{n}", f"ref-{n}", username="ada"))
        expires_at = d.now + ttl
        opened = d.last_open()
        assert opened.token == f"acc-{n}", f"cycle {n}: the fresh token was not presented"
        d.advance(0.01)  # the handshake
        assert d.now < expires_at
        d.connect("user")
        status = d.machine.status(d.now)
        assert (status.state, status.identity, status.attempt) == ("connected", "user", 0)
        d.ack(*d.machine.in_flight_seqs)
    assert d.spool.chunks == {}
    assert d.machine.counters.chunks_acknowledged == 55
    assert d.token_file.refresh_token == "ref-11"


@pytest.mark.parametrize("message", ["invalid signature", "jwt expired", "Authentication error"])
def test_auth_flavoured_connect_error_runs_the_refresh_flow(message: str) -> None:
    d = Driver(tokens=USER)
    d.feed(ConnectRequested())
    actions = d.feed(ConnectFailed(d.epoch, message))
    assert of_type(actions, RefreshTokens) == [RefreshTokens(1, "ref-1")]


@pytest.mark.parametrize("http_status", [401, 403])
def test_refused_refresh_signs_out_and_continues_as_guest(http_status: int) -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    d.feed(RetryAuthRequested(d.epoch, "token_expired"))
    actions = d.feed(RefreshRefused(1, http_status))
    assert of_type(actions, PersistTokens) == [PersistTokens(Tokens(guest_token="guest-1"))]
    assert d.status()[3] == SIGNED_OUT_MESSAGE
    d.advance(2.0)
    assert d.last_open() == OpenSocket(2, "guest-1", "guest")
    d.connect("guest")
    status = d.machine.status(d.now)
    assert (status.state, status.identity, status.last_error) == (
        "connected",
        "guest",
        SIGNED_OUT_MESSAGE,
    )


def test_retry_auth_without_a_refresh_token_signs_out() -> None:
    d = Driver(tokens=Tokens(access_token="acc-only", guest_token="guest-1"))
    d.connect("user")
    actions = d.feed(RetryAuthRequested(d.epoch))
    assert of_type(actions, RefreshTokens) == []
    assert PersistTokens(Tokens(guest_token="guest-1")) in actions
    assert d.status()[3] == SIGNED_OUT_MESSAGE


def test_refresh_failed_by_network_or_5xx_keeps_tokens_and_backs_off() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    d.feed(RetryAuthRequested(d.epoch, "token_expired"))
    actions = d.feed(RefreshFailed(1, "HTTP 503"))
    assert of_type(actions, PersistTokens) == []
    assert d.machine.tokens == USER
    assert d.status() == (
        "disconnected",
        1,
        500,
        "could not refresh the session: HTTP 503",
    )
    # After the wait it refreshes again rather than presenting the refused token.
    actions = d.advance(0.5)
    assert of_type(actions, RefreshTokens) == [RefreshTokens(2, "ref-1")]
    assert of_type(actions, OpenSocket) == []
    d.feed(RefreshFailed(2, "Cannot connect to host"))
    assert d.status()[1:3] == (2, 1000)
    d.advance(1.0)
    d.feed(RefreshSucceeded(3, "acc-2", "ref-2"))
    d.advance(2.0)
    assert d.last_open().token == "acc-2"


def test_a_refresh_answer_after_the_user_disconnected_still_keeps_the_rotated_token() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    d.feed(RetryAuthRequested(d.epoch))
    d.feed(DisconnectRequested())
    actions = d.feed(RefreshSucceeded(1, "acc-2", "ref-2"))
    assert (
        PersistTokens(
            Tokens(
                access_token="acc-2", refresh_token="ref-2", guest_token="guest-1", username="ada"
            )
        )
        in actions
    )
    d.advance(60)
    assert of_type(d.actions, OpenSocket)[-1].epoch == 1
    assert d.status()[0] == "disconnected"


def test_connect_while_a_refresh_is_out_waits_for_it_instead_of_refreshing_twice() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    d.feed(RetryAuthRequested(d.epoch))
    d.feed(DisconnectRequested())
    actions = d.feed(ConnectRequested())
    assert of_type(actions, RefreshTokens) == []
    assert of_type(actions, OpenSocket) == []
    assert d.status()[0] == "connecting"
    d.feed(RefreshSucceeded(1, "acc-2", "ref-2"))
    d.advance(2.0)
    assert d.last_open().token == "acc-2"


def test_a_refresh_answer_for_superseded_credentials_is_ignored() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    d.feed(RetryAuthRequested(d.epoch))
    new_login = Tokens(
        access_token="acc-b", refresh_token="ref-b", guest_token="guest-1", username="bob"
    )
    d.feed(CredentialsChanged(new_login))
    assert d.last_open().token == "acc-b"
    actions = d.feed(RefreshRefused(1, 401))
    assert of_type(actions, PersistTokens) == []
    assert d.machine.tokens == new_login


def test_refresh_token_without_access_token_refreshes_before_connecting() -> None:
    d = Driver(tokens=Tokens(refresh_token="ref-1", guest_token="guest-1", username="ada"))
    actions = d.feed(ConnectRequested())
    assert of_type(actions, OpenSocket) == []
    assert of_type(actions, RefreshTokens) == [RefreshTokens(1, "ref-1")]
    d.feed(RefreshSucceeded(1, "acc-2", "ref-2", "u-1", "ada"))
    d.advance(2)
    assert d.last_open() == OpenSocket(1, "acc-2", "user")
    assert d.machine.tokens.user_id == "u-1"


def test_credentials_changed_while_connected_reconnects_with_the_new_token() -> None:
    d = Driver(tokens=GUEST)
    d.connect("guest")
    first = d.epoch
    actions = d.feed(CredentialsChanged(USER))
    assert CloseSocket(first) in actions
    assert of_type(actions, OpenSocket) == [OpenSocket(first + 1, "acc-1", "user")]


# ----------------------------------------------------------------------------- the token file

READ_ONLY = "Read-only file system (/data/tokens.json)"


def test_a_token_file_that_cannot_be_written_holds_the_refresh_so_the_token_on_disk_stays_good() -> (
    None
):
    d = Driver(tokens=USER)
    d.connect("user")
    d.save_refused = READ_ONLY
    actions = d.feed(RetryAuthRequested(d.epoch, "token_expired"))
    assert of_type(actions, PersistTokens) == [PersistTokens(USER)]
    assert of_type(actions, RefreshTokens) == []  # ref-1 is not spent
    state, attempt, next_retry_ms, error = d.status()
    assert (state, attempt, error) == ("disconnected", 0, f"cannot save tokens: {READ_ONLY}")
    assert next_retry_ms == 500  # the next save, after the backoff (jitter 0.5 of 1 s)
    # It keeps trying, backing off, and presents nothing meanwhile.
    actions = d.advance(60)
    saves = of_type(actions, PersistTokens)
    assert 4 <= len(saves) <= 8
    assert of_type(actions, RefreshTokens) == []
    assert of_type(actions, OpenSocket) == []
    assert d.token_file == USER
    assert d.status()[3] == f"cannot save tokens: {READ_ONLY}"
    # The file takes writes again: the next save goes through and only then ref-1 goes out.
    d.save_refused = None
    actions = d.advance_to_retry()
    steps = [type(a) for a in actions if isinstance(a, PersistTokens | RefreshTokens)]
    assert steps == [PersistTokens, RefreshTokens]
    assert of_type(actions, RefreshTokens) == [RefreshTokens(1, "ref-1")]
    d.feed(RefreshSucceeded(1, "acc-2", "ref-2"))
    assert d.last_open().token == "acc-2"
    d.connect("user")
    assert d.status() == ("connected", 0, None, None)


def test_rotated_tokens_that_cannot_be_saved_are_kept_and_presented_only_once_saved() -> None:
    d = Driver(tokens=USER)
    d.spool.append(3)
    d.connect("user")
    first = d.epoch
    d.feed(RetryAuthRequested(first, "token_expired"))
    d.save_refused = READ_ONLY  # the disk fails between the save before and the one after
    actions = d.feed(RefreshSucceeded(1, "acc-2", "ref-2"))
    rotated = replace(USER, access_token="acc-2", refresh_token="ref-2")
    assert of_type(actions, PersistTokens) == [PersistTokens(rotated)]
    assert of_type(actions, OpenSocket) == []
    assert d.machine.tokens == rotated  # kept: the server has spent ref-1
    assert d.token_file == USER
    assert d.status()[0] == "disconnected"
    assert d.status()[3] == f"cannot save tokens: {READ_ONLY}"
    actions = d.advance(30)
    assert of_type(actions, PersistTokens) == [PersistTokens(rotated)] * len(
        of_type(actions, PersistTokens)
    )
    assert of_type(actions, OpenSocket) == []
    assert of_type(actions, RefreshTokens) == []  # ref-2 is not on disk either
    d.save_refused = None
    actions = d.advance_to_retry()
    assert d.token_file == rotated
    assert of_type(actions, OpenSocket) == [OpenSocket(first + 1, "acc-2", "user")]
    d.connect("user")
    assert d.sent_seqs(d.epoch) == [1, 2, 3]
    assert d.status() == ("connected", 0, None, None)


def test_a_guest_token_that_cannot_be_saved_is_presented_only_once_saved() -> None:
    d = Driver(tokens=Tokens())
    d.feed(ConnectRequested())
    first = d.epoch
    d.save_refused = "No space left on device (/data/tokens.json)"
    d.feed(GuestTokenReceived(first, "guest-new"))
    actions = d.advance(10)
    assert of_type(actions, OpenSocket) == []
    assert len(of_type(actions, PersistTokens)) >= 3
    state, _, next_retry_ms, error = d.status()
    assert (state, error) == (
        "disconnected",
        "cannot save tokens: No space left on device (/data/tokens.json)",
    )
    assert next_retry_ms is not None
    d.save_refused = None
    d.advance_to_retry()
    assert d.last_open() == OpenSocket(first + 1, "guest-new", "guest")
    assert d.token_file == Tokens(guest_token="guest-new")
    d.connect("guest")
    assert d.status() == ("connected", 0, None, None)


def test_connect_while_waiting_for_the_token_file_saves_again_at_once() -> None:
    d = Driver(tokens=USER, jitter=1.0)
    d.connect("user")
    d.save_refused = READ_ONLY
    d.feed(RetryAuthRequested(d.epoch, "token_expired"))
    for _ in range(4):
        d.advance_to_retry()
    assert d.status()[2] == 16_000  # the save backoff has grown
    d.save_refused = None
    actions = d.feed(ConnectRequested())
    assert of_type(actions, PersistTokens) == [PersistTokens(USER)]
    assert of_type(actions, RefreshTokens) == [RefreshTokens(1, "ref-1")]


def test_a_sign_out_that_cannot_be_saved_goes_on_as_the_guest_on_disk() -> None:
    d = Driver(tokens=Tokens(access_token="acc-only", guest_token="guest-1"))
    d.spool.append(2)
    d.connect("user")
    d.save_refused = READ_ONLY
    d.feed(RetryAuthRequested(d.epoch))  # no refresh token: signed out
    d.advance(2.0)
    assert d.last_open() == OpenSocket(2, "guest-1", "guest")  # the file holds guest-1
    d.connect("guest")
    d.ack(1, 2)
    assert d.spool.chunks == {}
    assert d.status()[:2] == ("connected", 0)
    assert d.status()[3] == f"cannot save tokens: {READ_ONLY}"
    assert d.token_file.access_token == "acc-only"  # what a crash now would find: harmless
    d.save_refused = None
    d.advance(10)  # past the next save, which the backoff put a few seconds away
    assert d.token_file == Tokens(guest_token="guest-1")
    assert d.status() == ("connected", 0, None, SIGNED_OUT_MESSAGE)


def test_a_refused_guest_token_that_cannot_be_forgotten_on_disk_still_reconnects() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    d.save_refused = READ_ONLY
    d.feed(RetryAuthRequested(d.epoch, "invalid_token"))
    d.advance(0.1)
    assert d.last_open() == OpenSocket(2, None, "none")
    assert d.token_file == GUEST


def test_disconnect_while_only_a_refresh_waits_for_the_token_file_stops_saving() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    d.save_refused = READ_ONLY
    d.feed(RetryAuthRequested(d.epoch, "token_expired"))
    d.feed(DisconnectRequested())
    assert d.status() == ("disconnected", 0, None, None)
    assert d.machine.next_deadline() is None
    assert of_type(d.advance(3600), PersistTokens) == []


def test_a_refreshed_session_that_cannot_be_saved_keeps_trying_while_idle() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    d.feed(RetryAuthRequested(d.epoch))
    d.feed(DisconnectRequested())
    d.save_refused = READ_ONLY
    d.feed(RefreshSucceeded(1, "acc-2", "ref-2"))
    assert d.token_file != d.machine.tokens
    assert d.status()[0] == "disconnected"
    assert d.status()[3] == f"cannot save tokens: {READ_ONLY}"
    d.save_refused = None
    d.advance(2)
    assert d.token_file == d.machine.tokens
    assert d.token_file.refresh_token == "ref-2"
    assert d.status() == ("disconnected", 0, None, None)
    assert len(of_type(d.actions, OpenSocket)) == 1  # the user's Disconnect still holds


@pytest.mark.parametrize("seed", range(40))
def test_random_token_file_failures_never_present_a_token_that_is_not_on_disk(seed: int) -> None:
    """Saves failing at random while the server refreshes, rotates, refuses and issues
    tokens: the Driver checks every socket and refresh against the file (rule 8), and
    once the file works again the machine saves what it holds and connects."""
    rng = random.Random(seed)
    d = Driver(tokens=USER)
    d.spool.append(4)
    d.feed(ConnectRequested())
    answered: set[int] = set()
    for step in range(300):
        d.save_refused = READ_ONLY if rng.random() < 0.4 else None
        live = d.machine.live_epoch
        out = [r for r in of_type(d.actions, RefreshTokens) if r.request_id not in answered]
        roll = rng.random()
        if out and roll < 0.3:
            request = out[-1].request_id
            answered.add(request)
            kind = rng.choice(["ok"] * 6 + ["refused", "failed"])
            if kind == "ok":
                d.feed(RefreshSucceeded(request, f"acc-{step}", f"ref-{step}", username="ada"))
            elif kind == "refused":
                d.feed(RefreshRefused(request, 401))
            else:
                d.feed(RefreshFailed(request, "HTTP 503"))
        elif live is not None and roll < 0.6:
            event = rng.choice(["auth", "retry_auth", "guest", "drop", "ack"])
            if event == "auth":
                d.feed(SocketConnected(live))
                d.feed(Authenticated(live))
            elif event == "retry_auth":
                d.feed(RetryAuthRequested(live, "token_expired"))
            elif event == "guest":
                d.feed(GuestTokenReceived(live, f"guest-{step}"))
            elif event == "drop":
                d.feed(SocketDisconnected(live, "transport close"))
            elif d.machine.in_flight_seqs:
                d.ack(d.machine.in_flight_seqs[0])
        elif roll < 0.63:
            d.feed(DisconnectRequested())
        elif roll < 0.7:
            d.feed(ConnectRequested())
        else:
            d.advance(rng.uniform(0, 3))
    # The file works again: whatever the machine holds reaches it, and it connects.
    d.save_refused = None
    d.feed(ConnectRequested())
    for n in range(20):  # up to the longest save backoff (30 s) and a handshake timeout
        for request in sorted({r.request_id for r in of_type(d.actions, RefreshTokens)} - answered):
            answered.add(request)
            d.feed(RefreshSucceeded(request, f"acc-end-{n}", f"ref-end-{n}", username="ada"))
        if d.token_file == d.machine.tokens and d.machine.live_epoch is not None:
            break
        d.advance(5)
    assert d.token_file == d.machine.tokens
    d.connect()
    status = d.machine.status(d.now)
    assert status.state == "connected"
    assert not (status.last_error or "").startswith("cannot save tokens")


# ----------------------------------------------------------------------------- delivery


def test_delivery_starts_on_authenticated_in_seq_order_with_a_window_of_8() -> None:
    d = Driver(tokens=GUEST)
    d.spool.append(20)
    d.feed(ConnectRequested())
    d.feed(SocketConnected(d.epoch))
    assert d.sent_seqs() == []  # nothing goes out before ``authenticated``
    d.feed(Authenticated(d.epoch))
    assert d.sent_seqs() == list(range(1, 9))
    d.ack(1)
    assert d.sent_seqs() == list(range(1, 10))
    d.ack(2, 3, 4, 5, 6, 7, 8, 9)
    assert d.sent_seqs() == list(range(1, 18))
    d.ack(*range(10, 18))
    d.ack(18, 19, 20)
    assert d.sent_seqs() == list(range(1, 21))
    assert d.spool.chunks == {}
    assert d.machine.counters.chunks_acknowledged == 20


def test_appends_while_connected_are_sent_and_idle_delivery_loads_nothing() -> None:
    d = Driver(tokens=GUEST)
    d.connect()
    loads = d.loads
    d.advance(5)
    assert d.loads == loads  # no polling
    d.spool.append(3)
    d.feed(ChunksAppended())
    assert d.sent_seqs() == [1, 2, 3]


def test_never_two_loads_at_once_and_an_append_during_a_load_is_not_lost() -> None:
    m = ConnectionState(tokens=GUEST)
    now = 0.0
    (opened,) = of_type(m.handle(ConnectRequested(), now), OpenSocket)
    epoch = opened.epoch
    m.handle(SocketConnected(epoch), now)
    loads = of_type(m.handle(Authenticated(epoch), now), LoadChunks)
    assert loads == [LoadChunks(epoch, None, 8)]
    # The shell has not answered yet: more appends must not start a second load.
    assert of_type(m.handle(ChunksAppended(), now), LoadChunks) == []
    assert of_type(m.handle(ChunksAppended(), now), LoadChunks) == []
    # The answer is short (the spool looked empty), yet an append came in meanwhile.
    actions = m.handle(ChunksLoaded(epoch, [Chunk(1, "a")]), now)
    assert of_type(actions, SendChunk) == [SendChunk(epoch, Chunk(1, "a"))]
    assert of_type(actions, LoadChunks) == [LoadChunks(epoch, 1, 7)]


def test_a_short_page_ends_loading_until_the_next_append() -> None:
    m = ConnectionState(tokens=GUEST)
    m.handle(ConnectRequested(), 0)
    m.handle(SocketConnected(1), 0)
    m.handle(Authenticated(1), 0)
    actions = m.handle(ChunksLoaded(1, [Chunk(1, "a"), Chunk(2, "b")]), 0)
    assert of_type(actions, LoadChunks) == []
    assert of_type(m.handle(ChunksAppended(), 0), LoadChunks) == [LoadChunks(1, 2, 6)]


def test_a_store_that_returns_old_or_too_many_chunks_cannot_break_order_or_window() -> None:
    m = ConnectionState(ConnectionConfig(window=2), tokens=GUEST)
    m.handle(ConnectRequested(), 0)
    m.handle(SocketConnected(1), 0)
    m.handle(Authenticated(1), 0)
    actions = m.handle(ChunksLoaded(1, [Chunk(3, "c"), Chunk(1, "a"), Chunk(2, "b")]), 0)
    assert [a.chunk.seq for a in of_type(actions, SendChunk)] == [1, 2]
    actions = m.handle(AckReceived(1, 1), 0)
    assert of_type(actions, LoadChunks) == [LoadChunks(1, 2, 1)]
    actions = m.handle(ChunksLoaded(1, [Chunk(2, "b"), Chunk(3, "c")]), 0)
    assert [a.chunk.seq for a in of_type(actions, SendChunk)] == [3]


@pytest.mark.parametrize("seed", range(25))
def test_random_interleavings_keep_window_order_and_lose_nothing(seed: int) -> None:
    """Acks in any order, drops, appends and errors: the invariants always hold."""
    rng = random.Random(seed)
    d = Driver(tokens=GUEST, config=ConnectionConfig(window=8))
    d.spool.append(rng.randint(1, 40))
    d.connect()
    delivered: set[int] = set()
    epoch_sends: dict[int, list[int]] = {}
    for _ in range(400):
        machine = d.machine
        assert len(machine.in_flight_seqs) <= 8
        roll = rng.random()
        in_flight = machine.in_flight_seqs
        if machine.live_epoch is None or machine.status(d.now).state != "connected":
            d.advance(31)
            if machine.live_epoch is not None and machine.status(d.now).state == "connecting":
                d.connect()
        elif roll < 0.55 and in_flight:
            seq = rng.choice(in_flight)
            error = rng.choice([None] * 8 + ["busy", "too_large"])
            d.ack(seq, error=error)
            if error is None:
                delivered.add(seq)
        elif roll < 0.7:
            d.spool.append(rng.randint(1, 5))
            d.feed(ChunksAppended())
        elif roll < 0.75:
            d.feed(SocketDisconnected(d.epoch, "transport close"))
        elif roll < 0.8 and in_flight:
            d.ack(in_flight[0], epoch=d.epoch - 1 if d.epoch > 1 else 999)  # stale
        else:
            d.advance(rng.uniform(0, 5))
    for action in d.actions:
        if isinstance(action, SendChunk):
            epoch_sends.setdefault(action.epoch, []).append(action.chunk.seq)
    for seqs in epoch_sends.values():
        # Within one socket a seq goes out once, except resends of server-rejected chunks.
        first_sends = [s for i, s in enumerate(seqs) if s not in seqs[:i]]
        assert first_sends == sorted(first_sends)
    assert delivered.isdisjoint(d.spool.chunks)
    assert delivered.isdisjoint(d.spool.dead)


def test_ack_without_error_deletes_and_permanent_rejections_dead_letter() -> None:
    d = Driver(tokens=GUEST)
    d.spool.append(4)
    d.connect()
    actions = d.feed(AckReceived(d.epoch, 1, None, None))
    assert AcknowledgeChunk(1) in actions
    actions = d.feed(AckReceived(d.epoch, 2, "too_large", "chunk over 1 MB"))
    assert DeadLetterChunk(2, "too_large", "chunk over 1 MB") in actions
    d.feed(AckReceived(d.epoch, 3, "invalid", None))
    assert d.spool.dead == {2: "too_large", 3: "invalid"}
    assert list(d.spool.chunks) == [4]
    assert d.machine.counters.chunks_dead_lettered == 2
    assert d.status()[0] == "connected"


def test_unauthenticated_ack_keeps_the_chunk_and_runs_the_retry_auth_flow() -> None:
    d = Driver(tokens=USER)
    d.spool.append(3)
    d.connect("user")
    first = d.epoch
    actions = d.ack(1, error="unauthenticated")
    assert of_type(actions, AcknowledgeChunk) == []
    assert of_type(actions, DeadLetterChunk) == []
    assert CloseSocket(first) in actions
    assert of_type(actions, RefreshTokens) == [RefreshTokens(1, "ref-1")]
    assert list(d.spool.chunks) == [1, 2, 3]
    d.feed(RefreshSucceeded(1, "acc-2", "ref-2"))
    d.advance(2)
    d.connect("user")
    assert d.sent_seqs(d.epoch) == [1, 2, 3]


def test_other_ack_errors_pause_delivery_and_resend_after_the_backoff() -> None:
    d = Driver(tokens=GUEST, config=ConnectionConfig(window=2))
    d.spool.append(4)
    d.connect()
    assert d.sent_seqs() == [1, 2]
    d.ack(1, error="storage_unavailable")
    assert d.status()[3] == "server rejected chunk 1 (storage_unavailable)"
    d.ack(2)
    assert d.sent_seqs() == [1, 2]  # paused: nothing new while 1 waits for its retry
    d.advance(0.5)  # jitter 0.5 of the 1 s ceiling
    assert d.sent_seqs() == [1, 2, 1, 3]
    d.ack(1)
    d.ack(3)
    d.ack(4)
    assert d.spool.chunks == {}
    assert d.status()[0] == "connected"


def test_retry_auth_while_flushing_resends_everything_unacknowledged_in_order() -> None:
    d = Driver(tokens=USER)
    d.spool.append(12)
    d.connect("user")
    first = d.epoch
    d.ack(1, 2, 3)
    assert d.sent_seqs(first) == list(range(1, 12))
    d.feed(RetryAuthRequested(first, "token_expired"))
    d.feed(RefreshSucceeded(1, "acc-2", "ref-2"))
    # Acks for the old socket arrive late: they must not delete anything.
    d.ack(4, 5, epoch=first)
    assert d.machine.counters.stale_events >= 2
    assert sorted(d.spool.chunks) == list(range(4, 13))
    d.advance(2)
    second = d.epoch
    d.connect("user")
    assert d.sent_seqs(second) == list(range(4, 12))
    d.ack(*range(4, 12))
    d.ack(12)
    assert d.sent_seqs(second) == list(range(4, 13))
    assert d.spool.chunks == {}


def test_no_ack_within_the_ack_timeout_drops_and_resends() -> None:
    d = Driver(tokens=GUEST)
    d.spool.append(3)
    d.connect()
    first = d.epoch
    d.advance(10)
    d.feed(ServerActivity(first))  # pongs keep the socket alive; still no ack
    d.ack(1)
    actions = d.advance(20)
    assert CloseSocket(first) in actions
    assert d.status()[3] == "no acknowledgement within 30 s"
    d.advance(1)
    d.connect()
    assert d.sent_seqs(d.epoch) == [2, 3]


def test_heartbeat_pings_every_20_s_and_30_s_of_silence_drops() -> None:
    d = Driver(tokens=GUEST)
    d.connect()
    epoch = d.epoch
    actions = d.advance(20)
    assert of_type(actions, SendPing) == [SendPing(epoch)]
    d.feed(ServerActivity(epoch))  # the pong
    actions = d.advance(20)
    assert of_type(actions, SendPing) == [SendPing(epoch)]
    assert d.status()[0] == "connected"
    # No pong this time: 30 s after the last sign of life the socket is dropped.
    actions = d.advance(9.9)
    assert of_type(actions, CloseSocket) == []
    actions = d.advance(0.1)
    assert CloseSocket(epoch) in actions
    assert d.status()[3] == "no word from the server for 30 s"


def test_any_server_event_counts_as_a_sign_of_life() -> None:
    d = Driver(tokens=GUEST)
    d.connect()
    for _ in range(5):
        d.advance(25)
        d.feed(UnknownServerEvent(d.epoch, "something_new"))
    assert d.status()[0] == "connected"
    d.feed(MalformedPayload(d.epoch, "guestToken"))
    assert d.machine.counters.unknown_events == 5
    assert d.machine.counters.malformed_payloads == 1


def test_a_dropped_socket_clears_in_flight_and_reconnects_with_backoff() -> None:
    d = Driver(tokens=GUEST)
    d.spool.append(5)
    d.connect()
    first = d.epoch
    d.feed(SocketDisconnected(first, "transport close"))
    assert d.machine.in_flight_seqs == []
    assert d.status() == ("disconnected", 1, 500, "connection lost: transport close")
    d.advance(0.5)
    d.connect()
    assert d.sent_seqs(d.epoch) == [1, 2, 3, 4, 5]


def test_stale_events_from_an_old_socket_are_ignored() -> None:
    d = Driver(tokens=GUEST)
    d.spool.append(2)
    d.connect()
    first = d.epoch
    d.feed(SocketDisconnected(first, "ping timeout"))
    d.advance(0.5)
    second = d.epoch
    before = list(d.actions)
    d.feed(AckReceived(first, 1))
    d.feed(SocketDisconnected(first, "late duplicate"))
    d.feed(GuestTokenReceived(first, "zombie"))
    d.feed(Authenticated(first))
    d.feed(ChunksLoaded(first, [Chunk(1, "a")]))
    assert d.actions == before
    assert d.status()[0] == "connecting"
    assert d.machine.live_epoch == second
    assert d.machine.tokens == GUEST
    assert d.machine.counters.stale_events == 5


def test_backoff_resets_after_10_s_authenticated() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    for _ in range(3):
        d.feed(ConnectFailed(d.epoch, "refused"))
        d.advance_to_retry()
    assert d.status()[1] == 3
    d.connect()
    d.advance(9.9)
    d.feed(SocketDisconnected(d.epoch, "transport close"))
    assert d.status()[1] == 4  # 9.9 s was not long enough
    d.advance_to_retry()
    d.connect()
    d.advance(10)
    assert d.status()[1] == 0
    d.feed(SocketDisconnected(d.epoch, "transport close"))
    assert d.status()[1:3] == (1, 500)


# ----------------------------------------------------------------------------- user commands


def test_disconnect_during_flush_stops_everything_until_connect() -> None:
    d = Driver(tokens=GUEST)
    d.spool.append(10)
    d.connect()
    first = d.epoch
    actions = d.feed(DisconnectRequested())
    assert CloseSocket(first) in actions
    assert d.status()[:3] == ("disconnected", 0, None)
    d.ack(1, 2, epoch=first)  # late acks from the closed socket
    assert sorted(d.spool.chunks) == list(range(1, 11))
    d.spool.append(1)
    d.feed(ChunksAppended())
    d.feed(EnsureConnected())  # a send does not override the user's Disconnect
    d.advance(3600)
    assert d.last_open().epoch == first
    d.feed(ConnectRequested())
    d.connect()
    assert d.sent_seqs(d.epoch) == list(range(1, 9))


def test_stop_during_connect_closes_the_attempt_and_ignores_its_late_events() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    first = d.epoch
    actions = d.feed(DisconnectRequested())
    assert actions[0] == CloseSocket(first)
    d.feed(SocketConnected(first))
    d.feed(Authenticated(first))
    assert d.status()[0] == "disconnected"
    d.advance(3600)
    assert len(of_type(d.actions, OpenSocket)) == 1
    assert d.machine.next_deadline() is None


def test_stop_while_waiting_cancels_the_retry() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    d.feed(ConnectFailed(d.epoch, "refused"))
    d.feed(DisconnectRequested())
    d.advance(3600)
    assert len(of_type(d.actions, OpenSocket)) == 1


def test_connect_while_waiting_skips_the_rest_of_the_wait() -> None:
    d = Driver(tokens=GUEST, jitter=0.99)
    d.feed(ConnectRequested())
    for _ in range(4):
        d.feed(ConnectFailed(d.epoch, "refused"))
        d.advance_to_retry()
    d.feed(ConnectFailed(d.epoch, "refused"))
    assert d.status()[2] == round(16 * 0.99 * 1000)
    actions = d.feed(ConnectRequested())
    assert len(of_type(actions, OpenSocket)) == 1


def test_ensure_connected_starts_an_idle_machine() -> None:
    d = Driver(tokens=GUEST)
    assert len(of_type(d.feed(EnsureConnected()), OpenSocket)) == 1
    assert of_type(d.feed(EnsureConnected()), OpenSocket) == []


def test_connect_while_connected_changes_nothing() -> None:
    d = Driver(tokens=GUEST)
    d.connect()
    assert d.feed(ConnectRequested()) == []


def test_fatal_error_is_the_error_state_until_connect() -> None:
    d = Driver(tokens=GUEST)
    d.connect()
    actions = d.feed(FatalError("server URL has no host"))
    assert CloseSocket(1) in actions
    assert d.status() == ("error", 0, None, "server URL has no host")
    d.advance(3600)
    assert d.feed(ConnectRequested())[0] == OpenSocket(2, "guest-1", "guest")


# ----------------------------------------------------------------------------- status


def test_status_changes_are_announced_once_and_not_on_idle_ticks() -> None:
    d = Driver(tokens=GUEST)
    actions = d.feed(ConnectRequested())
    assert [a.status.state for a in of_type(actions, StatusChanged)] == ["connecting"]
    actions = d.feed(SocketConnected(d.epoch))
    assert of_type(actions, StatusChanged) == []
    actions = d.feed(Authenticated(d.epoch))
    assert [a.status.state for a in of_type(actions, StatusChanged)] == ["connected"]
    assert of_type(d.advance(5), StatusChanged) == []
    actions = d.feed(SocketDisconnected(d.epoch, "transport close"))
    (changed,) = of_type(actions, StatusChanged)
    assert changed.status.state == "disconnected"
    assert changed.status.next_retry_ms == 500


def test_next_retry_ms_counts_down_with_the_clock() -> None:
    d = Driver(tokens=GUEST, jitter=1.0)
    d.feed(ConnectRequested())
    d.feed(ConnectFailed(d.epoch, "refused"))
    assert d.machine.status(d.now).next_retry_ms == 1000
    assert d.machine.status(d.now + 0.25).next_retry_ms == 750
    assert d.machine.status(d.now + 5).next_retry_ms == 0


def test_next_deadline_tracks_the_earliest_timer() -> None:
    d = Driver(tokens=GUEST)
    assert d.machine.next_deadline() is None
    d.feed(ConnectRequested())
    assert d.machine.next_deadline() == d.now + 20  # handshake timeout
    d.spool.append(1)
    d.connect()
    assert d.machine.next_deadline() == d.now + 10  # backoff reset
    d.advance(10)
    assert d.machine.next_deadline() == d.now + 10  # ping at 20 s after auth


def test_tokens_never_show_in_reprs() -> None:
    secrets = ["acc-1", "ref-1", "guest-1", "guest-new"]
    texts = [
        repr(USER),
        repr(GuestTokenReceived(1, "guest-new")),
        repr(OpenSocket(1, "acc-1", "user")),
        repr(RefreshTokens(1, "ref-1")),
        repr(RefreshSucceeded(1, "acc-1", "ref-1")),
        repr(PersistTokens(USER)),
        repr(TokensSaved(USER)),
        repr(TokensNotSaved("Read-only file system (/data/tokens.json)")),
    ]
    for text in texts:
        for secret in secrets:
            assert secret not in text


# ----------------------------------------------------------------------------- installation binding


def test_client_id_taken_without_a_token_takes_a_new_id_and_keeps_the_spool() -> None:
    d = Driver(tokens=Tokens())
    d.spool.append(3)
    d.feed(ConnectRequested())
    first = d.epoch
    actions = d.feed(RetryAuthRequested(first, "client_id_taken"))
    assert CloseSocket(first) in actions
    assert of_type(actions, RenewClientId) == [RenewClientId()]
    assert d.client_ids == ["installation-1", "installation-2"]
    state, attempt, next_retry_ms, error = d.status()
    assert (state, attempt, next_retry_ms) == ("disconnected", 0, 100)
    assert error is not None
    assert "new installation (installation-2)" in error
    # About 100 ms later, a socket with no token (the server issues a guest token for the
    # new id), and the spool's chunks go out as they are: the shell names them.
    d.advance(0.1)
    assert d.last_open() == OpenSocket(first + 1, None, "none")
    d.feed(GuestTokenReceived(d.epoch, "guest-new"))
    d.advance(0.1)
    d.connect("guest")
    assert d.sent_seqs() == [1, 2, 3]
    assert d.spool.dead == {}
    # The notice stays until something else happens: the user learns why the id changed.
    assert "new installation" in (d.status()[3] or "")


def test_a_new_id_refused_as_taken_again_is_a_plain_failure_not_another_new_id() -> None:
    d = Driver(tokens=Tokens())
    d.feed(ConnectRequested())
    d.feed(RetryAuthRequested(d.epoch, "client_id_taken"))
    d.advance(0.1)
    actions = d.feed(RetryAuthRequested(d.epoch, "client_id_taken"))
    assert of_type(actions, RenewClientId) == []
    assert d.client_ids == ["installation-1", "installation-2"]
    state, attempt, next_retry_ms, error = d.status()
    assert (state, attempt, next_retry_ms) == ("disconnected", 1, 500)
    assert error == "server refused the connection: client_id_taken, even for a new id"
    # Once a connection was authenticated, a later refusal may take a new id again.
    d.advance(0.5)
    d.feed(GuestTokenReceived(d.epoch, "guest-2"))
    d.advance(0.1)
    d.connect("guest")
    d.feed(RetryAuthRequested(d.epoch, "invalid_token"))  # the guest token is forgotten
    d.advance(0.1)
    actions = d.feed(RetryAuthRequested(d.epoch, "client_id_taken"))
    assert of_type(actions, RenewClientId) == [RenewClientId()]


def test_client_id_taken_while_holding_a_token_forgets_it_first() -> None:
    d = Driver(tokens=GUEST)
    d.feed(ConnectRequested())
    actions = d.feed(RetryAuthRequested(d.epoch, "client_mismatch"))
    assert of_type(actions, RenewClientId) == []
    assert d.machine.tokens == Tokens()
    d.advance(0.1)
    assert d.last_open().credential == "none"
    actions = d.feed(RetryAuthRequested(d.epoch, "client_id_taken"))
    assert of_type(actions, RenewClientId) == [RenewClientId()]


def test_client_mismatch_for_a_user_signs_out_instead_of_refreshing_in_a_loop() -> None:
    d = Driver(tokens=USER)
    d.connect("user")
    actions = d.feed(RetryAuthRequested(d.epoch, "client_mismatch"))
    assert of_type(actions, RefreshTokens) == []
    assert of_type(actions, RenewClientId) == []
    assert PersistTokens(Tokens(guest_token="guest-1")) in actions
    assert d.status()[3] == CLIENT_MISMATCH_MESSAGE
    d.advance(2.0)
    assert d.last_open() == OpenSocket(2, "guest-1", "guest")
    d.connect("guest")
    status = d.machine.status(d.now)
    assert (status.state, status.identity, status.last_error) == (
        "connected",
        "guest",
        CLIENT_MISMATCH_MESSAGE,
    )


def test_disconnect_while_a_new_id_is_made_stays_disconnected() -> None:
    d = Driver(tokens=Tokens())
    d.feed(ConnectRequested())
    epoch = d.epoch
    # The shell answers ``RenewClientId`` only after the user's Disconnect is handled.
    actions = d.machine.handle(RetryAuthRequested(epoch, "client_id_taken"), d.now)
    assert of_type(actions, RenewClientId) == [RenewClientId()]
    d.feed(DisconnectRequested())
    d.feed(ClientIdRenewed("installation-2"))
    d.advance(60)
    assert d.last_open().epoch == epoch
    assert d.status()[0] == "disconnected"
    assert d.machine.next_deadline() is None


def test_a_new_id_that_cannot_be_stored_is_used_and_said() -> None:
    d = Driver(tokens=Tokens())
    d.feed(ConnectRequested())
    actions = d.machine.handle(RetryAuthRequested(d.epoch, "client_id_taken"), d.now)
    assert of_type(actions, RenewClientId) == [RenewClientId()]
    d.feed(ClientIdRenewed("installation-x", "Read-only file system (/data/client-id)"))
    error = d.status()[3] or ""
    assert "installation-x" in error
    assert "Read-only file system (/data/client-id)" in error
    d.advance(0.1)
    assert d.last_open().credential == "none"


@pytest.mark.parametrize("credential_tokens", [GUEST, Tokens()])
def test_identity_user_counts_as_guest_without_a_user_token(credential_tokens: Tokens) -> None:
    d = Driver(tokens=credential_tokens)
    d.feed(ConnectRequested())
    d.feed(SocketConnected(d.epoch))
    d.feed(Authenticated(d.epoch, "user", "admin"))
    status = d.machine.status(d.now)
    assert (status.state, status.identity, status.username) == ("connected", "guest", None)


def ack_error(payload: object) -> tuple[str | None, str | None]:
    """``(error code, message)`` of an ack as the client reads it; ``None`` is delivered."""
    ack = parse_chunk_ack(payload)
    return (ack.error, ack.message) if isinstance(ack, ChunkRefused) else (None, None)


def test_a_servers_error_code_and_message_are_bounded() -> None:
    code, message = ack_error({"error": "e" * 10_000 + "\n", "message": "m\n" * 10_000})
    assert code is not None
    assert message is not None
    assert len(code) <= 101
    assert len(message) <= MAX_MESSAGE_CHARS + 1
    assert "\n" not in code + message


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"ok": True, "chunkId": "c:1"}, (None, None)),
        ({"ok": True, "duplicate": True}, (None, None)),
        ({"message": "stored"}, (None, None)),
        ({}, (None, None)),
        (None, (None, None)),
        ("ok", (None, None)),
        ({"error": None}, (None, None)),
        ({"error": "too_large", "message": "over 1 MB"}, ("too_large", "over 1 MB")),
        ({"error": "invalid", "message": 7}, ("invalid", None)),
        ({"error": 500}, ("500", None)),
    ],
)
def test_ack_error_follows_protocol_section_4(
    payload: object, expected: tuple[str | None, str | None]
) -> None:
    assert ack_error(payload) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("invalid signature", True),
        ("JWT expired", True),
        ("Authentication failed", True),
        ("unauthorized", True),
        ("Connection refused", False),
        ("One or more namespaces failed to connect", False),
    ],
)
def test_auth_flavoured_connect_errors(message: str, expected: bool) -> None:
    assert is_auth_error(message) is expected


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="window"):
        ConnectionConfig(window=0)
    with pytest.raises(ValueError, match="ack_timeout"):
        ConnectionConfig(ack_timeout=0)
    assert ConnectionConfig(backoff=BackoffPolicy(cap=5)).backoff.cap == 5
