"""Sequence-number bookkeeping for a subscriber: repeats, gaps, restarts. No I/O.

Owns: the frame layout of a published message's second frame (publisher epoch and
per-topic sequence number), and the decision, for each message a subscriber receives,
whether to deliver it, drop it as a repeat, or note a gap and ask for a resync.

Theory of operation (zguide chapter 5, Last Value Cache and Clone):

* The publisher numbers each topic separately: 1, 2, 3, ... A subscriber remembers the
  last number it delivered per topic and delivers only larger ones. The Last Value Cache
  re-sends a state topic's cached message *with its original number* to every subscriber
  of that topic whenever anyone subscribes, so old subscribers see that number again and
  drop it here as a repeat.
* A number more than one past the last means messages were dropped on the way (the
  publisher never waits for a slow subscriber; the high-water mark drops instead). State
  messages are complete values, so the one that revealed the gap is delivered (it is the
  newest), but other state topics may have lost their newest value with no later message
  to reveal it. So any gap asks for a snapshot of every state topic (``needs_resync``),
  and snapshot entries newer than what was delivered are delivered too. On stream topics
  (logs, events) the gap is counted as lost messages: nothing can bring them back.
* Overflow drops the *newest* messages (whatever comes once the queue is full), so the
  last change before a quiet spell could be lost with nothing after it to reveal the
  gap. The publisher's heartbeat (every second) carries every topic's latest number;
  a subscriber behind on a state topic resyncs, so it shows the present within one
  interval (``note_published``).
* The publisher picks a random 64-bit *epoch* when it starts. The sequence frame carries
  it, so a subscriber that outlives a restarted main process does not drop the new
  process's messages (which restart at 1) as repeats: a new epoch resets the numbering
  and asks for a snapshot.

Must not: touch sockets, decode bodies or know about topics beyond treating them as keys.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

_SEQUENCE: Final = struct.Struct(">QQ")
SEQUENCE_FRAME_SIZE: Final = _SEQUENCE.size


def pack_sequence(epoch: int, seq: int) -> bytes:
    """The sequence frame: 8-byte big-endian epoch, then 8-byte big-endian number."""
    return _SEQUENCE.pack(epoch, seq)


def unpack_sequence(frame: bytes) -> tuple[int, int] | None:
    """``(epoch, seq)`` from a sequence frame, or ``None`` if it is not one."""
    if len(frame) != SEQUENCE_FRAME_SIZE:
        return None
    epoch, seq = _SEQUENCE.unpack(frame)
    return int(epoch), int(seq)


@dataclass(slots=True)
class SequenceCounters:
    """What the tracker has seen, for tests, logs and status."""

    delivered: int = 0
    repeats: int = 0
    gaps: int = 0
    lost: int = 0
    restarts: int = 0


class SequenceTracker:
    """Per-topic last-delivered numbers under one publisher epoch."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.last: dict[bytes, int] = {}
        self.needs_resync = False
        self.counters = SequenceCounters()

    def _switch_epoch(self, epoch: int) -> None:
        if self.epoch is not None and epoch != self.epoch:
            self.counters.restarts += 1
            self.last.clear()
            # Other state topics of the new publisher are unknown until a snapshot.
            self.needs_resync = True
        self.epoch = epoch

    def accept(self, topic: bytes, epoch: int, seq: int) -> bool:
        """Whether to deliver a message received on the subscription."""
        if epoch != self.epoch:
            self._switch_epoch(epoch)
        last = self.last.get(topic)
        if last is not None:
            if seq <= last:
                self.counters.repeats += 1
                return False
            if seq > last + 1:
                self.counters.gaps += 1
                self.counters.lost += seq - last - 1
                self.needs_resync = True
        self.last[topic] = seq
        self.counters.delivered += 1
        return True

    def note_published(self, topic: bytes, seq: int, *, state: bool) -> None:
        """A heartbeat says ``topic`` has reached ``seq`` (call after ``accept`` of it).

        Everything sent before the heartbeat arrived before it (one queue, in order), so
        a smaller last number means the newest messages were dropped: a state topic
        needs a snapshot, a stream topic has lost them for good. A topic never seen on
        a stream is a baseline (we joined late), not a loss.
        """
        last = self.last.get(topic)
        if last is not None and last >= seq:
            return
        if state:
            self.counters.gaps += 1
            self.needs_resync = True
        elif last is not None:
            self.counters.gaps += 1
            self.counters.lost += seq - last
            self.last[topic] = seq
        else:
            self.last[topic] = seq

    def begin_snapshot(self, epoch: int) -> None:
        """Adopt the epoch of a snapshot reply before its entries are applied."""
        if epoch != self.epoch:
            if self.epoch is not None:
                self.counters.restarts += 1
            self.last.clear()
            self.epoch = epoch

    def accept_snapshot_entry(self, topic: bytes, seq: int) -> bool:
        """Whether to deliver one entry of a snapshot reply (after ``begin_snapshot``).

        A jump here is the point of the snapshot, not a gap; an entry not newer than
        what was delivered (the subscription got there first) is a repeat.
        """
        last = self.last.get(topic)
        if last is not None and seq <= last:
            self.counters.repeats += 1
            return False
        self.last[topic] = seq
        self.counters.delivered += 1
        return True

    def take_resync(self) -> bool:
        """True once per batch of gaps: the caller should request a snapshot now."""
        wanted = self.needs_resync
        self.needs_resync = False
        return wanted
