"""Helpers for the sources tests: run a ``SourceSet`` on the test's loop, write numbered
lines from a thread, wait for conditions with deadlines, and check the spool's content;
upload a backlog to the end (``upload_backlog``) and rotate a log the way logrotate's
numbered scheme does (``rotate_by_rename``, compressed with one of ``COMPRESSORS``).

Lines are ``"%08d <payload>\\n"`` with a global number, so "exactly once, in order per
file" is checked from the spool alone: every number written appears once, and the
numbers written to one file appear in increasing order.
"""

from __future__ import annotations

import asyncio
import bz2
import gzip
import lzma
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.waiting import wait_until_async
from main_process.sources.source_set import BacklogProgress, FollowedFile, SourceSet
from main_process.spool.chunks import Spool, SpooledChunk

CLIENT_ID = "0b1e6a0e-4a52-4d3e-9d6b-4a4f3f1f0c11"


def numbered_line(number: int, payload: str = "the quick brown fox") -> str:
    return f"{number:08d} {payload}\n"


def numbered_lines(numbers: range, payload: str = "the quick brown fox") -> bytes:
    return "".join(numbered_line(n, payload) for n in numbers).encode()


def open_spool(directory: Path, max_bytes: int = 256 * 1024 * 1024) -> Spool:
    return Spool(directory / "spool.sqlite3", CLIENT_ID, max_bytes=max_bytes)


def spooled(spool: Spool) -> list[SpooledChunk]:
    return spool.pending(limit=1_000_000_000)


def spooled_text(spool: Spool) -> str:
    return "".join(chunk.text for chunk in spooled(spool))


def line_numbers(chunks: Sequence[SpooledChunk]) -> list[int]:
    """Numbers of the lines in spool order. Every chunk must hold whole lines (the
    writers write whole lines with one ``write`` each)."""
    numbers: list[int] = []
    for chunk in chunks:
        assert chunk.text.endswith("\n"), f"chunk {chunk.seq} ends inside a line"
        numbers.extend(int(line[:8]) for line in chunk.text.splitlines())
    return numbers


def assert_exactly_once_in_order(numbers: list[int], segments: Sequence[range]) -> None:
    """Every number of ``segments`` once, none else; within a segment (one file), in order."""
    expected = sorted(n for segment in segments for n in segment)
    assert len(numbers) == len(expected), (
        f"{len(numbers)} lines in the spool, {len(expected)} written"
    )
    assert sorted(numbers) == expected, "lines missing or duplicated"
    for segment in segments:
        inside = [n for n in numbers if n in segment]
        assert inside == list(segment), f"lines of segment {segment} out of order"


class RunningSources:
    """``async with RunningSources(source_set):`` runs it in a task on the current loop.

    A snapshot of ``followed()`` is refreshed every few milliseconds so writer threads
    can wait on reader progress without touching the SourceSet from another thread.
    """

    def __init__(self, sources: SourceSet) -> None:
        self.sources = sources
        self.snapshot: tuple[FollowedFile, ...] = ()
        self.lines_snapshot = 0
        self._counted_seq: int | None = None
        self._counted_lines = 0
        self._task: asyncio.Task[None] | None = None
        self._snapshot_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.sources.run())
        self._snapshot_task = asyncio.create_task(self._refresh_snapshot())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        self.sources.stop()
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)

    async def _refresh_snapshot(self) -> None:
        while True:
            self.snapshot = self.sources.followed()
            self.lines_snapshot = self.spooled_lines()
            await asyncio.sleep(0.005)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until it holds; fail at once if ``SourceSet.run`` ends first
        (with its exception, if it raised one)."""

        def holds_while_running() -> bool:
            if predicate():
                return True
            if self._task is not None and self._task.done():
                self._task.result()
                raise AssertionError(f"SourceSet.run returned while waiting for {what}")
            return False

        await wait_until_async(holds_while_running, timeout, what)

    def spooled_lines(self) -> int:
        """Newlines appended to the spool so far (nothing acknowledges chunks in these
        tests), counted in the chunks appended since the last call."""
        for chunk in self.sources.spool.pending(self._counted_seq, limit=1_000_000):
            self._counted_lines += chunk.text.count("\n")
            self._counted_seq = chunk.seq
        return self._counted_lines

    def quiet(self, files: Sequence[Path], lines: int = 0) -> bool:
        """At least ``lines`` lines were spooled, every given file is followed and read to
        its end, no chunk is waiting, and no rotated file is still open: nothing more can
        arrive."""
        if lines and self.spooled_lines() < lines:
            return False
        followed = self.sources.followed()
        if any(f.role != "live" or f.read_offset != f.committed_offset for f in followed):
            return False
        by_path = {f.path: f for f in followed}
        for path in files:
            entry = by_path.get(str(path))
            if entry is None or entry.committed_offset != path.stat().st_size:
                return False
        return True


class WriterThread(threading.Thread):
    """Runs ``body`` in a thread; ``join_checked`` re-raises what it raised."""

    def __init__(self, body: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._body = body
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._body()
        except BaseException as exc:
            self.error = exc

    def join_checked(self, timeout: float = 30) -> None:
        self.join(timeout)
        assert not self.is_alive(), "writer thread did not finish"
        if self.error is not None:
            raise self.error


def append_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def append_bytes(path: Path, data: bytes) -> None:
    """Append with one write (a function, so async tests do not call ``open`` inline)."""
    with open(path, "ab") as file:
        file.write(data)


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Truncate and rewrite the same inode."""
    with open(path, "r+b") as file:
        file.truncate(0)
        file.write(data)


async def upload_backlog(spool: Spool, patterns: list[str]) -> BacklogProgress:
    """Run a ``SourceSet`` with ``patterns`` as its backlog until every file of it is
    uploaded; its progress then."""
    sources = SourceSet([], patterns, spool)
    async with RunningSources(sources) as running:

        def done() -> bool:
            progress = sources.progress()
            return (
                sources.initial_scan_done
                and progress.files_done == progress.files_total
                and not sources.followed()
            )

        await running.wait_until(done, 20, "the backlog")
    return sources.progress()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}


def rotate_by_rename(log: Path, compress: str | None = None) -> None:
    """logrotate's numbered scheme: ``.N`` → ``.N+1``, the log → ``.1`` (compressed at
    once with ``compress``, the uncompressed file removed), then a new empty log."""
    suffix = compress or ""
    rotated = sorted(
        (p for p in log.parent.iterdir() if p.name.startswith(log.name + ".")),
        key=lambda p: int(p.name[len(log.name) + 1 :].split(".")[0]),
        reverse=True,
    )
    for path in rotated:
        number = int(path.name[len(log.name) + 1 :].split(".")[0])
        rest = path.name[len(log.name) + 1 + len(str(number)) :]
        path.rename(log.with_name(f"{log.name}.{number + 1}{rest}"))
    first = log.with_name(f"{log.name}.1")
    log.rename(first)
    if compress is not None:
        compressed = first.with_name(first.name + suffix)
        compressed.write_bytes(COMPRESSORS[compress](first.read_bytes()))
        os.utime(compressed, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns))
        first.unlink()
    log.touch()
