"""The connection's phase table: every move in it is one the machine makes, nothing else is.

Each entry of ``PHASE_MOVES`` has a scenario here, a sequence of events from today's
behaviour that makes that move from that phase; a recorder on ``PhaseMachine.move`` checks
it happened. A move the table does not hold raises and leaves the phase alone. A random
walk over every kind of event (token saves failing included) never makes an illegal move.
And the table ``connection/state.py``'s docstring shows is the one the code uses.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from main_process.connection import state as connection_state
from main_process.connection.phases import (
    PHASE_MOVES,
    IllegalPhaseMove,
    Phase,
    PhaseMachine,
    PhaseMove,
    render_phase_moves,
)
from main_process.connection.state import (
    AckReceived,
    Authenticated,
    ChunksAppended,
    ClientIdRenewed,
    ConnectFailed,
    ConnectRequested,
    CredentialsChanged,
    DisconnectRequested,
    EnsureConnected,
    Event,
    FatalError,
    GuestTokenReceived,
    RefreshFailed,
    RefreshRefused,
    RefreshSucceeded,
    RefreshTokens,
    RetryAuthRequested,
    SocketConnected,
    SocketDisconnected,
)
from main_process.credentials import Tokens
from tests.support.connection_driver import GUEST, USER, Driver

Move = tuple[Phase, PhaseMove]


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[Move]:
    """Every move the machines make while the test runs, with the phase it started from."""
    taken: list[Move] = []
    take = PhaseMachine.move

    def recording(self: PhaseMachine, move: PhaseMove) -> Phase:
        taken.append((self.phase, move))
        return take(self, move)

    monkeypatch.setattr(PhaseMachine, "move", recording)
    return taken


# ----------------------------------------------------------------------------- into a phase


def idle(tokens: Tokens = GUEST) -> Driver:
    return Driver(tokens=tokens)


def connecting(tokens: Tokens = GUEST) -> Driver:
    d = Driver(tokens=tokens)
    d.feed(ConnectRequested())
    assert d.machine.phase is Phase.CONNECTING
    return d


def connected(tokens: Tokens = GUEST) -> Driver:
    d = Driver(tokens=tokens)
    d.connect()
    assert d.machine.phase is Phase.CONNECTED
    return d


def waiting() -> Driver:
    d = connecting()
    d.feed(SocketDisconnected(d.epoch, "transport close"))
    assert d.machine.phase is Phase.WAITING
    return d


def refreshing() -> Driver:
    """A user whose access token was refused: the refresh request (id 1) is out."""
    d = connected(USER)
    d.feed(RetryAuthRequested(d.epoch))
    assert d.machine.phase is Phase.REFRESHING
    return d


def failed(tokens: Tokens = GUEST) -> Driver:
    d = Driver(tokens=tokens)
    d.feed(FatalError("unusable server URL"))
    assert d.machine.phase is Phase.FAILED
    return d


def with_guest_token_unsaved() -> Driver:
    """Connected with no token; the server's guest token could not be saved."""
    d = connected(Tokens())
    d.save_refused = "read-only file system"
    d.feed(GuestTokenReceived(d.epoch, "guest-9"))
    assert d.machine.phase is Phase.WAITING
    return d


def refresh_save_failed() -> Driver:
    """A user's refresh waits in WAITING: the save before it failed."""
    d = connected(USER)
    d.save_refused = "disk full"
    d.feed(RetryAuthRequested(d.epoch))
    assert d.machine.phase is Phase.WAITING
    return d


def refresh_failed() -> Driver:
    d = refreshing()
    d.feed(RefreshFailed(1, "HTTP 502"))
    assert d.machine.phase is Phase.WAITING
    return d


# ----------------------------------------------------------------------------- scenarios


def _open_from_waiting() -> None:
    waiting().advance_to_retry()


def _hold_from_waiting() -> Driver:
    d = with_guest_token_unsaved()
    d.advance_to_retry()
    return d


def _hold_from_idle() -> None:
    d = with_guest_token_unsaved()
    d.feed(DisconnectRequested())
    d.feed(ConnectRequested())


def _hold_from_failed() -> None:
    d = with_guest_token_unsaved()
    d.feed(FatalError("unusable server URL"))
    d.feed(ConnectRequested())


def _save_confirmed() -> None:
    d = _hold_from_waiting()
    d.save_refused = None
    d.advance(120)


