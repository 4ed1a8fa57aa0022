"""Spool: durability, order, bounds, dead letters and damaged files, on real SQLite files."""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from main_process.spool import chunks as spool_module
from main_process.spool import database as spool_database
from main_process.spool import segments as spool_segments
from main_process.spool.chunks import (
    BacklogFile,
    Checkpoint,
    ChunkSource,
    NewChunk,
    Spool,
    SpoolCorruptError,
    SpoolDiskFull,
    SpoolError,
    SpoolFull,
    SpoolStats,
    SpoolUnavailableError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "6f1c1a52-3d4e-4c47-9d7f-0d4b8f1f2a10"


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "spool.sqlite3"


def open_spool(path: Path, **options: Any) -> Spool:
    return Spool(path, CLIENT_ID, **options)


@contextmanager
def another_writer(path: Path) -> Iterator[None]:
    """Another connection holds the spool's write lock meanwhile."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


# ------------------------------------------------------------------ append and pending


def test_chunks_get_increasing_seqs_and_stable_chunk_ids(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        first = spool.append("a\n", ChunkSource("/var/log/x.log", 0))
        second = spool.append("bé\n")
        assert (first.seq, second.seq) == (1, 2)
        assert first.chunk_id == f"{CLIENT_ID}:1"
        assert second.byte_len == 4  # UTF-8 size, not the number of characters
        assert spool.pending() == [first, second]
    with open_spool(spool_path) as spool:
        assert spool.pending() == [first, second]


def test_pending_pages_in_seq_order(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        seqs = [spool.append(f"{i}\n").seq for i in range(10)]
        assert [c.seq for c in spool.pending(limit=3)] == seqs[:3]
        assert [c.seq for c in spool.pending(after_seq=seqs[3], limit=3)] == seqs[4:7]
        assert spool.pending(after_seq=seqs[-1]) == []
        assert [c.text for c in spool.pending(limit=100)] == [f"{i}\n" for i in range(10)]


def test_append_many_stores_a_batch_in_order(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        stored = spool.append_many(
            [NewChunk("x\n", ChunkSource("/f", 0)), NewChunk("y\n", ChunkSource("/f", 2))],
            checkpoint=Checkpoint("1:2", "/f", 4, b"\x01\x02"),
        )
        assert [c.seq for c in stored] == [1, 2]
        assert spool.pending() == stored
        checkpoint = spool.get_checkpoint("1:2")
        assert checkpoint is not None
        assert (checkpoint.offset, checkpoint.fingerprint) == (4, b"\x01\x02")


def test_seq_is_never_reused_after_everything_is_acknowledged(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        for _ in range(3):
            spool.acknowledge(spool.append("x\n").seq)
        last = spool.append("y\n")
        spool.dead_letter(last.seq, "invalid")
        assert spool.stats().buffered_chunks == 0
    with open_spool(spool_path) as spool:
        assert spool.append("z\n").seq == 5


# ------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_is_written_with_its_chunk_and_survives_reopening(spool_path: Path) -> None:
    clock_values = iter([1000.0, 2000.0])
    with open_spool(spool_path, clock=lambda: next(clock_values)) as spool:
        spool.append("l1\n", ChunkSource("/a", 0), checkpoint=Checkpoint("8:1", "/a", 3, b"fp"))
        spool.append("l2\n", ChunkSource("/a", 3), checkpoint=Checkpoint("8:1", "/a", 6, b"fp"))
    with open_spool(spool_path) as spool:
        assert spool.get_checkpoint("8:1") == Checkpoint("8:1", "/a", 6, b"fp", 2000.0)
        assert spool.get_checkpoint("9:9") is None


def test_checkpoints_can_be_set_listed_and_deleted_on_their_own(spool_path: Path) -> None:
    with open_spool(spool_path, clock=lambda: 5.0) as spool:
        spool.set_checkpoint(Checkpoint("2:b", "/b", 10))
        spool.set_checkpoint(Checkpoint("1:a", "/a", 0, b"\x00"))
        spool.set_checkpoint(Checkpoint("2:b", "/b.1", 12))  # renamed, same file
        assert spool.checkpoints() == [
            Checkpoint("1:a", "/a", 0, b"\x00", 5.0),
            Checkpoint("2:b", "/b.1", 12, None, 5.0),
        ]
        assert spool.delete_checkpoint("1:a") is True
        assert spool.delete_checkpoint("1:a") is False
        assert [c.key for c in spool.checkpoints()] == ["2:b"]
        assert spool.stats().buffered_chunks == 0


def test_a_failed_transaction_stores_neither_the_chunk_nor_the_checkpoint(
    spool_path: Path,
) -> None:
    with open_spool(spool_path) as spool:
        spool.append("before\n", checkpoint=Checkpoint("k", "/p", 7))
        broken = Checkpoint("k", cast(str, None), 99)  # violates NOT NULL inside the txn
        with pytest.raises(sqlite3.IntegrityError):
            spool.append("lost\n", checkpoint=broken)
        assert [c.text for c in spool.pending()] == ["before\n"]
        assert spool.stats().buffered_chunks == 1
        assert spool.stats().buffered_bytes == 7
        checkpoint = spool.get_checkpoint("k")
        assert checkpoint is not None
        assert checkpoint.offset == 7
        # The failed seq was never committed; the next one follows the last committed.
        assert spool.append("after\n").seq == 2


# ---------------------------------------------------------------------- backlog marks


def test_backlog_done_is_marked_with_the_last_chunk(spool_path: Path) -> None:
    done = BacklogFile(b"\xaa" * 16, "/old/game.log.1", 1234)
    with open_spool(spool_path) as spool:
        assert spool.is_backlog_done(done.fingerprint) is False
        spool.append("last\n", backlog_done=done)
    with open_spool(spool_path) as spool:
        assert spool.is_backlog_done(done.fingerprint) is True
        assert spool.is_backlog_done(b"\xbb" * 16) is False


def test_backlog_done_can_be_marked_alone_for_an_empty_file(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        spool.mark_backlog_done(BacklogFile(b"empty", "/old/empty.log", 0))
        assert spool.is_backlog_done(b"empty") is True
        assert spool.stats().buffered_chunks == 0


def test_a_refused_append_does_not_mark_the_backlog_file(spool_path: Path) -> None:
    with open_spool(spool_path, max_bytes=10) as spool:
        spool.append("12345678\n")
        with pytest.raises(SpoolFull):
            spool.append("more\n", backlog_done=BacklogFile(b"fp", "/old", 5))
        assert spool.is_backlog_done(b"fp") is False


# ------------------------------------------------------------------- acknowledgements


def test_acknowledge_removes_the_chunk_and_counts_it_as_sent(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        first = spool.append("hello\n")
        second = spool.append("wörld\n")
        assert spool.acknowledge(first.seq) is True
        assert spool.pending() == [second]
        assert spool.stats() == SpoolStats(
            buffered_chunks=1,
            buffered_bytes=7,
            sent_chunks=1,
            sent_bytes=6,
            dead_lettered=0,
            full=False,
            max_bytes=spool_module.DEFAULT_MAX_BYTES,
        )


def test_a_duplicate_or_unknown_ack_changes_nothing(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        chunk = spool.append("x\n")
        assert spool.acknowledge(chunk.seq) is True
        assert spool.acknowledge(chunk.seq) is False
        assert spool.acknowledge(12345) is False
        stats = spool.stats()
        assert (stats.sent_chunks, stats.sent_bytes) == (1, 2)


def test_several_acks_in_one_transaction_delete_those_present_and_count_them(
    spool_path: Path,
) -> None:
    with open_spool(spool_path) as spool:
        chunks = [spool.append(text) for text in ("a\n", "bé\n", "c\n", "d\n")]
        spool.acknowledge(chunks[0].seq)
        assert spool.acknowledge_many([]) == 0
        # One already gone, one never there: only the two present count.
        assert spool.acknowledge_many([chunks[0].seq, chunks[1].seq, chunks[3].seq, 999]) == 2
        assert spool.pending() == [chunks[2]]
        stats = spool.stats()
        assert (stats.buffered_chunks, stats.buffered_bytes) == (1, 2)
        assert (stats.sent_chunks, stats.sent_bytes) == (3, 2 + 4 + 2)
    with open_spool(spool_path) as spool:
        stats = spool.stats()
        assert (stats.buffered_chunks, stats.sent_chunks, stats.sent_bytes) == (1, 3, 8)


def test_sent_counters_survive_reopening(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        for text in ("aa\n", "bbb\n", "c\n"):
            spool.acknowledge(spool.append(text).seq)
        spool.append("waiting\n")
    with open_spool(spool_path) as spool:
        stats = spool.stats()
        assert (stats.sent_chunks, stats.sent_bytes) == (3, 9)
        assert (stats.buffered_chunks, stats.buffered_bytes) == (1, 8)


# ----------------------------------------------------------------------- dead letters


def test_dead_letter_moves_the_chunk_and_counts_it(spool_path: Path) -> None:
    with open_spool(spool_path, clock=lambda: 42.0) as spool:
        bad = spool.append("too big\n", ChunkSource("/x", 100))
        good = spool.append("fine\n")
        assert spool.dead_letter(bad.seq, "too_large", "over 1 MB") is True
        assert spool.dead_letter(bad.seq, "too_large") is False
        assert spool.pending() == [good]
        stats = spool.stats()
        assert (stats.dead_lettered, stats.buffered_chunks, stats.buffered_bytes) == (1, 1, 5)
        assert stats.sent_chunks == 0
    with open_spool(spool_path) as spool:
        assert spool.stats().dead_lettered == 1
        [letter] = spool.dead_letters()
        assert (letter.seq, letter.chunk_id, letter.text) == (bad.seq, bad.chunk_id, "too big\n")
        assert letter.source == ChunkSource("/x", 100)
        assert (letter.code, letter.message, letter.dead_lettered_at) == (
            "too_large",
            "over 1 MB",
            42.0,
        )


# ------------------------------------------------------------------------- byte bound


def test_append_raises_spool_full_when_the_bound_would_be_exceeded(spool_path: Path) -> None:
    with open_spool(spool_path, max_bytes=20) as spool:
        spool.append("0123456789\n", checkpoint=Checkpoint("k", "/p", 11))  # 11 bytes
        assert spool.has_room(9) is True
        assert spool.stats().full is False
        with pytest.raises(SpoolFull) as raised:
            spool.append("0123456789\n", checkpoint=Checkpoint("k", "/p", 22))
        assert (raised.value.needed_bytes, raised.value.buffered_bytes) == (11, 11)
        assert "full" in str(raised.value)
        assert spool.stats().full is True
        assert spool.stats().buffered_chunks == 1
        checkpoint = spool.get_checkpoint("k")
        assert checkpoint is not None
        assert checkpoint.offset == 11
        spool.append("12345678\n")  # exactly fills the bound: 20 bytes
        assert spool.stats().buffered_bytes == 20
        assert spool.stats().full is False


def test_has_room_refusal_marks_full_until_room_is_freed(spool_path: Path) -> None:
    with open_spool(spool_path, max_bytes=10) as spool:
        chunk = spool.append("12345\n")
        assert spool.has_room(5) is False
        assert spool.stats().full is True
        spool.acknowledge(chunk.seq)
        assert spool.stats().full is False
        assert spool.has_room(10) is True


def test_dead_lettering_frees_room(spool_path: Path) -> None:
    with open_spool(spool_path, max_bytes=10) as spool:
        chunk = spool.append("123456789\n")
        assert spool.has_room(1) is False
        spool.dead_letter(chunk.seq, "invalid")
        assert spool.stats().full is False
        assert spool.has_room(10) is True


def test_one_chunk_larger_than_the_bound_is_accepted_only_into_an_empty_spool(
    spool_path: Path,
) -> None:
    with open_spool(spool_path, max_bytes=10) as spool:
        assert spool.has_room(100) is True
        huge = spool.append("x" * 99 + "\n")
        assert spool.stats().buffered_bytes == 100
        with pytest.raises(SpoolFull):
            spool.append("y\n")
        spool.acknowledge(huge.seq)
        spool.append("y\n")


def test_a_batch_is_all_or_nothing_against_the_bound(spool_path: Path) -> None:
    with open_spool(spool_path, max_bytes=10) as spool:
        with pytest.raises(SpoolFull):
            spool.append_many([NewChunk("123456\n"), NewChunk("123456\n")])
        assert spool.stats().buffered_chunks == 0
        spool.append_many([NewChunk("1234\n"), NewChunk("1234\n")])
        assert spool.stats().buffered_bytes == 10


def test_the_bound_counts_utf8_bytes(spool_path: Path) -> None:
    with open_spool(spool_path, max_bytes=10) as spool:
        spool.append("ééé\n")  # 7 bytes, 4 characters
        with pytest.raises(SpoolFull):
            spool.append("éé\n")  # 5 more bytes would make 12


# ------------------------------------------------------------------ durability options


def test_the_database_is_in_wal_mode_with_the_chosen_synchronous_level(
    spool_path: Path,
) -> None:
    with open_spool(spool_path, durability="full") as spool:
        spool.append("x\n")
        assert spool._database.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with open_spool(spool_path) as spool:
        assert spool._database.connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    outside = sqlite3.connect(spool_path)
    try:
        assert outside.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        outside.close()


def test_sync_keeps_the_data_and_restores_normal_synchronous(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        spool.sync()  # nothing appended yet: no-op
        chunk = spool.append("x\n")
        spool.sync()
        spool.sync()
        assert spool._database.connection.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert spool.pending() == [chunk]
        assert spool.stats().buffered_chunks == 1


def test_only_chunks_made_durable_are_pending_for_sending(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        assert spool.durability_job() is None  # nothing appended
        first = [spool.append(f"{i}\n") for i in range(3)]
        assert spool.pending(durable_only=True) == []
        assert spool.pending() == first
        job = spool.durability_job()
        assert job is not None
        assert job.through_seq == first[-1].seq
        fourth = spool.append("3\n")
        # The fsync runs on a worker thread while the spool's own thread goes on.
        worker = threading.Thread(target=job.run)
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
        spool.made_durable(job)
        assert spool.pending(durable_only=True) == first
        assert spool.pending(first[0].seq, 64, durable_only=True) == first[1:]
        later = spool.durability_job()
        assert later is not None
        assert later.through_seq == fourth.seq
        spool.sync()  # the blocking form covers everything appended so far
        assert spool.durability_job() is None
        assert spool.pending(durable_only=True) == [*first, fourth]


def test_chunks_left_by_an_earlier_run_are_made_durable_before_they_are_sent(
    spool_path: Path,
) -> None:
    with open_spool(spool_path) as spool:
        left = [spool.append(f"{i}\n") for i in range(2)]
    with open_spool(spool_path) as spool:
        # That run may have been killed before its commits reached the disk.
        assert spool.pending(durable_only=True) == []
        job = spool.durability_job()
        assert job is not None
        assert job.through_seq == left[-1].seq
        job.run()
        spool.made_durable(job)
        assert [c.text for c in spool.pending(durable_only=True)] == ["0\n", "1\n"]


def test_with_full_durability_every_commit_is_durable_at_once(spool_path: Path) -> None:
    with open_spool(spool_path, durability="full") as spool:
        chunk = spool.append("x\n")
        assert spool.durability_job() is None
        assert spool.pending(durable_only=True) == [chunk]


def test_the_durability_job_fsyncs_this_spools_wal_file(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[str] = []
    real_flush = spool_database.flush_data

    def recording_flush(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_flush(fd)

    monkeypatch.setattr(spool_database, "flush_data", recording_flush)
    with open_spool(spool_path) as spool:
        spool.append("x\n")
        job = spool.durability_job()
        assert job is not None
        job.run()
        assert flushed == [str(spool_path.resolve()) + "-wal"]
    # Once the spool is closed its WAL is gone: the job says so (the connection then
    # falls back to the blocking ``sync``) instead of syncing nothing.
    with pytest.raises(FileNotFoundError):
        job.run()


def test_use_from_another_thread_raises_instead_of_racing(spool_path: Path) -> None:
    errors: list[BaseException] = []
    with open_spool(spool_path) as spool:

        def append_from_worker() -> None:
            try:
                spool.append("x\n")
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=append_from_worker)
        worker.start()
        worker.join()
        assert len(errors) == 1
        assert isinstance(errors[0], sqlite3.ProgrammingError)
        assert spool.stats().buffered_chunks == 0


# -------------------------------------------------------------- texts in segment files


def segment_names(spool_path: Path) -> list[str]:
    return sorted(p.name for p in spool_path.with_name(f"{spool_path.name}-segments").iterdir())


def test_a_chunks_text_is_on_stable_storage_before_its_row_is_committed(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_flush = spool_segments._flush_data

    def flush(fd: int) -> None:
        events.append("fdatasync segment")
        real_flush(fd)

    monkeypatch.setattr(spool_segments, "_flush_data", flush)
    with open_spool(spool_path) as spool:
        spool._database.connection.set_trace_callback(
            lambda statement: events.append(statement.split(" (")[0].strip())
        )
        spool.append_many(
            [NewChunk("one\n"), NewChunk("two\n")],
            checkpoint=Checkpoint("7:42", "/logs/app.log", 8, b"fp"),
        )
    first_insert = events.index("INSERT INTO chunks")
    assert events[:first_insert] == ["fdatasync segment", "BEGIN IMMEDIATE"]
    assert events.count("fdatasync segment") == 1
    assert events.index("COMMIT") > first_insert
    # The rows hold no text; the segment does.
    with sqlite3.connect(spool_path) as reader:
        rows = reader.execute("SELECT text, segment, segment_offset FROM chunks").fetchall()
    assert rows == [("", 1, 0), ("", 1, 4)]
    assert segment_names(spool_path) == ["00000001.seg"]


def test_segments_go_once_their_chunks_are_acknowledged_or_dead_lettered(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40-byte segments: each 30-byte chunk gets one of its own.
    monkeypatch.setattr(spool_module, "roll_bytes_for", lambda _size: 40)
    with open_spool(spool_path) as spool:
        chunks = [spool.append(f"{n:029d}\n") for n in range(4)]
        assert segment_names(spool_path) == [f"{n:08d}.seg" for n in (1, 2, 3, 4)]
        assert spool.acknowledge_many([chunks[0].seq, chunks[1].seq]) == 2
        assert spool.dead_letter(chunks[2].seq, "too_large")
        assert segment_names(spool_path) == ["00000004.seg"]  # the one being written
        # A dead letter keeps its text in its row, for the user.
        assert [letter.text for letter in spool.dead_letters()] == [chunks[2].text]
        assert spool.pending() == [chunks[3]]
    with open_spool(spool_path) as spool:
        # Read back from the segment, not from memory.
        assert spool.pending() == [chunks[3]]
        assert [letter.text for letter in spool.dead_letters()] == [chunks[2].text]


def test_texts_written_for_a_commit_that_failed_are_deleted_at_the_next_open(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_database, "_BUSY_TIMEOUT_SECONDS", 0.01)
    with open_spool(spool_path) as spool:
        kept = spool.append("kept\n")
        spool.acknowledge(kept.seq)
        with another_writer(spool_path), pytest.raises(SpoolUnavailableError, match="locked"):
            spool.append("never committed\n")
        assert spool.stats().buffered_chunks == 0
    assert segment_names(spool_path) == ["00000001.seg"]  # it was still being written
    with open_spool(spool_path) as spool:
        assert segment_names(spool_path) == []
        assert spool.append("after\n").seq == 2
        assert segment_names(spool_path) == ["00000002.seg"]


def test_a_full_disk_under_the_segments_is_backpressure_and_commits_nothing(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_spool(spool_path) as spool:
        spool.append("first\n", checkpoint=Checkpoint("7:42", "/logs/app.log", 6, b"fp"))
        real_write = os.write

        def no_space(fd: int, data: bytes | memoryview) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(spool_segments, "_write", no_space)
        with pytest.raises(SpoolDiskFull, match="disk is full"):
            spool.append("second\n", checkpoint=Checkpoint("7:42", "/logs/app.log", 13, b"fp"))
        assert spool.stats().full
        checkpoint = spool.get_checkpoint("7:42")
        assert checkpoint is not None
        assert checkpoint.offset == 6
        assert [chunk.text for chunk in spool.pending()] == ["first\n"]
        monkeypatch.setattr(spool_segments, "_write", real_write)
        spool.append("second\n", checkpoint=Checkpoint("7:42", "/logs/app.log", 13, b"fp"))
        assert not spool.stats().full
    with open_spool(spool_path) as spool:
        assert [chunk.text for chunk in spool.pending()] == ["first\n", "second\n"]


class HeldSync:
    """Stands in for a segment's fdatasync that the disk takes its time over: each call
    runs (in the spool's worker thread) once the test lets it, or fails as told."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()  # until ``hold``
        self.calls = 0
        self.error: OSError | None = None
        self._real = spool_segments._flush_data

    def hold(self) -> None:
        """The next sync waits for ``release``."""
        self.started.clear()
        self.release.clear()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.started.set()
        assert self.release.wait(30), "the test never let the sync finish"
        if self.error is not None:
            raise self.error
        self._real(fd)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> HeldSync:
    """The segments' fdatasync, held by the test when it calls ``hold``."""
    sync = HeldSync()
    monkeypatch.setattr(spool_segments, "_flush_data", sync)
    return sync


async def wait_for_event(event: threading.Event) -> None:
    """Wait for a thread's event without blocking the loop (with a deadline)."""
    assert await asyncio.to_thread(event.wait, 30), "the event did not come"


async def test_the_loop_serves_others_while_an_append_is_made_durable(
    spool_path: Path, held: HeldSync
) -> None:
    """A slow disk slows the append, not the event loop: while the texts' fdatasync
    runs (held here), acknowledgements and reads go on, and nothing is committed before
    it has returned."""
    with open_spool(spool_path) as spool:
        old = spool.append("acknowledged meanwhile\n")
        held.hold()
        statements: list[str] = []
        spool._database.connection.set_trace_callback(
            lambda statement: statements.append(statement.split(" (")[0].strip())
        )
        appending = asyncio.create_task(
            spool.append_many_durably(
                [NewChunk("one\n"), NewChunk("two\n")],
                checkpoint=Checkpoint("7:42", "/logs/app.log", 8, b"fp"),
            )
        )
        await wait_for_event(held.started)
        # The loop runs: other spool work goes on, and the rows are not there yet.
        assert spool.acknowledge(old.seq)
        assert spool.pending() == []
        assert spool.get_checkpoint("7:42") is None
        assert "INSERT INTO chunks" not in statements
        held.release.set()
        stored = await appending
    assert [chunk.text for chunk in stored] == ["one\n", "two\n"]
    assert statements.index("INSERT INTO chunks") > statements.index("BEGIN IMMEDIATE")
    with open_spool(spool_path) as spool:
        assert [chunk.text for chunk in spool.pending()] == ["one\n", "two\n"]
        checkpoint = spool.get_checkpoint("7:42")
        assert checkpoint is not None
        assert checkpoint.offset == 8


async def test_a_segment_emptied_while_an_append_into_it_is_made_durable_is_kept(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch, held: HeldSync
) -> None:
    """The active segment is recycled once its chunks are all acknowledged; not while
    texts of an append under way are in it (their rows are not committed yet)."""
    monkeypatch.setattr(spool_segments, "RECYCLE_BYTES", 8)
    with open_spool(spool_path) as spool:
        first = spool.append("0123456789\n")
        held.hold()
        appending = asyncio.create_task(spool.append_many_durably([NewChunk("later\n")]))
        await wait_for_event(held.started)
        assert spool.acknowledge(first.seq)  # segment 1 holds no committed chunk now
        assert segment_names(spool_path) == ["00000001.seg"]
        held.release.set()
        [later] = await appending
    with open_spool(spool_path) as spool:
        assert spool.pending() == [later]


async def test_a_failed_or_cancelled_sync_commits_nothing_and_the_next_append_works(
    spool_path: Path, held: HeldSync
) -> None:
    with open_spool(spool_path) as spool:
        held.error = OSError(errno.ENOSPC, "No space left on device")
        with pytest.raises(SpoolDiskFull, match="disk is full"):
            await spool.append_many_durably(
                [NewChunk("lost\n")], checkpoint=Checkpoint("7:42", "/logs/app.log", 5, b"fp")
            )
        assert spool.get_checkpoint("7:42") is None
        held.error = None
        held.hold()
        cancelled = asyncio.create_task(spool.append_many_durably([NewChunk("cancelled\n")]))
        await wait_for_event(held.started)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        held.release.set()
        [kept] = await spool.append_many_durably(
            [NewChunk("kept\n")], checkpoint=Checkpoint("7:42", "/logs/app.log", 5, b"fp")
        )
        assert spool.pending() == [kept]
        assert not spool.stats().full
    with open_spool(spool_path) as spool:
        assert [chunk.text for chunk in spool.pending()] == ["kept\n"]


async def test_appends_from_two_tasks_are_made_one_at_a_time_in_order(
    spool_path: Path, held: HeldSync
) -> None:
    """The file sources and standard input append from two tasks: one staged append at a
    time, in the order they were asked for; the synchronous append refuses to interleave."""
    with open_spool(spool_path) as spool:
        held.hold()
        first = asyncio.create_task(spool.append_many_durably([NewChunk("first\n")]))
        second = asyncio.create_task(spool.append_many_durably([NewChunk("second\n")]))
        await wait_for_event(held.started)
        with pytest.raises(RuntimeError, match="under way"):
            spool.append("not now\n")
        assert held.calls == 1  # the second waits for the first to be committed
        held.release.set()
        [one], [two] = await asyncio.gather(first, second)
        assert (one.text, two.text) == ("first\n", "second\n")
        assert one.seq < two.seq
        assert spool.pending() == [one, two]


def test_a_spool_of_the_previous_format_keeps_its_chunks_and_adds_segments(
    spool_path: Path,
) -> None:
    # Format 2: the text in the row.
    spool_path.parent.mkdir(parents=True)
    old = sqlite3.connect(spool_path)
    old.executescript(
        """
        PRAGMA journal_mode = WAL;
        CREATE TABLE chunks (seq INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL,
            source_path TEXT, source_offset INTEGER, byte_len INTEGER NOT NULL,
            created_at REAL NOT NULL);
        CREATE TABLE dead_letter (seq INTEGER PRIMARY KEY, text TEXT NOT NULL,
            source_path TEXT, source_offset INTEGER, byte_len INTEGER NOT NULL,
            created_at REAL NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
            dead_lettered_at REAL NOT NULL);
        CREATE TABLE checkpoints (key TEXT PRIMARY KEY, path TEXT NOT NULL,
            offset INTEGER NOT NULL, fingerprint BLOB, updated_at REAL NOT NULL,
            missing_since REAL);
        CREATE TABLE backlog_done (fingerprint BLOB PRIMARY KEY, path TEXT NOT NULL,
            size INTEGER NOT NULL, finished_at REAL NOT NULL, missing_since REAL);
        CREATE TABLE counters (id INTEGER PRIMARY KEY CHECK (id = 1),
            sent_chunks INTEGER NOT NULL, sent_bytes INTEGER NOT NULL);
        INSERT INTO counters VALUES (1, 0, 0);
        INSERT INTO chunks (text, source_path, source_offset, byte_len, created_at)
            VALUES ('old one\n', '/logs/a.log', 0, 8, 1.0), ('old twé\n', NULL, NULL, 9, 1.0);
        PRAGMA user_version = 2;
        """
    )
    old.close()
    with open_spool(spool_path) as spool:
        new = spool.append("new\n")
        assert [(c.seq, c.text) for c in spool.pending()] == [
            (1, "old one\n"),
            (2, "old twé\n"),
            (3, "new\n"),
        ]
        assert spool.dead_letter(2, "invalid")
        assert spool.acknowledge(1)
        assert spool.stats().sent_bytes == 8
    with open_spool(spool_path) as spool:
        assert spool.pending() == [new]
        assert [letter.text for letter in spool.dead_letters()] == ["old twé\n"]


def test_a_missing_segment_of_waiting_chunks_is_a_damaged_spool(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        spool.append("waiting\n")
    segments = spool_path.with_name(f"{spool_path.name}-segments")
    (segments / "00000001.seg").unlink()
    with pytest.raises(SpoolCorruptError, match=r"00000001\.seg.*aside"):
        open_spool(spool_path)


# ---------------------------------------------------------------------- damaged files


def test_a_file_that_is_not_a_database_gives_a_clear_error_and_is_kept(
    spool_path: Path,
) -> None:
    spool_path.parent.mkdir(parents=True)
    junk = b"this is not sqlite at all\n" * 200
    spool_path.write_bytes(junk)
    with pytest.raises(SpoolCorruptError) as raised:
        open_spool(spool_path)
    message = str(raised.value)
    assert str(spool_path) in message
    assert "\n" not in message
    assert spool_path.read_bytes() == junk  # nothing deleted or rewritten


def test_a_damaged_page_is_reported_as_corrupt(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        for i in range(200):
            spool.append(f"{i:05d}" * 2000 + "\n")
    size = spool_path.stat().st_size
    with spool_path.open("r+b") as file:
        # Overwrite B-tree pages in the middle of the file (the header stays valid).
        file.seek(size // 2)
        file.write(b"\xff" * 65536)
    with pytest.raises(SpoolCorruptError):
        open_spool(spool_path)


def test_a_database_from_another_program_is_refused(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    other = sqlite3.connect(spool_path)
    other.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, body BLOB)")
    other.commit()
    other.close()
    with pytest.raises(SpoolCorruptError, match="not a log-monitor spool"):
        open_spool(spool_path)


def test_a_spool_from_a_newer_version_is_refused(spool_path: Path) -> None:
    with open_spool(spool_path) as spool:
        spool.append("x\n")
    newer = sqlite3.connect(spool_path)
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    with pytest.raises(SpoolError, match="newer version"):
        open_spool(spool_path)


def test_a_spool_locked_by_another_writer_is_reported_as_unavailable(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_database, "_BUSY_TIMEOUT_SECONDS", 0.01)
    with open_spool(spool_path) as spool:
        with another_writer(spool_path), pytest.raises(SpoolUnavailableError, match="locked"):
            spool.append("x\n")
        assert spool.stats().buffered_chunks == 0
        spool.append("x\n")
        assert spool.stats().buffered_chunks == 1


def test_an_unreadable_spool_is_reported_as_unavailable(
    spool_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_spool(spool_path) as spool:
        spool.append("x\n")
    spool_path.chmod(0)
    if os.geteuid() == 0:
        # Root reads any file whatever its mode, and this machine's interpreter lives
        # under /root where no other user may run it: the one mock of this file stands
        # in for the kernel's EACCES, at the sqlite3 boundary.
        def refuse(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            raise sqlite3.OperationalError("unable to open database file")

        monkeypatch.setattr(sqlite3, "connect", refuse)
    try:
        with pytest.raises(SpoolUnavailableError, match=str(spool_path.name)):
            open_spool(spool_path)
    finally:
        spool_path.chmod(0o600)


def test_an_impossible_location_is_reported_as_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolUnavailableError):
        open_spool(blocker / "spool.sqlite3")


# -------------------------------------------------------------------- kill -9 safety

_WRITER = r"""
import sys
from main_process.spool.chunks import Checkpoint, ChunkSource, Spool

def chunk_text(offset):
    # Deterministic from the offset, varied sizes, multi-byte characters inside.
    return f"{offset:012d} " + "é" * (offset % 7) + "x" * (offset % 3001) + "\n"

spool = Spool(sys.argv[1], "writer", max_bytes=1 << 40)
if len(sys.argv) > 2:
    # Deterministic crash point: die when SQLite starts the N-th statement with a prefix.
    import os, signal
    prefix, countdown = sys.argv[2], [int(sys.argv[3])]

    def die_at(statement):
        if statement.startswith(prefix):
            countdown[0] -= 1
            if countdown[0] == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    spool._database.connection.set_trace_callback(die_at)
checkpoint = spool.get_checkpoint("7:42")
offset = 0 if checkpoint is None else checkpoint.offset
while True:
    text = chunk_text(offset)
    size = len(text.encode())
    chunk = spool.append(
        text,
        ChunkSource("/logs/app.log", offset),
        checkpoint=Checkpoint("7:42", "/logs/app.log", offset + size, b"fp"),
    )
    sys.stdout.write(f"A {chunk.seq}\n")
    sys.stdout.flush()
    offset += size
    if chunk.seq % 3 == 0:
        oldest = spool.pending(limit=1)[0]
        spool.acknowledge(oldest.seq)
        sys.stdout.write(f"K {oldest.seq}\n")
        sys.stdout.flush()
"""


def _chunk_text(offset: int) -> str:
    return f"{offset:012d} " + "é" * (offset % 7) + "x" * (offset % 3001) + "\n"


def _run_writer_and_kill(
    spool_path: Path, kill_after_appends: int, die_at: tuple[str, int] | None
) -> tuple[set[int], set[int]]:
    """Run the writer until it is killed: by us after some appends, or by itself inside
    SQLite at the statement ``die_at`` names. Returns the seqs it reported."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    arguments = [] if die_at is None else [die_at[0], str(die_at[1])]
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(spool_path), *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert writer.stdout is not None
    appended: set[int] = set()
    acknowledged: set[int] = set()

    def record(line: str) -> None:
        # A line cut short by the kill reports nothing: only whole lines are facts.
        if line.endswith("\n"):
            kind, seq = line.split()
            (appended if kind == "A" else acknowledged).add(int(seq))

    try:
        for line in writer.stdout:
            record(line)
            if die_at is None and len(appended) >= kill_after_appends:
                os.kill(writer.pid, signal.SIGKILL)
                break
        # Lines already in the pipe were written after their commit: they count too.
        for line in writer.stdout:
            record(line)
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    return appended, acknowledged


def test_kill_9_while_appending_loses_no_committed_chunk(spool_path: Path) -> None:
    spool_path.parent.mkdir(parents=True)
    all_appended: set[int] = set()
    all_acknowledged: set[int] = set()
    rounds: list[tuple[int, tuple[str, int] | None]] = [
        (150, None),
        (61, None),
        (233, None),
        (97, None),
        # Inside a transaction: after the chunk's INSERT, before its checkpoint.
        (0, ("INSERT INTO checkpoints", 40)),
        # Everything written, COMMIT not yet run.
        (0, ("COMMIT", 77)),
        # The texts written to their segment, the transaction not begun.
        (0, ("BEGIN IMMEDIATE", 50)),
        # Inside an acknowledgement: row deleted, counters not yet updated.
        (0, ("UPDATE counters", 9)),
        (0, ("DELETE FROM chunks", 12)),
        (377, None),
    ]
    for round_number, (kill_after, die_at) in enumerate(rounds):
        appended, acknowledged = _run_writer_and_kill(spool_path, kill_after, die_at)
        assert min(appended) > max(all_appended, default=0), "a seq was reused"
        all_appended |= appended
        all_acknowledged |= acknowledged

        with Spool(spool_path, "writer") as spool:
            chunks = spool.pending(limit=1_000_000)
            stats = spool.stats()
            checkpoint = spool.get_checkpoint("7:42")
        assert chunks, f"round {round_number}: acks only remove a third of the chunks"
        seqs = [chunk.seq for chunk in chunks]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "seqs must be contiguous"
        assert seqs[-1] >= max(all_appended)
        for previous, current in itertools.pairwise(chunks):
            assert previous.source is not None
            assert current.source is not None
            assert current.source.offset == previous.source.offset + previous.byte_len
        for chunk in chunks:
            assert chunk.source is not None
            assert chunk.text == _chunk_text(chunk.source.offset)
            assert chunk.byte_len == len(chunk.text.encode())
        # The checkpoint is exactly where the last committed chunk ends.
        last = chunks[-1]
        assert last.source is not None
        assert checkpoint is not None
        assert checkpoint.offset == last.source.offset + last.byte_len
        # Every chunk reported as committed and not acknowledged is still there; at most
        # one more per round (an ack committed but killed before it was reported) is gone.
        # Once gone it was acknowledged: the next rounds count only their own.
        missing = (all_appended - all_acknowledged) - set(seqs)
        assert len(missing) <= 1, f"round {round_number}: {sorted(missing)} gone"
        assert all(seq < seqs[0] for seq in missing)
        all_acknowledged |= missing
        # Acks remove the oldest first, so every seq below the first is acknowledged,
        # and the counters agree to the chunk and to the byte.
        first = chunks[0]
        assert first.source is not None
        assert stats.sent_chunks == seqs[0] - 1
        assert stats.sent_bytes == first.source.offset
        assert stats.buffered_chunks == len(chunks)
        assert stats.buffered_bytes == sum(chunk.byte_len for chunk in chunks)

    with Spool(spool_path, "writer") as spool:
        assert spool.append("after the storm\n").seq > max(all_appended)


# ------------------------------------------------------- stats versus SQL, stateful


class SpoolModel(RuleBasedStateMachine):
    """Random appends, acks, dead letters and reopenings against a plain model."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.directory = tempfile.TemporaryDirectory()
        self.path = Path(self.directory.name) / "spool.sqlite3"
        self.max_bytes = 64
        self.spool = Spool(self.path, "model", max_bytes=self.max_bytes)
        self.buffered: dict[int, int] = {}
        self.sent_chunks = 0
        self.sent_bytes = 0
        self.dead = 0
        self.highest_seq = 0

    @rule(text=st.text(min_size=1, max_size=30))
    def append(self, text: str) -> None:
        size = len(text.encode())
        fits = not self.buffered or sum(self.buffered.values()) + size <= self.max_bytes
        try:
            chunk = self.spool.append(text)
        except SpoolFull:
            assert not fits
            return
        assert fits
        assert chunk.seq > self.highest_seq
        self.highest_seq = chunk.seq
        self.buffered[chunk.seq] = size

    @precondition(lambda self: bool(self.buffered))
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.buffered)))
        assert self.spool.acknowledge(seq)
        self.sent_chunks += 1
        self.sent_bytes += self.buffered.pop(seq)

    @precondition(lambda self: bool(self.buffered))
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.buffered)))
        assert self.spool.dead_letter(seq, "invalid", "bad")
        self.buffered.pop(seq)
        self.dead += 1

    @rule()
    def reopen(self) -> None:
        self.spool.close()
        self.spool = Spool(self.path, "model", max_bytes=self.max_bytes)

    @invariant()
    def stats_match_the_model_and_the_table(self) -> None:
        stats = self.spool.stats()
        assert stats.buffered_chunks == len(self.buffered)
        assert stats.buffered_bytes == sum(self.buffered.values())
        assert (stats.sent_chunks, stats.sent_bytes) == (self.sent_chunks, self.sent_bytes)
        assert stats.dead_lettered == self.dead
        assert [c.seq for c in self.spool.pending(limit=1000)] == sorted(self.buffered)

    def teardown(self) -> None:
        self.spool.close()
        self.directory.cleanup()


TestSpoolModel = SpoolModel.TestCase
TestSpoolModel.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
