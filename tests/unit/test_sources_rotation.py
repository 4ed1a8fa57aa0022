"""Rotation with a writer running, and files changed while the client was down.

Each rotation test runs a writer thread that appends numbered lines (whole lines, one
``write`` per batch) and rotates the log itself, while a ``SourceSet`` follows the one
path on the test's event loop. The writer waits for the reader only where the pattern
would lose lines by its nature (a file deleted or renamed away before anyone opened it,
a truncation of bytes nobody read). Then the spool must hold every line exactly once,
in order within each file. Both the inotify watcher and ``--poll`` are exercised.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from pathlib import Path

import pytest

from harness.waiting import wait_until
from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import (
    RunningSources,
    WriterThread,
    append_all,
    append_bytes,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    rewrite_in_place,
    spooled,
    spooled_text,
)

LINES_PER_FILE = 6000
FILES = 3
BATCH = 40
SEGMENTS = [range(i * LINES_PER_FILE, (i + 1) * LINES_PER_FILE) for i in range(FILES)]
POLL_IDS = ["inotify", "poll"]


def write_numbers(fd: int, numbers: range) -> int:
    written = 0
    for start in range(numbers.start, numbers.stop, BATCH):
        data = numbered_lines(range(start, min(start + BATCH, numbers.stop)))
        append_all(fd, data)
        written += len(data)
    return written


def key_of(fd: int) -> str:
    status = os.fstat(fd)
    return f"{status.st_dev}:{status.st_ino}"


def open_for_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def split(segment: range, *fractions: float) -> list[range]:
    bounds = [segment.start, *(segment.start + int(len(segment) * f) for f in fractions)]
    bounds.append(segment.stop)
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


async def run_with_writer(tmp_path: Path, poll: bool, body_factory: object) -> None:
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    log.touch()
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(log)], [], spool, poll=poll, detached_idle_close=0.3)
    async with RunningSources(sources) as running:
        assert callable(body_factory)
        writer = WriterThread(body_factory(log, running))
        writer.start()
        await running.wait_until(lambda: not writer.is_alive(), 60, "the writer")
        writer.join_checked()
        total = FILES * LINES_PER_FILE
        await running.wait_until(lambda: running.quiet([log], total), 20, "every line spooled")
    # One writer, one file after another: the whole sequence is in the order written,
    # across every rotation, not only within each file.
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, total)])
    assert sources.counters().troubles == 0, sources.last_trouble
    spool.close()


def lines_over(running: RunningSources, count: int) -> bool:
    return running.lines_snapshot > count


def has_role(running: RunningSources, key: str, role: str) -> bool:
    return any(f.key == key and f.role == role for f in running.snapshot)


def followed_key(running: RunningSources, key: str) -> bool:
    return any(f.key == key for f in running.snapshot)


@pytest.mark.parametrize("poll", [False, True], ids=POLL_IDS)
async def test_rename_and_create(tmp_path: Path, poll: bool) -> None:
    """logrotate's default: rename the log, the writer writes a little more to the renamed
    file, then creates a new one. The renamed file's rest is read before it is closed."""

    def body_factory(log: Path, running: RunningSources) -> object:
        def body() -> None:
            for index, segment in enumerate(SEGMENTS):
                fd = open_for_append(log)
                key = key_of(fd)
                first, middle, last = split(segment, 0.25, 0.75)
                write_numbers(fd, first)
                opened = functools.partial(followed_key, running, key)
                wait_until(opened, 10, "the reader to open it", interval=0.002)
                write_numbers(fd, middle)
                if index < FILES - 1:
                    os.rename(log, log.with_name(f"app.log.{index + 1}"))
                    # The writer goes on writing to the renamed file after the reader
                    # noticed the rename: those lines are read too.
                    detached = functools.partial(has_role, running, key, "detached")
                    wait_until(detached, 10, "the reader to notice the rename", interval=0.002)
                write_numbers(fd, last)
                os.close(fd)

        return body

    await run_with_writer(tmp_path, poll, body_factory)


@pytest.mark.parametrize("poll", [False, True], ids=POLL_IDS)
async def test_copytruncate(tmp_path: Path, poll: bool) -> None:
    """logrotate's copytruncate: copy the log aside, truncate it in place; the writer keeps
    its O_APPEND descriptor. What the reader had not read yet is read from the copy."""

    def body_factory(log: Path, running: RunningSources) -> object:
        def body() -> None:
            fd = open_for_append(log)
            for index, segment in enumerate(SEGMENTS):
                first, rest = split(segment, 0.2)
                write_numbers(fd, first)
                # More lines spooled than all earlier files hold: some of this one is read.
                done = index * LINES_PER_FILE
                wait_until(
                    functools.partial(lines_over, running, done), 10, "a read", interval=0.002
                )
                write_numbers(fd, rest)
                if index < FILES - 1:
                    shutil.copyfile(log, log.with_name(f"app.log.{index + 1}"))
                    os.ftruncate(fd, 0)
            os.close(fd)

        return body

    await run_with_writer(tmp_path, poll, body_factory)


