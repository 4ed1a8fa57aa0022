"""The connection machine's state and the steps it takes: open, close, fail, wait, start a
refresh; what is due when time passes; the status it derives.

Owns: ``ConnectionSteps``, the base of ``ConnectionState`` (as python-socketio's
``BaseClient`` holds what its clients share): the config and counters, the parts the
machine is composed of (``PhaseMachine``, ``LiveSocket``, ``DeliveryWindow``,
``TokenRefreshFlow``), the waiting schedule (when the next attempt is due, and whether it
opens or refreshes, with the connection backoff and the count of auth-driven reconnects)
and the notice shown as ``last_error``.

Must not: react to events (which event leads to which step is ``connection/state.py``'s
part), do I/O, or import asyncio, socketio or aiohttp.

Rules: every phase change goes through ``PhaseMachine.move``; a step that changes the
phase also sets the waiting schedule it implies, so no timer of an old phase fires in a
new one. Status is derived, never stored; ``StatusChanged`` is appended whenever anything
in it but the countdown changed.

Theory: see ``connection/state.py``'s docstring.
"""

from __future__ import annotations

import random
from typing import Literal

from main_process.connection.backoff import Backoff, RandomSource
from main_process.connection.delivery_window import DeliveryWindow
from main_process.connection.events import (
    Action,
    ConnectionConfig,
    ConnectionCounters,
    ConnectionStatus,
    SendPing,
    StatusChanged,
)
from main_process.connection.live_socket import LiveSocket
from main_process.connection.phases import STATE_OF_PHASE, Phase, PhaseMachine, PhaseMove
from main_process.connection.token_refresh import TokenRefreshFlow
from main_process.credentials import Tokens


def _seconds(value: float) -> str:
    return f"{value:g} s"


