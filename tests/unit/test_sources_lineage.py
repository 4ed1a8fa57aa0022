"""Generations of one log: every line once, in the order written, however many rotations
happened while the client was down or between two looks, compressed or not.

Each test writes numbered lines to ``app.log`` and rotates it by hand the way logrotate
would (``rotate_by_rename``, ``rotate_by_copy``), with a ``SourceSet`` run before, between
and after; the spool must then hold every number of every generation exactly once, in
order across generations. ``tests/system/test_logrotate.py`` does the same end to end with the
real ``logrotate``; these pin down each case quickly, and the pure parts of
``main_process.sources.rotation`` are tested at the bottom.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from main_process.sources.file_identity import (
    Anchor,
    CheckpointFingerprint,
    FileKey,
    HeadFingerprint,
)
from main_process.sources.rotation import (
    NOTHING_LEFT,
    Candidate,
    KnownPosition,
    is_rotated_name,
    known_offset,
    plan_recovery,
)
from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import (
    COMPRESSORS,
    RunningSources,
    append_bytes,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    rotate_by_rename,
    spooled,
)


def rotate_by_copy(log: Path) -> None:
    """copytruncate: shift the numbered copies, copy the log to ``.1``, truncate it."""
    for number in range(50, 0, -1):
        path = log.with_name(f"{log.name}.{number}")
        if path.exists():
            path.rename(log.with_name(f"{log.name}.{number + 1}"))
    shutil.copyfile(log, log.with_name(f"{log.name}.1"))
    os.truncate(log, 0)


def compress_beside(path: Path) -> None:
    """``path.gz`` next to ``path``, keeping its modification time as gzip and logrotate
    do (the original stays, as it does until the compressor unlinks it)."""
    compressed = path.with_name(path.name + ".gz")
    compressed.write_bytes(gzip.compress(path.read_bytes()))
    status = path.stat()
    os.utime(compressed, ns=(status.st_atime_ns, status.st_mtime_ns))


async def follow_until_quiet(data: Path, log: Path, lines: int) -> None:
    """Run a SourceSet on ``log`` until ``lines`` lines are spooled and nothing is open
    but the log itself, read to its end."""
    spool = open_spool(data)
    sources = SourceSet([str(log)], [], spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(
            lambda: running.quiet([log], lines), 10, f"{lines} lines to be spooled"
        )
    spool.close()


async def a_log_read_once(tmp_path: Path) -> tuple[Path, Path]:
    """``logs/app.log`` holding lines 0-99, read by a client until they are all spooled
    (then the client stops, as if it went down): the log and the client's data dir."""
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    data = tmp_path / "data"
    log.write_bytes(numbered_lines(range(0, 100)))
    await follow_until_quiet(data, log, 100)
    return log, data


def numbers_in_spool(data: Path) -> list[int]:
    spool = open_spool(data)
    try:
        return line_numbers(spooled(spool))
    finally:
        spool.close()


async def test_rotated_three_times_while_down(tmp_path: Path) -> None:
    """Rename-and-create three times while the client is down: the generation being read
    is finished, the two never seen are read whole, then the new log, in that order."""
    log, data = await a_log_read_once(tmp_path)
    append_bytes(log, numbered_lines(range(100, 150)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(150, 300)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(300, 420)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(420, 500)))
    await follow_until_quiet(data, log, 400)
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 500)])


@pytest.mark.parametrize("compress", sorted(COMPRESSORS))
async def test_rotated_and_compressed_while_down(tmp_path: Path, compress: str) -> None:
    """logrotate's ``compress`` without ``delaycompress``: every rotated generation is
    compressed and the plain file removed, the one being read included. Its rest is read
    from the compressed file, at the byte the checkpoint names."""
    log, data = await a_log_read_once(tmp_path)
    append_bytes(log, numbered_lines(range(100, 150)))
    rotate_by_rename(log, compress)
    append_bytes(log, numbered_lines(range(150, 300)))
    rotate_by_rename(log, compress)
    append_bytes(log, numbered_lines(range(300, 360)))
    await follow_until_quiet(data, log, 260)
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 360)])


async def test_delaycompress_while_down(tmp_path: Path) -> None:
    """``delaycompress``: the newest rotated file stays plain until the next rotation
    compresses it; the generation that was being read is compressed by then."""
    log, data = await a_log_read_once(tmp_path)
    append_bytes(log, numbered_lines(range(100, 130)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(130, 200)))
    rotate_by_rename(log)
    older = log.with_name("app.log.2")
    compress_beside(older)
    older.unlink()
    append_bytes(log, numbered_lines(range(200, 240)))
    await follow_until_quiet(data, log, 140)
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 240)])