def _await_refresh_from(stop: Callable[[Driver], object]) -> Callable[[], None]:
    def scenario() -> None:
        d = refreshing()
        stop(d)
        d.feed(ConnectRequested())

    return scenario


def _send_refresh_from_waiting() -> None:
    d = refresh_save_failed()
    d.save_refused = None
    d.advance(120)


def _client_id_renewed() -> None:
    # The shell answers ``RenewClientId`` at once: WAITING, then soon open again.
    d = connected(Tokens())
    d.feed(RetryAuthRequested(d.epoch, "client_id_taken"))


def _guest_token_refused_while_connecting() -> None:
    d = connecting()
    d.feed(ConnectFailed(d.epoch, "auth failed: invalid signature"))


def _guest_token_refused_while_connected() -> None:
    d = connected()
    d.feed(RetryAuthRequested(d.epoch))


def _user_token_refused_while_connecting() -> None:
    d = connecting(USER)
    d.feed(ConnectFailed(d.epoch, "jwt expired"))


def _client_id_taken_while_connecting() -> None:
    d = connecting(Tokens())
    d.feed(RetryAuthRequested(d.epoch, "client_id_taken"))


def _feeding(into: Callable[[], Driver], event: Event) -> Callable[[], object]:
    return lambda: into().feed(event)


OTHER_GUEST = Tokens(guest_token="guest-2")
ONLY_REFRESH = Tokens(refresh_token="ref-2")

SCENARIOS: dict[Move, Callable[[], object]] = {
    (Phase.IDLE, PhaseMove.OPEN): lambda: idle().feed(ConnectRequested()),
    (Phase.WAITING, PhaseMove.OPEN): _open_from_waiting,
    (Phase.CONNECTING, PhaseMove.OPEN): lambda: connecting().feed(CredentialsChanged(OTHER_GUEST)),
    (Phase.REFRESHING, PhaseMove.OPEN): lambda: refreshing().feed(CredentialsChanged(GUEST)),
    (Phase.CONNECTED, PhaseMove.OPEN): lambda: connected().feed(CredentialsChanged(OTHER_GUEST)),
    (Phase.FAILED, PhaseMove.OPEN): lambda: failed().feed(ConnectRequested()),
    (Phase.CONNECTING, PhaseMove.AUTHENTICATE): connected,
    (Phase.CONNECTING, PhaseMove.FAIL): waiting,
    (Phase.CONNECTED, PhaseMove.FAIL): lambda: connected().advance(600),
    (Phase.WAITING, PhaseMove.WAIT_AFTER_AUTH): _client_id_renewed,
    (Phase.CONNECTING, PhaseMove.WAIT_AFTER_AUTH): _guest_token_refused_while_connecting,
    (Phase.REFRESHING, PhaseMove.WAIT_AFTER_AUTH): lambda: refreshing().feed(
        RefreshRefused(1, 401)
    ),
    (Phase.CONNECTED, PhaseMove.WAIT_AFTER_AUTH): _guest_token_refused_while_connected,
    (Phase.IDLE, PhaseMove.HOLD_FOR_SAVE): _hold_from_idle,
    (Phase.WAITING, PhaseMove.HOLD_FOR_SAVE): _hold_from_waiting,
    (Phase.FAILED, PhaseMove.HOLD_FOR_SAVE): _hold_from_failed,
    (Phase.WAITING, PhaseMove.SAVE_CONFIRMED): _save_confirmed,
    (Phase.IDLE, PhaseMove.START_REFRESH): lambda: idle(ONLY_REFRESH).feed(ConnectRequested()),
    (Phase.WAITING, PhaseMove.START_REFRESH): lambda: refresh_failed().advance_to_retry(),
    (Phase.CONNECTING, PhaseMove.START_REFRESH): _user_token_refused_while_connecting,
    (Phase.REFRESHING, PhaseMove.START_REFRESH): lambda: refreshing().feed(
        CredentialsChanged(ONLY_REFRESH)
    ),
    (Phase.CONNECTED, PhaseMove.START_REFRESH): refreshing,
    (Phase.FAILED, PhaseMove.START_REFRESH): lambda: failed(ONLY_REFRESH).feed(ConnectRequested()),
    (Phase.IDLE, PhaseMove.AWAIT_REFRESH): _await_refresh_from(
        lambda d: d.feed(DisconnectRequested())
    ),
    (Phase.FAILED, PhaseMove.AWAIT_REFRESH): _await_refresh_from(
        lambda d: d.feed(FatalError("unusable server URL"))
    ),
    (Phase.WAITING, PhaseMove.SEND_REFRESH): _send_refresh_from_waiting,
    (Phase.REFRESHING, PhaseMove.SEND_REFRESH): refreshing,
    (Phase.REFRESHING, PhaseMove.REFRESH_FAILED): refresh_failed,
    (Phase.REFRESHING, PhaseMove.SAVE_FAILED): refresh_save_failed,
    (Phase.CONNECTING, PhaseMove.RENEW_CLIENT_ID): _client_id_taken_while_connecting,
    (Phase.CONNECTED, PhaseMove.RENEW_CLIENT_ID): _client_id_renewed,
}
INTO_PHASE: dict[Phase, Callable[[], Driver]] = {
    Phase.IDLE: idle,
    Phase.WAITING: waiting,
    Phase.CONNECTING: connecting,
    Phase.REFRESHING: refreshing,
    Phase.CONNECTED: connected,
    Phase.FAILED: failed,
}
for _phase, _into in INTO_PHASE.items():
    SCENARIOS[_phase, PhaseMove.DISCONNECT] = _feeding(_into, DisconnectRequested())
    SCENARIOS[_phase, PhaseMove.FATAL] = _feeding(_into, FatalError("unusable server URL"))