@pytest.mark.parametrize("poll", [False, True], ids=POLL_IDS)
async def test_truncate_in_place(tmp_path: Path, poll: bool) -> None:
    """A program that empties its log (the original game did, at every launch) after the
    reader has read it: the new content is read from byte 0."""

    def body_factory(log: Path, running: RunningSources) -> object:
        def body() -> None:
            fd = open_for_append(log)
            for index, segment in enumerate(SEGMENTS):
                write_numbers(fd, segment)
                if index < FILES - 1:
                    lines = (index + 1) * LINES_PER_FILE
                    wait_until(
                        functools.partial(lines_over, running, lines - 1),
                        10,
                        "a read",
                        interval=0.002,
                    )
                    os.ftruncate(fd, 0)
            os.close(fd)

        return body

    await run_with_writer(tmp_path, poll, body_factory)


@pytest.mark.parametrize("poll", [False, True], ids=POLL_IDS)
async def test_delete_and_recreate(tmp_path: Path, poll: bool) -> None:
    """The log is deleted (the writer still writes a little to it) and created anew: the
    deleted file's rest is read through the descriptor that was already open."""

    def body_factory(log: Path, running: RunningSources) -> object:
        def body() -> None:
            for index, segment in enumerate(SEGMENTS):
                fd = open_for_append(log)
                key = key_of(fd)
                first, middle, last = split(segment, 0.25, 0.75)
                write_numbers(fd, first)
                opened = functools.partial(followed_key, running, key)
                wait_until(opened, 10, "the reader to open it", interval=0.002)
                write_numbers(fd, middle)
                if index < FILES - 1:
                    log.unlink()
                    detached = functools.partial(has_role, running, key, "detached")
                    wait_until(detached, 10, "the reader to notice the deletion", interval=0.002)
                write_numbers(fd, last)
                os.close(fd)

        return body

    await run_with_writer(tmp_path, poll, body_factory)


# --------------------------------------------------------------- while the client was down


async def read_until_quiet(spool_dir: Path, logs: list[Path], patterns: list[str]) -> str:
    """Run a SourceSet until every log is spooled to its end; return the spool's text."""
    spool = open_spool(spool_dir)
    sources = SourceSet(patterns, [], spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet(logs), 10, "every line to be spooled")
    text = spooled_text(spool)
    spool.close()
    return text


async def test_file_replaced_by_another_while_down(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(numbered_lines(range(0, 500)))
    first = await read_until_quiet(tmp_path / "data", [log], [str(log)])
    replacement = tmp_path / "new.log"
    replacement.write_bytes(numbered_lines(range(500, 1500)))
    os.replace(replacement, log)
    both = await read_until_quiet(tmp_path / "data", [log], [str(log)])
    assert first == numbered_lines(range(0, 500)).decode()
    assert both == numbered_lines(range(0, 1500)).decode()


async def test_file_rewritten_in_place_while_down(tmp_path: Path) -> None:
    """Same inode, new content longer than the old checkpoint: read from the start."""
    log = tmp_path / "app.log"
    log.write_bytes(numbered_lines(range(0, 500)))
    await read_until_quiet(tmp_path / "data", [log], [str(log)])
    inode = log.stat().st_ino
    rewrite_in_place(log, numbered_lines(range(500, 1500)))
    assert log.stat().st_ino == inode
    both = await read_until_quiet(tmp_path / "data", [log], [str(log)])
    assert both == numbered_lines(range(0, 1500)).decode()


async def test_recreated_with_the_same_banner_on_the_same_inode(tmp_path: Path) -> None:
    """A log recreated with the same first KiB (a launch banner) on the same inode: only
    the anchor (the bytes before the checkpoint) tells it from the file that was read."""
    banner = b"".join(
        b"Engine 1.2.3 starting, renderer ready, audio ready %04d\n" % i for i in range(40)
    )
    assert len(banner) > 2048
    log = tmp_path / "app.log"
    log.write_bytes(banner + numbered_lines(range(0, 100)))
    await read_until_quiet(tmp_path / "data", [log], [str(log)])
    rewrite_in_place(log, banner + numbered_lines(range(1000, 1300)))
    both = await read_until_quiet(tmp_path / "data", [log], [str(log)])
    expected = banner + numbered_lines(range(0, 100)) + banner + numbered_lines(range(1000, 1300))
    assert both == expected.decode()


async def test_rotated_while_down_rest_is_read(tmp_path: Path) -> None:
    """Lines appended after the last run, then rename-and-create while the client was
    down: the renamed file is found next to its old path and its rest is read."""
    log = tmp_path / "app.log"
    log.write_bytes(numbered_lines(range(0, 300)))
    await read_until_quiet(tmp_path / "data", [log], [str(log)])
    append_bytes(log, numbered_lines(range(300, 700)))
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(numbered_lines(range(700, 900)))
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(log)], [], spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log]), 10, "every line to be spooled")
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 700), range(700, 900)])
    spool.close()


async def test_checkpoint_survives_rename_under_a_glob(tmp_path: Path) -> None:
    """With a glob that also matches rotated names, a renamed file keeps its follower
    (same inode): nothing is read twice under its new name."""
    log = tmp_path / "app.log"
    log.write_bytes(numbered_lines(range(0, 200)))
    pattern = str(tmp_path / "app.log*")
    await read_until_quiet(tmp_path / "data", [log], [pattern])
    rotated = tmp_path / "app.log.1"
    log.rename(rotated)
    log.write_bytes(numbered_lines(range(200, 300)))
    text = await read_until_quiet(tmp_path / "data", [log, rotated], [pattern])
    assert_exactly_once_in_order(
        [int(line[:8]) for line in text.splitlines()], [range(0, 200), range(200, 300)]
    )
