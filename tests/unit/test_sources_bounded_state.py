"""The spool's file state stays bounded: checkpoints of files gone for longer than
``forget_after`` are forgotten, and so are the marks of backlog files gone that long;
files still there keep theirs however old. A compressed backlog file done before is known
at the next start without being decompressed. And a spool written by the previous
format is brought up to date with its data kept."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from main_process.sources.rotation import OpenedGeneration, open_generation
from main_process.sources.source_set import SourceSet
from main_process.spool.chunks import Spool
from tests.support.sources_helpers import CLIENT_ID, RunningSources, numbered_lines, upload_backlog

DAY = 86_400.0


class WallClock:
    """The spool's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _spool(directory: Path, clock: WallClock) -> Spool:
    return Spool(directory / "spool.sqlite3", CLIENT_ID, clock=clock)


async def _follow_once(
    spool: Spool, files: list[Path], forget_after: float = 30 * DAY
) -> SourceSet:
    sources = SourceSet([str(f) for f in files], [], spool, forget_after=forget_after)
    async with RunningSources(sources) as running:
        await running.wait_until(
            lambda: sources.initial_scan_done and running.quiet([f for f in files if f.exists()]),
            10,
            "the files read",
        )
    return sources


async def test_checkpoints_of_files_gone_too_long_are_forgotten(tmp_path: Path) -> None:
    clock = WallClock()
    kept = tmp_path / "kept.log"
    gone = tmp_path / "gone.log"
    kept.write_bytes(numbered_lines(range(0, 10)))
    gone.write_bytes(numbered_lines(range(10, 20)))
    spool = _spool(tmp_path / "data", clock)
    await _follow_once(spool, [kept, gone])
    assert spool.state_counts() == (2, 0)
    gone.unlink()
    clock.now += 40 * DAY  # kept.log untouched for 40 days: still there, still remembered
    sources = await _follow_once(spool, [kept, gone])
    assert spool.state_counts() == (2, 0)  # gone.log: noted missing from now
    clock.now += 29 * DAY
    sources = await _follow_once(spool, [kept, gone])
    assert spool.state_counts() == (2, 0)
    clock.now += 2 * DAY
    sources = await _follow_once(spool, [kept, gone])
    state = sources.state_counts()
    assert (state.checkpoints, state.checkpoints_forgotten) == (1, 1)
    assert [c.path for c in spool.checkpoints()] == [str(kept)]
    spool.close()


async def test_a_file_back_before_the_time_is_up_keeps_its_checkpoint(tmp_path: Path) -> None:
    clock = WallClock()
    log = tmp_path / "app.log"
    log.write_bytes(numbered_lines(range(0, 10)))
    spool = _spool(tmp_path / "data", clock)
    await _follow_once(spool, [log])
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    log.rename(moved / "app.log")  # away (an unmounted disk, say)
    await _follow_once(spool, [log])
    clock.now += 20 * DAY
    (moved / "app.log").rename(log)  # back
    await _follow_once(spool, [log])
    clock.now += 20 * DAY
    await _follow_once(spool, [log])
    assert spool.state_counts() == (1, 0)
    spool.close()


async def test_backlog_marks_of_files_gone_too_long_are_forgotten(tmp_path: Path) -> None:
    clock = WallClock()
    old = tmp_path / "old"
    old.mkdir()
    (old / "a.log").write_bytes(numbered_lines(range(0, 10)))
    (old / "b.log").write_bytes(numbered_lines(range(10, 20)))
    spool = _spool(tmp_path / "data", clock)
    await upload_backlog(spool, [str(old)])
    assert spool.state_counts() == (2, 2)  # a checkpoint and a mark per file
    (old / "a.log").unlink()
    clock.now += 1 * DAY
    await upload_backlog(spool, [str(old)])
    clock.now += 31 * DAY
    await upload_backlog(spool, [str(old)])
    assert spool.state_counts() == (1, 1)
    spool.close()


async def test_a_compressed_backlog_file_done_before_is_not_decompressed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "app.log.1.gz").write_bytes(gzip.compress(numbered_lines(range(0, 100))))
    spool = Spool(tmp_path / "data" / "spool.sqlite3", CLIENT_ID)
    await upload_backlog(spool, [str(old)])
    opened: list[str] = []

    def counting(path: str, *args: Any, **kwargs: Any) -> OpenedGeneration:
        opened.append(path)
        return open_generation(path, *args, **kwargs)

    monkeypatch.setattr("main_process.sources.backlog_queue.open_generation", counting)
    progress = await upload_backlog(spool, [str(old)])
    assert progress.files_done == progress.files_total == 1
    assert opened == []
    spool.close()


def test_a_spool_of_the_previous_format_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    connection = sqlite3.connect(path)
    connection.executescript(
        """
        CREATE TABLE chunks (seq INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL,
            source_path TEXT, source_offset INTEGER, byte_len INTEGER NOT NULL,
            created_at REAL NOT NULL);
        CREATE TABLE checkpoints (key TEXT PRIMARY KEY, path TEXT NOT NULL,
            offset INTEGER NOT NULL, fingerprint BLOB, updated_at REAL NOT NULL);
        CREATE TABLE backlog_done (fingerprint BLOB PRIMARY KEY, path TEXT NOT NULL,
            size INTEGER NOT NULL, finished_at REAL NOT NULL);
        INSERT INTO chunks (text, source_path, source_offset, byte_len, created_at)
            VALUES ('waiting line\n', '/x.log', 0, 13, 1.0);
        INSERT INTO checkpoints VALUES ('1:2', '/x.log', 13, NULL, 1.0);
        INSERT INTO backlog_done VALUES (x'00', '/old.log', 5, 1.0);
        PRAGMA user_version = 1;
        """
    )
    connection.close()
    spool = Spool(path, CLIENT_ID)
    assert [c.text for c in spool.pending(limit=10)] == ["waiting line\n"]
    assert spool.get_checkpoint("1:2") is not None
    assert spool.is_backlog_done(b"\x00")
    spool.forget_missing({"1:2"}, {b"\x00"}, DAY)
    assert spool.state_counts() == (1, 1)
    spool.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