class ConnectionSteps:
    """The machine's state and the steps it takes; ``ConnectionState`` says which event
    leads to which step. See ``connection/state.py``'s docstring for the theory."""

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        tokens: Tokens | None = None,
        random_source: RandomSource = random.random,
    ) -> None:
        self.config = config or ConnectionConfig()
        self.counters = ConnectionCounters()
        self._backoff = Backoff(self.config.backoff, random_source)
        delivery_backoff = Backoff(self.config.backoff, random_source)
        save_backoff = Backoff(self.config.backoff, random_source)
        self._phases = PhaseMachine()
        self._socket = LiveSocket(self.config)
        self._delivery = DeliveryWindow(self.config, self.counters, delivery_backoff)
        self._token_flow = TokenRefreshFlow(tokens or Tokens(), save_backoff)

        self._last_error: str | None = None
        # The sign-out notice must survive the guest connection that follows it, or the
        # user would never learn why they are a guest now.
        self._notice_is_sticky = False

        # Waiting: when, and what to do then.
        self._retry_at: float | None = None
        self._retry_then: Literal["open", "refresh"] = "open"
        self._auth_reconnects = 0

        self._published_key: tuple[object, ...] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def phase(self) -> Phase:
        return self._phases.phase

    @property
    def tokens(self) -> Tokens:
        """The tokens held now (never log them)."""
        return self._token_flow.tokens

    def tick(self, now: float) -> list[Action]:
        """Let time pass; return the actions due by ``now``."""
        actions: list[Action] = []
        self._tick(now, actions)
        self._after(now, actions)
        return actions

    def next_deadline(self) -> float | None:
        """The earliest ``now`` at which ``tick`` has something to do, if any."""
        deadlines = [self._token_flow.save_retry_at]
        if self.phase is Phase.WAITING:
            deadlines.append(self._retry_at)
        elif self.phase is Phase.CONNECTING:
            deadlines.append(self._socket.handshake_deadline)
        elif self.phase is Phase.CONNECTED:
            deadlines += [
                self._socket.silence_deadline,
                self._socket.next_ping_at,
                self._socket.stable_at,
                self._delivery.ack_deadline(),
                self._delivery.resend_at,
            ]
        due = [deadline for deadline in deadlines if deadline is not None]
        return min(due) if due else None

    def status(self, now: float) -> ConnectionStatus:
        connected = self.phase is Phase.CONNECTED
        next_retry_ms: int | None = None
        retry_at = self._next_retry_at()
        if retry_at is not None:
            next_retry_ms = max(0, round((retry_at - now) * 1000))
        return ConnectionStatus(
            state=STATE_OF_PHASE[self.phase],
            authenticated=connected,
            identity=self._socket.identity if connected else None,
            username=self._socket.username if connected else None,
            attempt=self._backoff.failures,
            next_retry_ms=next_retry_ms,
            # A failing save outranks the rest: it is the one the user has to act on.
            last_error=self._token_flow.save_error or self._last_error,
        )

    def has_delivery_room(self, unacknowledged: int) -> bool:
        """Whether a chunk that is not full should be cut now rather than wait to group
        more lines: connected, no rejected chunk waiting to be resent, and fewer than
        ``SEND_AT_ONCE_BELOW`` chunks ``unacknowledged`` in the spool (in flight or
        waiting their turn). Full chunks go out regardless, up to ``window`` at once.

        The sources cut lines the moment they arrive while this holds, and group them
        (until the ack that frees room, or the linger) while it does not: batching that
        adapts to the load, as Nagle's algorithm does for TCP segments. Waiting while
        nothing is in flight would only add latency; cutting while chunks are
        unacknowledged would queue more small chunks behind them.
        """
        return (
            self.phase is Phase.CONNECTED
            and self._socket.epoch is not None
            and self._delivery.has_room(unacknowledged)
        )

    @property
    def live_epoch(self) -> int | None:
        return self._socket.epoch

    @property
    def in_flight_seqs(self) -> list[int]:
        """Seqs sent on the live socket and not yet answered, ascending."""
        return self._delivery.in_flight_seqs

    # ------------------------------------------------------------------ steps

    def _deliver(self, actions: list[Action]) -> None:
        """Let the delivery window load more, if connected on a live socket."""
        if self.phase is Phase.CONNECTED and self._socket.epoch is not None:
            self._delivery.load(self._socket.epoch, actions)

    def _start_refresh(self, actions: list[Action]) -> None:
        self._phases.move(PhaseMove.START_REFRESH)
        self._retry_at = None
        self._token_flow.start(actions)

    def _next_retry_at(self) -> float | None:
        if self.phase is not Phase.WAITING:
            return None
        if self._token_flow.after_save is not None:
            return self._token_flow.save_retry_at
        return self._retry_at

    # ------------------------------------------------------------------ time

    def _tick(self, now: float, actions: list[Action]) -> None:
        self._token_flow.retry_save_if_due(now, actions)
        if self.phase is Phase.WAITING:
            if self._retry_at is not None and now >= self._retry_at:
                if self._retry_then == "refresh" and self.tokens.refresh_token is not None:
                    self._start_refresh(actions)
                else:
                    self._begin_attempt(now, actions)
        elif self.phase is Phase.CONNECTING:
            if now >= self._socket.handshake_deadline:
                timeout = _seconds(self.config.handshake_timeout)
                self._fail(f"server did not authenticate within {timeout}", now, actions)
        elif self.phase is Phase.CONNECTED:
            self._tick_connected(now, actions)

    def _tick_connected(self, now: float, actions: list[Action]) -> None:
        socket = self._socket
        if socket.stable_at is not None and now >= socket.stable_at:
            socket.stable_at = None
            self._backoff.reset()
            self._auth_reconnects = 0
        if now >= socket.silence_deadline:
            silence = _seconds(self.config.silence_timeout)
            self._fail(f"no word from the server for {silence}", now, actions)
            return
        ack_deadline = self._delivery.ack_deadline()
        if ack_deadline is not None and now >= ack_deadline:
            timeout = _seconds(self.config.ack_timeout)
            self._fail(f"no acknowledgement within {timeout}", now, actions)
            return
        if socket.next_ping_at is not None and now >= socket.next_ping_at:
            assert socket.epoch is not None
            actions.append(SendPing(socket.epoch))
            socket.next_ping_at = now + self.config.ping_interval
        resend_at = self._delivery.resend_at
        if resend_at is not None and now >= resend_at:
            assert socket.epoch is not None
            self._delivery.resend_rejected(socket.epoch, now, actions)
            self._deliver(actions)

    # ------------------------------------------------------------------ transitions

    def _begin_attempt(self, now: float, actions: list[Action]) -> None:
        if self.tokens.access_token is None and self.tokens.refresh_token is not None:
            # Signed in without a usable access token (e.g. it was dropped as expired):
            # presenting the guest token instead would quietly sign the user out.
            self._start_refresh(actions)
        else:
            self._open(now, actions)

    def _open(self, now: float, actions: list[Action]) -> None:
        if not self._token_flow.on_disk(self.tokens.handshake_token):
            # Rule 8: hold until a save of it is confirmed.
            self._phases.move(PhaseMove.HOLD_FOR_SAVE)
            self._retry_at = None
            self._token_flow.hold_open(actions)
            return
        self._phases.move(PhaseMove.OPEN)
        self._retry_at = None
        self.counters.sockets_opened += 1
        actions.append(self._socket.open(self.tokens, now))

    def _close_live(self, actions: list[Action]) -> None:
        """Close the live socket, if any, and forget everything tied to it."""
        self._socket.close(actions)
        self._delivery.reset()

    def _fail(self, error: str, now: float, actions: list[Action]) -> None:
        """A connection-level failure: close, then reconnect after the backoff delay."""
        self._close_live(actions)
        self._set_error(error)
        self._phases.move(PhaseMove.FAIL)
        self._retry_then = "open"
        self._retry_at = now + self._backoff.next_delay()

    def _wait_after_auth(self, delay: float, now: float) -> None:
        """Reconnect soon after an auth step, backing off if auth keeps failing."""
        self._auth_reconnects += 1
        if self._auth_reconnects > self.config.auth_reconnects_before_backoff:
            delay = max(delay, self._backoff.next_delay())
        self._phases.move(PhaseMove.WAIT_AFTER_AUTH)
        self._retry_then = "open"
        self._retry_at = now + delay

    def _set_error(self, message: str) -> None:
        self._last_error = message
        self._notice_is_sticky = False

    def _after(self, now: float, actions: list[Action]) -> None:
        key = (
            self.phase,
            self._socket.identity,
            self._socket.username,
            self._backoff.failures,
            self._next_retry_at(),
            self._token_flow.save_error,
            self._last_error,
        )
        if key != self._published_key:
            self._published_key = key
            actions.append(StatusChanged(self.status(now)))
