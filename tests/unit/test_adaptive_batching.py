"""Adaptive batching: lines are cut into a chunk at once while the delivery has room, and
grouped (until an acknowledgement frees room, or the linger) while it does not.

The rule lives in the I/O-free parts (``LineChunker``'s ``send_now``,
``ConnectionState.has_delivery_room``); ``SourceSet`` asks ``delivery_room()`` before each
read and is woken by ``notify_delivery_room()``. The linger here is far longer than any
deadline, so a chunk seen in time can only have been cut by the room rule.
"""

from __future__ import annotations

from pathlib import Path

from main_process.connection.state import (
    SEND_AT_ONCE_BELOW,
    Authenticated,
    ConnectionConfig,
    ConnectionState,
    ConnectRequested,
    DisconnectRequested,
    SocketConnected,
)
from main_process.sources.line_chunker import LineChunker
from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import RunningSources, append_bytes, open_spool, spooled_text

LONG_LINGER = 600.0


def test_send_now_cuts_every_complete_line_at_once_and_keeps_the_partial_one() -> None:
    chunker = LineChunker(max_chunk_bytes=1024, linger=LONG_LINGER)
    assert chunker.feed(b"one\ntw", 0, now=0.0) == []
    assert chunker.holds_lines
    chunks = chunker.poll(0.0, send_now=True)
    assert [c.text for c in chunks] == ["one\n"]
    assert (chunks[0].start_offset, chunks[0].end_offset) == (0, 4)
    assert not chunker.holds_lines
    assert [c.text for c in chunker.feed(b"o\n", 6, now=0.001, send_now=True)] == ["two\n"]


def test_without_send_now_lines_still_wait_for_the_linger() -> None:
    chunker = LineChunker(max_chunk_bytes=1024, linger=0.05)
    assert chunker.feed(b"one\n", 0, now=0.0) == []
    assert chunker.next_deadline() == 0.05
    assert chunker.poll(0.049) == []
    assert [c.text for c in chunker.poll(0.05)] == ["one\n"]


def test_send_now_still_cuts_full_chunks_by_size_first() -> None:
    chunker = LineChunker(max_chunk_bytes=16, linger=LONG_LINGER)
    chunks = chunker.feed(b"aaaaaaa\nbbbbbbb\nccc\n", 0, now=0.0, send_now=True)
    assert [c.text for c in chunks] == ["aaaaaaa\nbbbbbbb\n", "ccc\n"]


def connected_machine(window: int = 8) -> ConnectionState:
    machine = ConnectionState(ConnectionConfig(window=window))
    machine.handle(ConnectRequested(), 0.0)
    epoch = machine.live_epoch
    assert epoch is not None
    machine.handle(SocketConnected(epoch), 0.0)
    machine.handle(Authenticated(epoch, "guest"), 0.0)
    return machine


def test_delivery_room_only_when_connected_and_nothing_waits_for_an_ack() -> None:
    idle = ConnectionState(ConnectionConfig(window=8))
    assert not idle.has_delivery_room(0)
    machine = connected_machine()
    assert machine.has_delivery_room(0)
    assert not machine.has_delivery_room(SEND_AT_ONCE_BELOW)
    assert not machine.has_delivery_room(8)
    machine.handle(DisconnectRequested(), 1.0)
    assert not machine.has_delivery_room(0)


async def test_a_line_is_spooled_at_once_while_the_delivery_has_room(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    spool = open_spool(tmp_path / "spool")
    sources = SourceSet([str(log)], [], spool, linger=LONG_LINGER, delivery_room=lambda: True)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: len(sources.followed()) == 1, 10, "the file followed")
        append_bytes(log, b"first line\n")
        await running.wait_until(
            lambda: spooled_text(spool) == "first line\n", 10, "the line spooled at once"
        )


async def test_lines_wait_while_the_delivery_is_busy_and_go_when_room_is_notified(
    tmp_path: Path,
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    spool = open_spool(tmp_path / "spool")
    room = [False]
    sources = SourceSet([str(log)], [], spool, linger=LONG_LINGER, delivery_room=lambda: room[0])
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: len(sources.followed()) == 1, 10, "the file followed")
        append_bytes(log, b"one\ntwo\n")
        await running.wait_until(
            lambda: sources.followed()[0].read_offset == 8, 10, "the lines read"
        )
        assert spooled_text(spool) == ""  # held: no room, and the linger is far away
        room[0] = True
        sources.notify_delivery_room()
        await running.wait_until(
            lambda: spooled_text(spool) == "one\ntwo\n", 10, "the held lines, in one chunk"
        )
    assert len(spool.pending()) == 1
