"""The delivery window on the live socket: which chunks are in flight, which wait.

Owns: the chunks sent and not yet answered (with when they were sent), the chunks the
server rejected for a retry and when they go again, the load cursor and whether a load
is out, the backoff between resends, and the adaptive batching rule
(``SEND_AT_ONCE_BELOW``, ``has_room``). It turns ``ChunksLoaded`` into ``SendChunk``s and
an ``AckReceived`` into ``AcknowledgeChunk`` or ``DeadLetterChunk``.

Must not: look at the phase, sockets or tokens, or do I/O. The machine
(``connection/steps.py``, ``connection/state.py``) says when delivery may run (connected,
a live socket) and passes the live epoch in; what an ``unauthenticated`` ack or a timeout
means for the connection is its decision too.

Rules (rules 3 to 5 of ``connection/state.py``): a chunk leaves the spool only on a
positive ack or a permanent rejection; chunks go out in ``seq`` order, at most ``window``
unacknowledged (in flight plus rejected) at once, from one load at a time, never
overtaking or repeating the cursor on one socket; ``reset`` (on any close) forgets all of
it, so the next socket resends every unacknowledged chunk from the head of the spool.

Theory: the window is a sliding one over the spool's seqs, like TCP's, except that a
rejected chunk holds its slot until it is resent, and new loads wait for that resend, so
order holds. ``has_room`` is Nagle's algorithm for lines: cut a small chunk at once only
while (almost) nothing is unacknowledged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from main_process.connection.backoff import Backoff
from main_process.connection.events import (
    AcknowledgeChunk,
    AckReceived,
    Action,
    ChunksLoaded,
    ConnectionConfig,
    ConnectionCounters,
    DeadLetterChunk,
    LoadChunks,
    OutgoingChunk,
    SendChunk,
)

PERMANENT_REJECTIONS = frozenset({"too_large", "invalid"})

# How many chunks may be unacknowledged for lines still to be cut at once (see
# ``has_room``). One, not ``window``: the server handles one connection's chunks one after
# another, a durable commit each, so every small chunk already queued there is a commit a
# new line waits behind. Measured at 1,000 lines/s on loopback (bench/e2e_pipeline.py):
# wire + server p99 4-20 ms with 1, 25-29 ms with 8.
SEND_AT_ONCE_BELOW = 1


class AckOutcome(enum.Enum):
    """What an ack did to the window, for the connection to act on."""

    UNEXPECTED = "unexpected"  # not in flight: counted, nothing else
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    UNAUTHENTICATED = "unauthenticated"  # the chunk stays in the spool
    REJECTED = "rejected"  # held, resent after the delivery backoff


@dataclass(slots=True)
class _InFlight:
    chunk: OutgoingChunk
    sent_at: float


class DeliveryWindow:
    """Chunks in flight and waiting on one live socket; see the module docstring."""

    def __init__(
        self, config: ConnectionConfig, counters: ConnectionCounters, backoff: Backoff
    ) -> None:
        self._config = config
        self._counters = counters
        self._backoff = backoff
        self._in_flight: dict[int, _InFlight] = {}
        self._rejected: dict[int, OutgoingChunk] = {}
        self._resend_rejected_at: float | None = None
        self._cursor: int | None = None
        self._loading = False
        self._load_limit = 0
        self._spool_dirty = True

    @property
    def in_flight_seqs(self) -> list[int]:
        """Seqs sent on the live socket and not yet answered, ascending."""
        return sorted(self._in_flight)

    def has_room(self, unacknowledged: int) -> bool:
        """On a connected live socket: whether a chunk that is not full should be cut now
        (``ConnectionState.has_delivery_room``): no rejected chunk waiting to be resent,
        and fewer than ``SEND_AT_ONCE_BELOW`` chunks ``unacknowledged`` in the spool."""
        return self._resend_rejected_at is None and unacknowledged < min(
            self._config.window, SEND_AT_ONCE_BELOW
        )

    def spool_grew(self) -> None:
        """The spool may hold chunks not loaded yet."""
        self._spool_dirty = True

    def restart(self) -> None:
        """A socket was authenticated: deliver from the head of the spool (rule 5)."""
        self._cursor = None
        self._spool_dirty = True

    def reset(self) -> None:
        """The live socket is gone: forget everything tied to it."""
        self._in_flight.clear()
        self._rejected.clear()
        self._resend_rejected_at = None
        self._cursor = None
        self._loading = False
        self._spool_dirty = True

    # ------------------------------------------------------------------ sending

    def load(self, epoch: int, actions: list[Action]) -> None:
        """Ask for more chunks if the window has room and nothing holds loading back."""
        if self._loading or not self._spool_dirty or self._resend_rejected_at is not None:
            return
        room = self._room()
        if room <= 0:
            return
        self._loading = True
        # Cleared now, so a ``ChunksAppended`` that arrives while loading sets it again.
        self._spool_dirty = False
        self._load_limit = room
        actions.append(LoadChunks(epoch, self._cursor, room))

    def on_chunks_loaded(
        self, event: ChunksLoaded, live_epoch: int | None, now: float, actions: list[Action]
    ) -> bool:
        """Send what was loaded, in seq order, within the window; ``False`` if stale."""
        if event.epoch != live_epoch or not self._loading:
            self._counters.stale_events += 1
            return False
        self._loading = False
        room = self._room()
        sent = 0
        for chunk in sorted(event.chunks, key=lambda c: c.seq):
            if self._cursor is not None and chunk.seq <= self._cursor:
                continue  # never overtake or repeat ourselves on one socket
            if sent >= room:
                self._spool_dirty = True  # a store that returned too many; load the rest later
                break
            self._send(event.epoch, chunk, now, actions)
            self._cursor = chunk.seq
            sent += 1
        if len(event.chunks) >= self._load_limit:
            self._spool_dirty = True  # a full page: there may be more behind it
        return True

    def resend_rejected(self, epoch: int, now: float, actions: list[Action]) -> None:
        self._resend_rejected_at = None
        for seq in sorted(self._rejected):
            self._send(epoch, self._rejected.pop(seq), now, actions)

    def _send(self, epoch: int, chunk: OutgoingChunk, now: float, actions: list[Action]) -> None:
        actions.append(SendChunk(epoch, chunk))
        self._in_flight[chunk.seq] = _InFlight(chunk, now)
        self._counters.chunks_sent += 1

    def _room(self) -> int:
        return self._config.window - len(self._in_flight) - len(self._rejected)

    # ------------------------------------------------------------------ answers

    def on_ack(self, event: AckReceived, now: float, actions: list[Action]) -> AckOutcome:
        in_flight = self._in_flight.pop(event.seq, None)
        if in_flight is None:
            self._counters.unexpected_acks += 1
            return AckOutcome.UNEXPECTED
        if event.error is None:
            actions.append(AcknowledgeChunk(event.seq))
            self._counters.chunks_acknowledged += 1
            self._backoff.reset()
            return AckOutcome.DELIVERED
        if event.error in PERMANENT_REJECTIONS:
            actions.append(DeadLetterChunk(event.seq, event.error, event.message))
            self._counters.chunks_dead_lettered += 1
            return AckOutcome.DEAD_LETTERED
        if event.error == "unauthenticated":
            return AckOutcome.UNAUTHENTICATED
        self._counters.chunks_rejected_for_retry += 1
        self._rejected[event.seq] = in_flight.chunk
        if self._resend_rejected_at is None:
            self._resend_rejected_at = now + self._backoff.next_delay()
        return AckOutcome.REJECTED

    # ------------------------------------------------------------------ time

    def ack_deadline(self) -> float | None:
        """When the oldest chunk in flight has waited ``ack_timeout`` for its ack."""
        if not self._in_flight:
            return None
        oldest = min(item.sent_at for item in self._in_flight.values())
        return oldest + self._config.ack_timeout

    @property
    def resend_at(self) -> float | None:
        """When the rejected chunks go out again, if any wait."""
        return self._resend_rejected_at