async def test_copytruncated_twice_while_down(tmp_path: Path) -> None:
    """Two ``copytruncate`` rotations while down: the log's inode is the one read before,
    its content is new; the rest of the old content is in ``.2``, a whole generation in
    ``.1``."""
    log, data = await a_log_read_once(tmp_path)
    inode = log.stat().st_ino
    append_bytes(log, numbered_lines(range(100, 140)))
    rotate_by_copy(log)
    append_bytes(log, numbered_lines(range(140, 260)))
    rotate_by_copy(log)
    append_bytes(log, numbered_lines(range(260, 300)))
    assert log.stat().st_ino == inode
    await follow_until_quiet(data, log, 200)
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 300)])


async def test_old_rotated_files_are_not_uploaded(tmp_path: Path) -> None:
    """Rotated files that were there before the client ever followed the log are
    history, not part of the log's lineage: only ``--backlog`` uploads them."""
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    data = tmp_path / "data"
    log.write_bytes(numbered_lines(range(0, 50)))
    rotate_by_rename(log)
    log.write_bytes(numbered_lines(range(50, 100)))
    await follow_until_quiet(data, log, 50)
    # And across a rotation after that, the pre-existing file is still left alone.
    append_bytes(log, numbered_lines(range(100, 120)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(120, 150)))
    await follow_until_quiet(data, log, 50)
    assert_exactly_once_in_order(numbers_in_spool(data), [range(50, 150)])


async def test_from_end_does_not_skip_a_generation_after_restart(tmp_path: Path) -> None:
    """``from_end`` starts a log the client never read at its end; a new generation of a
    log it did read is read from its start."""
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    data = tmp_path / "data"
    log.write_bytes(numbered_lines(range(0, 50)))
    spool = open_spool(data)
    sources = SourceSet([str(log)], [], spool, from_end=True, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log]), 10, "the log at its end")
        append_bytes(log, numbered_lines(range(50, 80)))
        await running.wait_until(lambda: running.quiet([log], 30), 10, "lines 50-79")
    spool.close()
    rotate_by_rename(log)
    log.write_bytes(numbered_lines(range(80, 120)))
    spool = open_spool(data)
    sources = SourceSet([str(log)], [], spool, from_end=True, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log], 40), 10, "the new generation")
    spool.close()
    assert_exactly_once_in_order(numbers_in_spool(data), [range(50, 120)])


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
async def test_rotations_faster_than_the_reader_looks(tmp_path: Path, poll: bool) -> None:
    """Several rotations in a burst while the client runs (faster than a poll, and than
    a rescan): whichever ones it sees, every line is read once, in order."""
    log = tmp_path / "logs" / "app.log"
    log.parent.mkdir()
    log.touch()
    data = tmp_path / "data"
    spool = open_spool(data)
    sources = SourceSet([str(log)], [], spool, poll=poll, detached_idle_close=0.2)
    total = 0
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log]), 10, "the log to be followed")
        for burst in range(4):
            for _ in range(3):
                append_bytes(log, numbered_lines(range(total, total + 70)))
                total += 70
                rotate_by_rename(log, ".gz" if burst % 2 else None)
            append_bytes(log, numbered_lines(range(total, total + 30)))
            total += 30
            quiet = functools.partial(running.quiet, [log], total)
            await running.wait_until(quiet, 10, "the burst")
    spool.close()
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, total)])


def _half_compressed(log: Path) -> bytes:
    """``app.log.1`` rotated, and caught while gzip has written half of ``app.log.1.gz``
    (the plain file already gone from the listing): what the first look finds."""
    rotated = log.with_name("app.log.1")
    whole = gzip.compress(rotated.read_bytes())
    partial = log.with_name("app.log.1.gz")
    partial.write_bytes(whole[: len(whole) // 2])
    os.utime(partial, ns=(rotated.stat().st_atime_ns, rotated.stat().st_mtime_ns))
    rotated.unlink()
    return whole


async def test_a_generation_still_being_compressed_holds_its_log(tmp_path: Path) -> None:
    """A rotated generation found half compressed is waited for: nothing of the newer
    generation is committed before it, and once it is whole it is read from the byte the
    checkpoint names."""
    log, data = await a_log_read_once(tmp_path)
    append_bytes(log, numbered_lines(range(100, 150)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(150, 200)))
    whole = _half_compressed(log)
    spool = open_spool(data)
    sources = SourceSet([str(log)], [], spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: sources.initial_scan_done, 10, "the first scan")
        # Held: the new log is followed but not read while its predecessor is unreadable.
        assert [f.read_offset for f in sources.followed()] == [0]
        partial = log.with_name("app.log.1.gz")
        mtime = partial.stat().st_mtime_ns
        partial.write_bytes(whole)
        os.utime(partial, ns=(mtime, mtime))
        await running.wait_until(lambda: running.quiet([log], 100), 10, "every line")
    assert sources.counters().troubles == 0, sources.last_trouble
    spool.close()
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 200)])


