"""The spool's WAL is copied into its database file by a thread of its own, and stays
bounded even when commits never pause (a large backlog shipping)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from harness.waiting import wait_until
from main_process.spool.chunks import NewChunk, Spool
from main_process.spool.database import _WAL_CHECKPOINT_BYTES, _WAL_LIMIT_BYTES

CHUNK = "x" * 511 + "\n"
CHUNK_TEXT = CHUNK * 1024  # 512 KiB
MIB = 1024 * 1024


def wal_bytes(spool_path: Path) -> int:
    try:
        return os.stat(f"{spool_path}-wal").st_size
    except FileNotFoundError:
        return 0


def test_the_writer_does_not_checkpoint_in_its_commits(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.sqlite3", "client") as spool:
        connection = spool._database.connection
        assert connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert any(thread.name == "spool-checkpoint" for thread in threading.enumerate())
        for _ in range(2 * _WAL_CHECKPOINT_BYTES // len(CHUNK_TEXT)):
            spool.append(CHUNK_TEXT)
        wait_until(lambda: spool._database.thread_checkpoints >= 1, 10, "a checkpoint")
        assert spool._database.wal_restarts == 0
    assert not any(thread.name == "spool-checkpoint" for thread in threading.enumerate())


def test_the_wal_stays_bounded_while_commits_never_pause(tmp_path: Path) -> None:
    # Eight chunks in flight: each commit appends one and acknowledges the oldest, with
    # no gap between commits for a checkpoint to end in. 240 MiB in all.
    spool_path = tmp_path / "spool.sqlite3"
    largest = 0
    with Spool(spool_path, "client") as spool:
        in_flight = [chunk.seq for chunk in spool.append_many([NewChunk(CHUNK_TEXT)] * 8)]
        for _ in range(480):
            spool.acknowledge(in_flight.pop(0))
            in_flight.append(spool.append(CHUNK_TEXT).seq)
            largest = max(largest, wal_bytes(spool_path))
        checkpoints = spool._database.thread_checkpoints
        assert [chunk.seq for chunk in spool.pending()] == in_flight
    # Past its limit by one commit at most: the next one starts the log over.
    assert largest <= _WAL_LIMIT_BYTES + 2 * MIB, largest / MIB
    assert checkpoints >= 1
    assert not Path(f"{spool_path}-wal").exists()  # the last close checkpointed it all
