"""Coalescing published messages into page updates: the bridge's decisions, without I/O.

Owns: what is kept between two pushes into the page and what is thrown away. The feed may
deliver thousands of messages a second; the page is updated at most ~30 times a second,
and each update carries:

* the latest ``Status``, the latest ``Stats`` and the latest ``ShippingHistory`` (state
  topics: only the present matters, so a newer value replaces an older one that was
  never shown, and a value equal to the one the page shows already is not pushed again);
* the log lines received since the last push, at most ``max_lines`` of them (the page
  shows only its last 1,000 lines, so older pending lines could never be seen; they are
  dropped here and counted, which bounds memory however hard the feed floods);
* the server events received since the last push, at most ``max_events``.

Each log line's text is cut to ``max_line_chars`` for display (the spool, not the page,
is where the full text lives), so a single enormous line cannot bloat the page either.

``take()`` returns the pending update as the JavaScript the page runs, or ``None``.

What was taken is remembered (the latest status, stats and history, the last ``max_lines`` lines
and ``max_events`` events): a page that lost its render process and was reloaded starts
empty, and ``replay()`` makes all of it pending again, ahead of anything newer, so the
fresh page is repainted with what the old one showed.

Must not: be shared between threads without the caller's lock, touch pywebview, or sleep.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from ipc.messages import (
    LogLine,
    LogLines,
    Published,
    ServerEvent,
    ShippingHistory,
    Stats,
    Status,
    WindowState,
)

MAX_PAGE_LINES = 1000
MAX_PENDING_EVENTS = 200
MAX_LINE_CHARS = 4096

_JSON = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A server event with the wall-clock time (ms) this window received it."""

    at: int
    payload: dict[str, object]


@dataclass(slots=True)
class CoalescerCounters:
    received: int = 0
    lines_received: int = 0
    lines_dropped: int = 0
    events_dropped: int = 0
    pushes: int = 0


class UpdateCoalescer:
    """Pending page state between two pushes; see the module docstring for the rules."""

    def __init__(
        self,
        max_lines: int = MAX_PAGE_LINES,
        max_events: int = MAX_PENDING_EVENTS,
        max_line_chars: int = MAX_LINE_CHARS,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._status: Status | None = None
        self._stats: Stats | None = None
        self._history: ShippingHistory | None = None
        self._lines: deque[LogLine] = deque(maxlen=max_lines)
        self._events: deque[PendingEvent] = deque(maxlen=max_events)
        self._max_line_chars = max_line_chars
        self._wall_clock_ms = wall_clock_ms
        self.counters = CoalescerCounters()
        # What the page was last given (see replay()).
        self._shown_status: Status | None = None
        self._shown_stats: Stats | None = None
        self._shown_history: ShippingHistory | None = None
        self._shown_lines: deque[LogLine] = deque(maxlen=max_lines)
        self._shown_events: deque[PendingEvent] = deque(maxlen=max_events)

    @property
    def pending(self) -> bool:
        return bool(
            self._status is not None
            or self._stats is not None
            or self._history is not None
            or self._lines
            or self._events
        )

    @property
    def has_status(self) -> bool:
        return self._status is not None

    def add(self, message: Published) -> None:
        self.counters.received += 1
        # A state the page already shows, with nothing else pending for it, is not pushed
        # again (the main process republishes unchanged stats every second).
        if isinstance(message, Status):
            if self._status is not None or message != self._shown_status:
                self._status = message
        elif isinstance(message, Stats):
            if self._stats is not None or message != self._shown_stats:
                self._stats = message
        elif isinstance(message, ShippingHistory):
            if self._history is not None or message != self._shown_history:
                self._history = message
        elif isinstance(message, LogLines):
            self._add_lines(message.lines)
        elif isinstance(message, ServerEvent):
            if len(self._events) == self._events.maxlen:
                self.counters.events_dropped += 1
            self._events.append(PendingEvent(self._wall_clock_ms(), message.payload))
        elif isinstance(message, WindowState):
            pass  # other windows' states are for `log-monitor windows`, not for the page

    def _add_lines(self, lines: tuple[LogLine, ...]) -> None:
        self.counters.lines_received += len(lines)
        room = self._lines.maxlen or 0
        overflow = len(self._lines) + len(lines) - room
        if overflow > 0:
            self.counters.lines_dropped += overflow
        # Only the newest `room` lines of this batch can survive; skip the rest early.
        for line in lines[-room:]:
            if len(line.text) > self._max_line_chars:
                line = LogLine(path=line.path, text=line.text[: self._max_line_chars] + "…")
            self._lines.append(line)

    def replay(self) -> None:
        """Make everything taken so far pending again (for a page that starts over)."""
        self._status = self._status or self._shown_status
        self._stats = self._stats or self._shown_stats
        self._history = self._history or self._shown_history
        lines = [*self._shown_lines, *self._lines]
        events = [*self._shown_events, *self._events]
        self._shown_lines.clear()
        self._shown_events.clear()
        self._lines.clear()
        self._lines.extend(lines)  # bounded: the oldest beyond max_lines fall off
        self._events.clear()
        self._events.extend(events)

    def take(self) -> str | None:
        """The pending update as one JavaScript statement list, and forget it; or None."""
        if not self.pending:
            return None
        parts: list[str] = []
        if self._status is not None:
            parts.append(f"lm.applyStatus({_JSON.encode(self._status).decode()});")
        if self._stats is not None:
            parts.append(f"lm.applyStats({_JSON.encode(self._stats).decode()});")
        if self._history is not None:
            parts.append(f"lm.applyHistory({_JSON.encode(self._history).decode()});")
        if self._lines:
            parts.append(f"lm.appendLines({_JSON.encode(list(self._lines)).decode()});")
        if self._events:
            events = [{"at": e.at, "payload": e.payload} for e in self._events]
            parts.append(f"lm.appendEvents({_JSON.encode(events).decode()});")
        self._shown_status = self._status or self._shown_status
        self._shown_stats = self._stats or self._shown_stats
        self._shown_history = self._history or self._shown_history
        self._shown_lines.extend(self._lines)
        self._shown_events.extend(self._events)
        self._status = None
        self._stats = None
        self._history = None
        self._lines.clear()
        self._events.clear()
        self.counters.pushes += 1
        # `lm` is a local name so the page's globals stay out of the statement; the
        # trailing `0` keeps the result a plain value for pywebview to return.
        return "(function (lm) {" + "".join(parts) + "})(window.lm); 0"