async def test_a_new_generation_while_held_keeps_what_the_start_was_waiting_for(
    tmp_path: Path,
) -> None:
    """Restarted while logrotate compresses: the look for what was rotated while the
    client was down waits for a half-compressed file, and meanwhile the log is rotated
    again with its newest generation half compressed too. Both looks are kept, oldest
    first: the generations only the first one looks for (rotated while down, never
    read) are read, and every line is once in order. (The second used to replace the
    first, and those generations were never read.)"""
    log, data = await a_log_read_once(tmp_path)
    # While down: that generation is compressed, one more is written and compressed,
    # then another is rotated and caught half compressed; a new log has begun.
    rotate_by_rename(log, ".gz")
    append_bytes(log, numbered_lines(range(100, 200)))
    rotate_by_rename(log, ".gz")
    append_bytes(log, numbered_lines(range(200, 250)))
    rotate_by_rename(log)
    first_whole = _half_compressed(log)
    append_bytes(log, numbered_lines(range(250, 300)))
    spool = open_spool(data)
    sources = SourceSet([str(log)], [], spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: sources.initial_scan_done, 10, "the first scan")
        assert [f.read_offset for f in sources.followed()] == [0]  # held
        # Rotated again while held; gzip is still writing this one (its time is now).
        rotate_by_rename(log)
        rotated = log.with_name("app.log.1")
        second_whole = gzip.compress(rotated.read_bytes())
        second_mtime = rotated.stat().st_mtime_ns
        log.with_name("app.log.1.gz").write_bytes(second_whole[: len(second_whole) // 2])
        rotated.unlink()
        append_bytes(log, numbered_lines(range(300, 320)))
        await running.wait_until(
            lambda: len(sources.followed()) == 2, 10, "the newest log to be followed"
        )
        for name, whole, mtime in (
            ("app.log.2.gz", first_whole, None),
            ("app.log.1.gz", second_whole, second_mtime),
        ):
            done = log.with_name(name)
            mtime = mtime if mtime is not None else done.stat().st_mtime_ns
            done.write_bytes(whole)
            os.utime(done, ns=(mtime, mtime))
        await running.wait_until(lambda: running.quiet([log], 220), 10, "every line")
    assert sources.counters().troubles == 0, sources.last_trouble
    spool.close()
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 320)])


@pytest.mark.parametrize("grew_after_copy", [False, True], ids=["as-copied", "grew-after"])
async def test_a_generation_found_with_its_compressed_copy_is_read_once(
    tmp_path: Path, grew_after_copy: bool
) -> None:
    """Restarted while logrotate's compress has written ``app.log.1.gz`` whole but not yet
    unlinked ``app.log.1``: one generation never read, under two names. It is read once,
    from the longer of the two (the writer may have appended to the original after the
    copy was made). (Both used to be read: a whole generation twice.)"""
    log, data = await a_log_read_once(tmp_path)
    append_bytes(log, numbered_lines(range(100, 150)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(150, 250)))
    rotate_by_rename(log)
    original = log.with_name("app.log.1")
    compress_beside(original)
    end = 250
    if grew_after_copy:
        append_bytes(original, numbered_lines(range(250, 260)))
        end = 260
    append_bytes(log, numbered_lines(range(end, end + 40)))
    await follow_until_quiet(data, log, end + 40 - 100)
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, end + 40)])


async def test_a_rotation_between_the_listing_and_the_reading_is_looked_at_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarted while logrotate runs: the directory is listed, then logrotate renames
    every ``.N.gz`` up by one and compresses the log into ``app.log.1.gz`` before the
    listed files are read. A listed name that now holds another file (or none) means the
    listing is stale: the lineage is looked at again, and no generation is skipped.
    (The generation listed as ``app.log.1.gz`` used to be taken for the newest one, a copy
    of the open log, and never read.)"""
    from main_process.sources import rotation

    log, data = await a_log_read_once(tmp_path)
    rotate_by_rename(log, ".gz")
    append_bytes(log, numbered_lines(range(100, 200)))
    rotate_by_rename(log, ".gz")
    append_bytes(log, numbered_lines(range(200, 300)))
    real_find = rotation.find_candidates
    rotated_meanwhile: list[bool] = []

    def listing_then_rotation(*args: Any, **kwargs: Any) -> Any:
        listed = real_find(*args, **kwargs)
        if not rotated_meanwhile:
            rotated_meanwhile.append(True)
            rotate_by_rename(log, ".gz")
            append_bytes(log, numbered_lines(range(300, 350)))
        return listed

    monkeypatch.setattr(
        "main_process.sources.generation_recovery.find_candidates", listing_then_rotation
    )
    await follow_until_quiet(data, log, 250)
    assert rotated_meanwhile
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 350)])


async def test_a_compressed_generation_that_stays_broken_is_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed file that never gets its end marker is given up on after a while:
    one sentence names it, and the log goes on with its newer generation."""
    monkeypatch.setattr("main_process.sources.generation_recovery._HOLD_LIMIT", 0.3)
    log, data = await a_log_read_once(tmp_path)
    append_bytes(log, numbered_lines(range(100, 150)))
    rotate_by_rename(log)
    append_bytes(log, numbered_lines(range(150, 200)))
    _half_compressed(log)
    spool = open_spool(data)
    sources = SourceSet([str(log)], [], spool, detached_idle_close=0.2)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log], 50), 10, "the newer generation")
    spool.close()
    assert sources.last_trouble is not None
    assert "app.log.1.gz ends before its end marker" in sources.last_trouble
    assert_exactly_once_in_order(numbers_in_spool(data), [range(0, 100), range(150, 200)])


