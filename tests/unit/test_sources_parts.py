"""The parts of the file sources that decide without I/O, and the backpressure contract
that the followed files and a stream share (``line_source.LineSource``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.waiting import wait_until_async
from main_process.sources.line_source import LineSource
from main_process.sources.pending_chunks import CommitTotals, PendingChunk, PendingChunks
from main_process.sources.rotation_policy import (
    GenerationRead,
    caught_up,
    detached_close_due,
    lineage_reads,
)
from main_process.sources.source_set import SourceSet
from main_process.sources.text_feed import TextFeed
from main_process.spool.chunks import BacklogFile, Checkpoint, ChunkSource, NewChunk, SpoolFull
from tests.support.sources_helpers import open_spool

# ------------------------------------------------------------------ rotation policy


def test_every_older_generation_is_read_up_to_its_size_and_the_newest_as_far_as_it_goes() -> None:
    assert lineage_reads([100, 50], 10) == [
        GenerationRead(100, partial_line=True),
        GenerationRead(50, partial_line=True),
        GenerationRead(None, partial_line=True),
    ]


def test_a_partial_last_line_waits_while_no_newer_generation_has_lines() -> None:
    # The newest is empty and the middle one too: the oldest's writer may not be done.
    assert lineage_reads([100, 0], 0) == [
        GenerationRead(100, partial_line=False),
        GenerationRead(0, partial_line=False),
        GenerationRead(None, partial_line=False),
    ]
    # A middle generation with lines: the oldest's writer moved on.
    assert lineage_reads([100, 7], 0)[0] == GenerationRead(100, partial_line=True)
    # A size that could not be taken counts as no lines.
    assert lineage_reads([100, None], 0)[0] == GenerationRead(100, partial_line=False)


def test_a_generation_is_caught_up_at_its_limit_and_the_newest_always() -> None:
    assert caught_up(100, 100)
    assert not caught_up(99, 100)
    assert caught_up(0, None)


def test_a_detached_file_closes_once_idle_or_when_it_keeps_a_deleted_name() -> None:
    assert not detached_close_due(10.0, 6.0, 5.0, holds_a_deleted_name=False)
    assert detached_close_due(11.0, 6.0, 5.0, holds_a_deleted_name=False)
    assert detached_close_due(6.0, 6.0, 5.0, holds_a_deleted_name=True)


# ------------------------------------------------------------------ pending chunks


class _RecordingSpool:
    """Takes what ``PendingChunks`` appends, refusing while ``full`` (and, with
    ``most_at_once``, a call of more chunks than that)."""

    def __init__(self) -> None:
        self.full = False
        self.most_at_once: int | None = None
        self.appended: list[tuple[str, BacklogFile | None]] = []
        self.marks: list[BacklogFile] = []
        self.transactions: list[tuple[int, Checkpoint | None]] = []
        """(chunks, checkpoint) of each ``append_many_durably`` that stored."""

    async def append_many_durably(
        self,
        chunks: list[NewChunk],
        *,
        checkpoint: Checkpoint | None = None,
        backlog_done: BacklogFile | None = None,
    ) -> list[_Stored]:
        if self.full or (self.most_at_once is not None and len(chunks) > self.most_at_once):
            raise SpoolFull(sum(len(chunk.text) for chunk in chunks), 0, 0)
        self.transactions.append((len(chunks), checkpoint))
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            self.appended.append((chunk.text, backlog_done if last else None))
        return [_Stored(len(chunk.text.encode())) for chunk in chunks]

    def mark_backlog_done(self, mark: BacklogFile) -> None:
        self.marks.append(mark)


class _Stored:
    def __init__(self, byte_len: int) -> None:
        self.byte_len = byte_len


def _chunk(text: str, end: int) -> PendingChunk:
    return PendingChunk(
        text, ChunkSource("app.log", end - len(text)), Checkpoint("1:2", "app.log", end, b""), 0
    )


def test_pending_chunks_commit_in_order_and_stay_when_refused() -> None:
    pending = PendingChunks(0)
    pending.append(_chunk("b\n", 4))
    pending.put_first([_chunk("a\n", 2)])
    spool = _RecordingSpool()
    totals = CommitTotals()
    spool.full = True
    with pytest.raises(SpoolFull):
        asyncio.run(pending.commit_one(spool, totals))  # type: ignore[arg-type]
    assert len(pending) == 2
    assert pending.committed_offset == 0
    spool.full = False
    while asyncio.run(pending.commit_one(spool, totals)):  # type: ignore[arg-type]
        pass
    assert [text for text, _ in spool.appended] == ["a\n", "b\n"]
    assert pending.committed_offset == 4
    assert (totals.chunks, totals.text_bytes) == (2, 4)


def test_a_files_pending_chunks_go_in_one_transaction_with_the_last_checkpoint() -> None:
    # One commit (one fsync) for a burst rather than one a chunk.
    mark = BacklogFile(b"key", "old.log", 6)
    pending = PendingChunks(0)
    for text, end in (("a\n", 2), ("b\n", 4), ("c\n", 6)):
        pending.append(_chunk(text, end))
    pending.mark_backlog_done(mark)
    spool = _RecordingSpool()
    totals = CommitTotals()
    asyncio.run(pending.commit_all(spool, totals))  # type: ignore[arg-type]
    assert spool.appended == [("a\n", None), ("b\n", None), ("c\n", mark)]
    assert spool.transactions == [(3, _chunk("c\n", 6).checkpoint)]
    assert (len(pending), pending.committed_offset) == (0, 6)
    assert (totals.chunks, totals.text_bytes) == (3, 6)


def test_chunks_the_spool_will_not_take_at_once_go_one_by_one_as_far_as_they_fit() -> None:
    pending = PendingChunks(0)
    for text, end in (("a\n", 2), ("b\n", 4)):
        pending.append(_chunk(text, end))
    spool = _RecordingSpool()
    spool.most_at_once = 1
    asyncio.run(pending.commit_all(spool, CommitTotals()))  # type: ignore[arg-type]
    assert [text for text, _ in spool.appended] == ["a\n", "b\n"]
    assert [count for count, _ in spool.transactions] == [1, 1]  # each went alone
    assert pending.committed_offset == 4
    refused = PendingChunks(0)
    refused.append(_chunk("c\n", 2))
    refused.append(_chunk("d\n", 4))
    spool.full = True
    with pytest.raises(SpoolFull):
        asyncio.run(refused.commit_all(spool, CommitTotals()))  # type: ignore[arg-type]
    assert (len(refused), refused.committed_offset) == (2, 0)


def test_a_backlog_mark_goes_with_the_last_chunk_or_alone() -> None:
    mark = BacklogFile(b"key", "old.log", 4)
    spool = _RecordingSpool()
    with_chunk = PendingChunks(0)
    with_chunk.append(_chunk("a\n", 2))
    with_chunk.mark_backlog_done(mark)
    while asyncio.run(with_chunk.commit_one(spool, CommitTotals())):  # type: ignore[arg-type]
        pass
    assert spool.appended == [("a\n", mark)]
    assert spool.marks == []
    alone = PendingChunks(4)
    alone.mark_backlog_done(mark)
    assert not asyncio.run(alone.commit_one(spool, CommitTotals()))  # type: ignore[arg-type]
    assert spool.marks == [mark]


# ------------------------------------------------------------------ backpressure


def test_files_and_streams_are_line_sources(tmp_path: Path) -> None:
    """Checked by mypy: both kinds of source offer the same backpressure interface."""
    spool = open_spool(tmp_path / "data")
    sources: list[LineSource] = [
        SourceSet([], [], spool),
        TextFeed(
            "<stdin>", _blocks([]), spool, on_appended=_ignore, max_chunk_bytes=1024, linger=0
        ),
    ]
    assert all(source.paused_reason is None for source in sources)
    spool.close()


def _ignore(path: str, text: str) -> None:
    pass


async def _blocks(blocks: list[bytes]) -> AsyncIterator[bytes]:
    for block in blocks:
        yield block


async def _paused_feed(
    *, full_retry_interval: float
) -> tuple[_RecordingSpool, TextFeed, asyncio.Task[None]]:
    """A feed of one line, running, paused by a full spool."""
    spool = _RecordingSpool()
    spool.full = True
    feed = TextFeed(
        "<stdin>",
        _blocks([b"one\n"]),
        spool,  # type: ignore[arg-type]
        on_appended=_ignore,
        max_chunk_bytes=1024,
        linger=0,
        full_retry_interval=full_retry_interval,
    )
    task = asyncio.create_task(feed.run())
    await wait_until_async(
        lambda: feed.paused_reason is not None, 5.0, "the feed paused", interval=0.005
    )
    return spool, feed, task


async def test_a_stream_pauses_on_a_full_spool_and_resumes_when_told_of_room() -> None:
    spool, feed, task = await _paused_feed(full_retry_interval=60)
    assert feed.paused
    assert "spool is full" in (feed.paused_reason or "")
    spool.full = False
    feed.notify_room()
    await asyncio.wait_for(task, 5)
    assert feed.paused_reason is None
    assert feed.finished
    assert [text for text, _ in spool.appended] == ["one\n"]


async def test_a_stream_paused_by_a_full_disk_tries_again_by_itself() -> None:
    """No acknowledgement may come (the disk filled, not the spool): the retry interval
    resumes it without any ``notify_room``."""
    spool, _feed, task = await _paused_feed(full_retry_interval=0.01)
    spool.full = False
    await asyncio.wait_for(task, 5)
    assert [text for text, _ in spool.appended] == ["one\n"]


async def _lines(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
    while (block := await queue.get()) is not None:
        yield block


async def test_a_stream_sends_at_once_while_the_delivery_has_room_and_groups_while_not() -> None:
    """Adaptive batching for streams, as for files: the linger is far longer than any
    wait here, so a chunk seen in time was cut by the room rule."""
    spool = _RecordingSpool()
    room = [True]
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    feed = TextFeed(
        "<stdin>",
        _lines(queue),
        spool,  # type: ignore[arg-type]
        on_appended=_ignore,
        delivery_room=lambda: room[0],
        max_chunk_bytes=1024,
        linger=600.0,
    )
    task = asyncio.create_task(feed.run())
    await queue.put(b"first\n")
    await wait_until_async(lambda: len(spool.appended) == 1, 5.0, "the line sent at once")
    room[0] = False  # a chunk awaits its acknowledgement: lines group
    await queue.put(b"second\nthird\n")
    await wait_until_async(lambda: feed.holds_lines, 5.0, "both lines read and held")
    assert [text for text, _ in spool.appended] == ["first\n"]
    room[0] = True
    feed.notify_delivery_room()  # the acknowledgement came
    await wait_until_async(lambda: len(spool.appended) == 2, 5.0, "the grouped lines sent")
    assert [text for text, _ in spool.appended] == ["first\n", "second\nthird\n"]
    await queue.put(None)
    await asyncio.wait_for(task, 5)
