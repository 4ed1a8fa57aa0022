"""The subscriber's sequence bookkeeping, without sockets: repeats, gaps, heartbeats,
snapshots and a restarted publisher."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ipc.sequence import SequenceTracker, pack_sequence, unpack_sequence

S = b"status"
L = b"logs"


def test_in_order_delivers_and_repeats_are_dropped() -> None:
    tracker = SequenceTracker()
    assert [tracker.accept(S, 7, seq) for seq in (1, 2, 2, 3, 1, 3)] == [
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    assert tracker.counters.repeats == 3
    assert tracker.counters.gaps == 0
    assert not tracker.take_resync()


def test_first_message_of_a_topic_is_a_baseline_not_a_gap() -> None:
    tracker = SequenceTracker()
    assert tracker.accept(S, 7, 57)
    assert tracker.counters.gaps == 0
    assert not tracker.take_resync()


def test_gap_is_delivered_counted_and_asks_for_one_resync() -> None:
    tracker = SequenceTracker()
    assert tracker.accept(S, 7, 1)
    assert tracker.accept(S, 7, 5)
    assert tracker.accept(S, 7, 9)
    assert (tracker.counters.gaps, tracker.counters.lost) == (2, 6)
    assert tracker.take_resync()
    assert not tracker.take_resync()


def test_snapshot_entries_newer_than_delivered_are_delivered_without_a_gap() -> None:
    tracker = SequenceTracker()
    tracker.accept(S, 7, 3)
    tracker.begin_snapshot(7)
    assert tracker.accept_snapshot_entry(S, 10)
    assert tracker.accept_snapshot_entry(b"stats", 4)
    assert not tracker.accept_snapshot_entry(S, 10)
    assert tracker.counters.gaps == 0
    # A message that was in the queue before the snapshot is now old.
    assert not tracker.accept(S, 7, 9)
    assert tracker.accept(S, 7, 11)


def test_new_epoch_resets_numbering_and_asks_for_resync() -> None:
    tracker = SequenceTracker()
    tracker.accept(S, 7, 500)
    assert tracker.accept(S, 8, 1), "a restarted publisher's first message is not a repeat"
    assert tracker.counters.restarts == 1
    assert tracker.take_resync()


def test_heartbeat_reveals_a_lost_newest_state_message() -> None:
    tracker = SequenceTracker()
    tracker.accept(S, 7, 4)
    tracker.note_published(S, 4, state=True)
    assert not tracker.take_resync()
    tracker.note_published(S, 6, state=True)
    assert tracker.take_resync()


def test_heartbeat_counts_lost_stream_messages_once() -> None:
    tracker = SequenceTracker()
    tracker.note_published(L, 10, state=False)  # joined late: baseline
    assert tracker.counters.lost == 0
    tracker.accept(L, 7, 11)
    tracker.note_published(L, 15, state=False)
    assert (tracker.counters.gaps, tracker.counters.lost) == (1, 4)
    assert tracker.accept(L, 7, 16)
    assert tracker.counters.gaps == 1


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_sequence_frame_round_trips(epoch: int, seq: int) -> None:
    frame = pack_sequence(epoch, seq)
    assert len(frame) == 16
    assert unpack_sequence(frame) == (epoch, seq)


@given(st.binary().filter(lambda b: len(b) != 16))
def test_other_lengths_are_not_sequence_frames(frame: bytes) -> None:
    assert unpack_sequence(frame) is None


@given(st.lists(st.integers(1, 60), max_size=80))
def test_delivered_numbers_strictly_increase(arrivals: list[int]) -> None:
    tracker = SequenceTracker()
    delivered = [seq for seq in arrivals if tracker.accept(S, 1, seq)]
    assert delivered == sorted(set(delivered))
    assert tracker.counters.delivered + tracker.counters.repeats == len(arrivals)