def test_every_move_in_the_table_has_a_scenario_and_nothing_else_does() -> None:
    assert set(SCENARIOS) == set(PHASE_MOVES)


def _name(move: Move) -> str:
    return f"{move[1].value} from {move[0].name}"


LEGAL: list[Move] = sorted(PHASE_MOVES, key=_name)


@pytest.mark.parametrize("move", LEGAL, ids=[_name(m) for m in LEGAL])
def test_every_move_in_the_table_is_made_by_some_events(move: Move, moves: list[Move]) -> None:
    SCENARIOS[move]()
    assert move in moves
    assert all(taken in PHASE_MOVES for taken in moves)


# ----------------------------------------------------------------------------- illegal moves

ILLEGAL = [
    (phase, move) for phase in Phase for move in PhaseMove if (phase, move) not in PHASE_MOVES
]


@pytest.mark.parametrize(("phase", "move"), ILLEGAL, ids=[_name(m) for m in ILLEGAL])
def test_an_illegal_move_raises_and_keeps_the_phase(phase: Phase, move: PhaseMove) -> None:
    machine = PhaseMachine(phase)
    with pytest.raises(IllegalPhaseMove, match=f"{move.value} from {phase.name}"):
        machine.move(move)
    assert machine.phase is phase


def test_an_illegal_move_inside_the_machine_raises_from_handle() -> None:
    """Were the machine to take a move the table does not hold, ``handle`` raises (the
    shell logs it and goes on with the next event) rather than enter an unplanned phase."""
    d = connected()
    epoch = d.epoch
    d.machine._phases = PhaseMachine(Phase.IDLE)  # a bug's stand-in: IDLE with a live socket
    with pytest.raises(IllegalPhaseMove, match="fail from IDLE"):
        d.machine.handle(SocketDisconnected(epoch, "transport close"), d.now)
    assert d.machine.phase is Phase.IDLE


# ----------------------------------------------------------------------------- the docstring


def docstring_block(doc: str, introduction: str) -> str:
    """The literal block that follows the paragraph ending with ``introduction``."""
    after = doc.split(introduction, 1)[1]
    lines = after.split("\n")[2:]  # the rest of the line, then the blank line
    block = []
    for line in lines:
        if not line.strip():
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def test_the_docstring_shows_the_table_the_code_uses() -> None:
    doc = connection_state.__doc__
    assert doc is not None
    shown = docstring_block(doc, "(a test checks this block against the table)::")
    assert shown == render_phase_moves()


def test_the_rendered_table_lists_every_entry_once() -> None:
    rendered = render_phase_moves().splitlines()
    assert len(rendered) == len(PhaseMove)
    for line in rendered:
        name, rest = line.split(maxsplit=1)
        origins, end = rest.split(" → ")
        move = PhaseMove(name)
        starts = list(Phase) if origins == "any phase" else [Phase[o] for o in origins.split(", ")]
        assert {(p, move) for p in starts} == {k for k in PHASE_MOVES if k[1] is move}
        assert {PHASE_MOVES[p, move] for p in starts} == {Phase[end]}


