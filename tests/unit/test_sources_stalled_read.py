"""A read that does not return (a stalled NFS or SMB mount) stops neither the event loop
nor the other files: reads run in worker threads, the stall is reported in one sentence,
and the file resumes by itself when the read returns, nothing lost, nothing twice.

No file system here can be made to stall on demand without FUSE, so the stand-in is the
read function itself (``file_follower.pread``), held for one file until the test lets go.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

import main_process.sources.file_follower
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

    async def measure_loop_lag() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([stalled, healthy], 20), 10, "first lines")
        ticker = asyncio.create_task(measure_loop_lag())
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