# --------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("name", "rotated"),
    [
        ("app.log.1", True),
        ("app.log.12.gz", True),
        ("app.log-20261127", True),
        ("app.log-20261127-101500.gz", True),
        ("app.log.2026-11-27", True),
        ("app.log_old", True),
        ("app.log", False),
        ("app.log.", False),
        ("app.logger", False),
        ("other.log.1", False),
        ("app-20261127.log", False),
    ],
)
def test_rotated_names(name: str, rotated: bool) -> None:
    assert is_rotated_name("app.log", name) is rotated


def _candidate(name: str, mtime: int) -> Candidate:
    return Candidate(name, FileKey(1, mtime), mtime)


def test_plan_stops_at_the_newest_known_generation() -> None:
    newest_first = [_candidate(n, m) for n, m in (("a.1", 30), ("a.2", 20), ("a.3", 10))]
    known = {"a.2": 500}
    plan = plan_recovery(newest_first, lambda c: known.get(c.path), None)
    assert [(step.candidate.path, step.start, step.known) for step in plan] == [
        ("a.2", 500, True),
        ("a.1", 0, False),
    ]


def test_plan_without_a_known_generation_takes_only_recent_files() -> None:
    newest_first = [_candidate(n, m) for n, m in (("a.1", 30), ("a.2", 20), ("a.3", 10))]
    plan = plan_recovery(newest_first, lambda c: None, not_before_ns=15)
    assert [step.candidate.path for step in plan] == ["a.2", "a.1"]
    assert plan_recovery(newest_first, lambda c: None, not_before_ns=None) == []


def _position(content: bytes, offset: int, reach: int, at_ns: int) -> KnownPosition:
    fingerprint = CheckpointFingerprint(
        HeadFingerprint.of(content[:1024]), Anchor.of(content[:offset])
    )
    return KnownPosition(fingerprint, offset, reach, at_ns)


def _known(tmp_path: Path, copy: bytes, mtime_ns: int, *positions: KnownPosition) -> int | None:
    path = tmp_path / "copy"
    path.write_bytes(copy)
    fd = os.open(path, os.O_RDONLY)
    try:
        return known_offset(fd, len(copy), mtime_ns, positions)
    finally:
        os.close(fd)


def test_known_offset_resumes_at_the_reach_of_the_generation(tmp_path: Path) -> None:
    content = numbered_lines(range(0, 300))
    checkpoint = _position(content, 2000, 2000, at_ns=100)
    assert _known(tmp_path, content, 50, checkpoint) == 2000
    # The same generation was read further than its checkpoint (a truncated follower).
    further = _position(content, 2000, 5000, at_ns=100)
    assert _known(tmp_path, content, 50, further) == 5000
    # A copy made before the reader got that far holds nothing new.
    assert _known(tmp_path, content[:4000], 50, further) == NOTHING_LEFT


def test_known_offset_tells_an_earlier_snapshot_from_a_new_generation(tmp_path: Path) -> None:
    content = numbered_lines(range(0, 300))
    checkpoint = _position(content, 6000, 6000, at_ns=1_000)
    # Shorter than the checkpoint, same head, last written before it: a copy made
    # earlier of the generation that was read up to the checkpoint.
    assert _known(tmp_path, content[:4000], 900, checkpoint) == NOTHING_LEFT
    # Written after the checkpoint was taken: not that generation's snapshot.
    assert _known(tmp_path, content[:4000], 2_000, checkpoint) is None
    # Another head: unknown.
    assert _known(tmp_path, numbered_lines(range(500, 600)), 900, checkpoint) is None