# ----------------------------------------------------------------------------- random walks

TOKEN_CHOICES = [USER, GUEST, Tokens(), ONLY_REFRESH, OTHER_GUEST]
STEPS = st.sampled_from(
    [
        "connect",
        "ensure",
        "disconnect",
        "fatal",
        "credentials",
        "socket_connected",
        "authenticated",
        "connect_failed",
        "auth_failed",
        "disconnected",
        "guest_token",
        "retry_auth",
        "ack",
        "append",
        "refresh_answer",
        "saves_fail",
        "saves_work",
        "client_id_renewed",
        "time",
    ]
)


def walk_step(d: Driver, step: str, data: st.DataObject) -> None:
    live = d.machine.live_epoch
    if step == "connect":
        d.feed(ConnectRequested())
    elif step == "ensure":
        d.feed(EnsureConnected())
    elif step == "disconnect":
        d.feed(DisconnectRequested())
    elif step == "fatal":
        d.feed(FatalError("unusable server URL"))
    elif step == "credentials":
        d.feed(CredentialsChanged(data.draw(st.sampled_from(TOKEN_CHOICES))))
    elif step == "append":
        d.spool.append(data.draw(st.integers(1, 3)))
        d.feed(ChunksAppended())
    elif step == "refresh_answer":
        asked = [a.request_id for a in d.actions if isinstance(a, RefreshTokens)]
        if asked:
            request = data.draw(st.sampled_from(asked))
            answers: list[Event] = [
                RefreshSucceeded(request, f"acc-{request}", f"ref-{request}"),
                RefreshRefused(request, 401),
                RefreshFailed(request, "HTTP 502"),
            ]
            d.feed(data.draw(st.sampled_from(answers)))
    elif step == "saves_fail":
        d.save_refused = "disk full"
    elif step == "saves_work":
        d.save_refused = None
    elif step == "client_id_renewed":
        d.feed(ClientIdRenewed("installation-x"))  # usually stale: nothing asked for it
    elif step == "time":
        d.advance(data.draw(st.sampled_from([0.05, 1.0, 5.0, 25.0, 120.0])))
    elif live is not None:
        walk_socket_step(d, live, step, data)


def walk_socket_step(d: Driver, epoch: int, step: str, data: st.DataObject) -> None:
    # Sometimes an epoch that is no longer live: a late event from an old socket.
    epoch = data.draw(st.sampled_from([epoch, epoch, epoch, max(1, epoch - 1)]))
    if step == "socket_connected":
        d.feed(SocketConnected(epoch))
    elif step == "authenticated":
        d.feed(Authenticated(epoch, data.draw(st.sampled_from([None, "user", "guest"]))))
    elif step == "connect_failed":
        d.feed(ConnectFailed(epoch, "connection refused"))
    elif step == "auth_failed":
        d.feed(ConnectFailed(epoch, "jwt expired"))
    elif step == "disconnected":
        d.feed(SocketDisconnected(epoch, "transport close"))
    elif step == "guest_token":
        d.feed(GuestTokenReceived(epoch, data.draw(st.sampled_from(["guest-7", "guest-8"]))))
    elif step == "retry_auth":
        reason = data.draw(st.sampled_from([None, "client_id_taken", "client_mismatch", "x"]))
        d.feed(RetryAuthRequested(epoch, reason))
    elif step == "ack" and d.machine.in_flight_seqs:
        seq = data.draw(st.sampled_from(d.machine.in_flight_seqs))
        error = data.draw(st.sampled_from([None, None, "too_large", "unauthenticated", "busy"]))
        d.feed(AckReceived(epoch, seq, error))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(
    tokens=st.sampled_from(TOKEN_CHOICES),
    steps=st.lists(STEPS, min_size=1, max_size=40),
    data=st.data(),
)
def test_no_sequence_of_events_makes_an_illegal_move(
    tokens: Tokens, steps: list[str], data: st.DataObject
) -> None:
    d = Driver(tokens=tokens)
    for step in steps:
        walk_step(d, step, data)  # an illegal move would raise IllegalPhaseMove here
