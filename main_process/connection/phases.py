"""The connection's phases and the moves between them, as data.

Owns: ``Phase`` (the six phases), ``PhaseMove`` (every reason the phase can change),
``PHASE_MOVES`` (the table: a move from a phase leads to one phase; a pair not in it is
illegal), ``PhaseMachine`` (the one place a phase is assigned) and ``render_phase_moves``
(the table as the text block ``connection/state.py``'s docstring shows).

Must not: decide anything about sockets, chunks or tokens, or do I/O. Which move happens
when is ``connection/state.py``'s decision; this module only says whether it is legal.

Rules: every phase change goes through ``PhaseMachine.move``; a move the table does not
hold raises ``IllegalPhaseMove`` and leaves the phase as it was. The table lists exactly
the moves the machine makes (``tests/unit/test_connection_phases.py`` reaches every entry and
checks the docstring's block against ``render_phase_moves``), so a raise is a bug.

Theory: as in h11's ``_state.py``, the states and transitions are a table, and the code
asks the table instead of assigning a state, so an unexpected path fails loudly where it
happens rather than leaving the machine in a phase nothing expects. In tests the raise
fails the test. In production the shell (``connection/server_connection.py``'s driver) catches it like any
error in handling an event: it logs the event and the traceback ("handling ... failed")
and goes on with the next event; the machine keeps its previous phase, the actions of that
one event are lost, and the timers it had (a handshake, an ack, the silence timeout) bring
it back to a legal path. The main process never stops for it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from main_process.connection.events import ConnectionStateName


class Phase(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"
    CONNECTING = "connecting"
    REFRESHING = "refreshing"
    CONNECTED = "connected"
    FAILED = "failed"


class PhaseMove(enum.Enum):
    """Why the phase changes; each value names the step ``connection/state.py`` takes."""

    OPEN = "open"
    """A socket opens, presenting a token the file holds."""
    AUTHENTICATE = "authenticate"
    """The server's ``authenticated`` arrived on the live socket (rule 1)."""
    FAIL = "fail"
    """The live socket failed or timed out: reconnect after the backoff."""
    WAIT_AFTER_AUTH = "wait_after_auth"
    """An auth step is done (a guest token, a refused token, a refresh answered or saved,
    a new client id): reconnect soon."""
    HOLD_FOR_SAVE = "hold_for_save"
    """The token to present is not on disk yet: wait for a confirmed save (rule 8)."""
    SAVE_CONFIRMED = "save_confirmed"
    """The save a held open waited for is confirmed: open now."""
    START_REFRESH = "start_refresh"
    """The access token is refused or missing: save the tokens held, then refresh."""
    AWAIT_REFRESH = "await_refresh"
    """A Connect while a refresh is still out: wait for its answer."""
    SEND_REFRESH = "send_refresh"
    """The save before a refresh is confirmed: present the refresh token."""
    REFRESH_FAILED = "refresh_failed"
    """The refresh failed (network, 5xx): refresh again after the backoff."""
    SAVE_FAILED = "save_failed"
    """A save the refresh flow waited for failed: wait, counting down to the next save."""
    RENEW_CLIENT_ID = "renew_client_id"
    """``client_id_taken`` to a socket with no token: wait for a new id (rule 11)."""
    DISCONNECT = "disconnect"
    """The user's Disconnect (rule 7)."""
    FATAL = "fatal"
    """An error the machine cannot retry its way out of; only Connect leaves it."""


class IllegalPhaseMove(RuntimeError):
    """A move ``PHASE_MOVES`` does not allow from the current phase: a bug in the machine."""

    def __init__(self, phase: Phase, move: PhaseMove) -> None:
        super().__init__(f"illegal connection phase move: {move.value} from {phase.name}")
        self.phase = phase
        self.move = move


_ANY_PHASE = tuple(Phase)
_SOCKET_LIVE = (Phase.CONNECTING, Phase.CONNECTED)


def _table(
    rows: tuple[tuple[PhaseMove, tuple[Phase, ...], Phase], ...],
) -> Mapping[tuple[Phase, PhaseMove], Phase]:
    return MappingProxyType({(start, move): end for move, starts, end in rows for start in starts})


# (phase, move) -> next phase. The rows are in ``PhaseMove`` order, the starting phases in
# ``Phase`` order, so that the rendered table reads the same as this one.
PHASE_MOVES: Final[Mapping[tuple[Phase, PhaseMove], Phase]] = _table(
    (
        (PhaseMove.OPEN, _ANY_PHASE, Phase.CONNECTING),
        (PhaseMove.AUTHENTICATE, (Phase.CONNECTING,), Phase.CONNECTED),
        (PhaseMove.FAIL, _SOCKET_LIVE, Phase.WAITING),
        (
            PhaseMove.WAIT_AFTER_AUTH,
            (Phase.WAITING, Phase.CONNECTING, Phase.REFRESHING, Phase.CONNECTED),
            Phase.WAITING,
        ),
        (PhaseMove.HOLD_FOR_SAVE, (Phase.IDLE, Phase.WAITING, Phase.FAILED), Phase.WAITING),
        (PhaseMove.SAVE_CONFIRMED, (Phase.WAITING,), Phase.WAITING),
        (PhaseMove.START_REFRESH, _ANY_PHASE, Phase.REFRESHING),
        (PhaseMove.AWAIT_REFRESH, (Phase.IDLE, Phase.FAILED), Phase.REFRESHING),
        (PhaseMove.SEND_REFRESH, (Phase.WAITING, Phase.REFRESHING), Phase.REFRESHING),
        (PhaseMove.REFRESH_FAILED, (Phase.REFRESHING,), Phase.WAITING),
        (PhaseMove.SAVE_FAILED, (Phase.REFRESHING,), Phase.WAITING),
        (PhaseMove.RENEW_CLIENT_ID, _SOCKET_LIVE, Phase.WAITING),
        (PhaseMove.DISCONNECT, _ANY_PHASE, Phase.IDLE),
        (PhaseMove.FATAL, _ANY_PHASE, Phase.FAILED),
    )
)

STATE_OF_PHASE: Final[Mapping[Phase, ConnectionStateName]] = MappingProxyType(
    {
        Phase.IDLE: "disconnected",
        Phase.WAITING: "disconnected",
        Phase.CONNECTING: "connecting",
        Phase.REFRESHING: "connecting",
        Phase.CONNECTED: "connected",
        Phase.FAILED: "error",
    }
)


class PhaseMachine:
    """The current phase; it changes only by a move ``PHASE_MOVES`` allows."""

    def __init__(self, phase: Phase = Phase.IDLE) -> None:
        self._phase = phase

    @property
    def phase(self) -> Phase:
        return self._phase

    def move(self, move: PhaseMove) -> Phase:
        """Take ``move``; raise ``IllegalPhaseMove`` (phase unchanged) if it is not legal."""
        try:
            self._phase = PHASE_MOVES[self._phase, move]
        except KeyError:
            raise IllegalPhaseMove(self._phase, move) from None
        return self._phase


def render_phase_moves() -> str:
    """``PHASE_MOVES`` as text: one line per move, its starting phases, then where it leads."""
    lines = []
    for move in PhaseMove:
        starts = [phase.name for phase in Phase if (phase, move) in PHASE_MOVES]
        if not starts:
            continue
        end = PHASE_MOVES[Phase[starts[0]], move]
        origin = "any phase" if len(starts) == len(Phase) else ", ".join(starts)
        lines.append(f"{move.value:<16} {origin} → {end.name}")
    return "\n".join(lines)
