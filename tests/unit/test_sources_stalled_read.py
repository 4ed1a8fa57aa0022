"""A read that does not return (a stalled NFS or SMB mount) stops neither the event loop
nor the other files: reads run in worker threads, the stall is reported in one sentence,
and the file resumes by itself when the read returns, nothing lost, nothing twice. A
slow disk under the spool (its fdatasync taking seconds) does not stop the loop either.

No file system here can be made to stall on demand without FUSE, so the stand-ins are the
read function itself (``file_follower.pread``), held for one file until the test lets go,
and the spool's segment sync (``spool.segments._flush_data``), held the same way.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

import main_process.sources.file_follower
import main_process.spool.segments
from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import (
    RunningSources,
    append_bytes,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    spooled,
)


class HeldReads:
    """``os.pread``, except for one file's descriptor once ``hold`` is set: its reads
    wait until ``release``."""

    def __init__(self, stalled: Path) -> None:
        self.stalled = os.stat(stalled)
        self.hold = threading.Event()
        self.released = threading.Event()
        self.waiting = threading.Event()

    def __call__(self, fd: int, size: int, offset: int) -> bytes:
        status = os.fstat(fd)
        if self.hold.is_set() and (status.st_dev, status.st_ino) == (
            self.stalled.st_dev,
            self.stalled.st_ino,
        ):
            self.waiting.set()
            self.released.wait(30)
        return os.pread(fd, size, offset)


async def measure_loop_lag(lags: list[float]) -> None:
    """How late the loop runs a 10 ms timer, tick after tick (until cancelled)."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        lags.append(time.monotonic() - before - 0.01)


async def test_a_stalled_read_stops_neither_the_loop_nor_the_other_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stalled = tmp_path / "nfs.log"
    healthy = tmp_path / "local.log"
    stalled.write_bytes(numbered_lines(range(0, 10)))
    healthy.write_bytes(numbered_lines(range(1000, 1010)))
    reads = HeldReads(stalled)
    monkeypatch.setattr(main_process.sources.file_follower, "pread", reads)
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(stalled), str(healthy)], [], spool, read_stall_after=0.3)
    lags: list[float] = []

    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([stalled, healthy], 20), 10, "first lines")
        ticker = asyncio.create_task(measure_loop_lag(lags))
        reads.hold.set()
        append_bytes(stalled, numbered_lines(range(10, 20)))
        await running.wait_until(reads.waiting.is_set, 10, "the stalled read")
        # Meanwhile the other file's lines go through, and the loop stays responsive.
        append_bytes(healthy, numbered_lines(range(1010, 1020)))
        await running.wait_until(lambda: running.quiet([healthy], 30), 5, "the healthy file")
        await running.wait_until(
            lambda: sources.last_trouble is not None and "has not returned" in sources.last_trouble,
            5,
            "the stall reported",
        )
        assert str(stalled) in (sources.last_trouble or "")
        assert max(lags) < 0.2, f"the loop stalled for {max(lags):.3f} s"
        # The mount comes back: the file resumes where it was.
        reads.hold.clear()
        reads.released.set()
        append_bytes(stalled, numbered_lines(range(20, 30)))
        await running.wait_until(lambda: running.quiet([stalled, healthy], 50), 10, "resumed")
        ticker.cancel()
    numbers = line_numbers(spooled(spool))
    assert_exactly_once_in_order(numbers, [range(0, 30), range(1000, 1020)])
    spool.close()


async def test_a_slow_disk_under_the_spool_does_not_stop_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The texts of an append are fdatasynced in a worker: while the disk holds that
    sync, the loop goes on (the connection's acknowledgements, the windows), and the
    lines are committed, once each and in order, when it returns."""
    log = tmp_path / "app.log"
    log.write_bytes(numbered_lines(range(0, 10)))
    hold, released, waiting = threading.Event(), threading.Event(), threading.Event()
    real_flush = main_process.spool.segments._flush_data

    def slow_flush(fd: int) -> None:
        if hold.is_set():
            waiting.set()
            released.wait(30)
        real_flush(fd)

    monkeypatch.setattr(main_process.spool.segments, "_flush_data", slow_flush)
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(log)], [], spool)
    lags: list[float] = []

    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log], 10), 10, "first lines")
        ticker = asyncio.create_task(measure_loop_lag(lags))
        hold.set()
        append_bytes(log, numbered_lines(range(10, 20)))
        await running.wait_until(waiting.is_set, 10, "the held sync")
        ticks = len(lags)
        await running.wait_until(lambda: len(lags) >= ticks + 20, 5, "the loop to tick on")
        assert line_numbers(spooled(spool)) == list(range(0, 10))  # not committed yet
        hold.clear()
        released.set()
        await running.wait_until(lambda: running.quiet([log], 20), 10, "the held lines")
        ticker.cancel()
    assert max(lags) < 0.2, f"the loop stalled for {max(lags):.3f} s"
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 20)])
    spool.close()
