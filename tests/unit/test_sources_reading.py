"""Reading: throughput, partial lines, huge lines, bad bytes, restarts, new files.

Real files in ``tmp_path``, the real ``Spool``, a ``SourceSet`` on the test's loop; every
wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from pathlib import Path

from main_process.sources.source_set import SourceSet
from main_process.spool.chunks import Spool
from tests.support.sources_helpers import (
    RunningSources,
    WriterThread,
    append_all,
    append_bytes,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    spooled,
    spooled_text,
)


def spooled_ends_with(spool: Spool, text: str) -> bool:
    return spooled_text(spool).endswith(text)


def has_chunks(spool: Spool, count: int) -> bool:
    return spool.stats().buffered_chunks >= count


PAYLOAD = "GET /api/v1/items?page=2 200 12ms user=4711"  # 54-byte lines


async def test_a_million_lines_as_fast_as_they_are_written(tmp_path: Path) -> None:
    total = 1_000_000
    log = tmp_path / "fast.log"
    log.touch()
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(log)], [], spool)

    def write() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        for start in range(0, total, 2000):
            append_all(fd, numbered_lines(range(start, start + 2000), PAYLOAD))
        os.close(fd)

    started = time.perf_counter()
    async with RunningSources(sources) as running:
        writer = WriterThread(write)
        writer.start()
        await running.wait_until(lambda: running.quiet([log], total), 60, "a million lines")
        elapsed = time.perf_counter() - started
        writer.join_checked()
    size = log.stat().st_size
    print(
        f"\n1,000,000 lines ({size / 1e6:.1f} MB) file -> spool in {elapsed:.2f} s: "
        f"{total / elapsed:,.0f} lines/s, {size / 1e6 / elapsed:.1f} MB/s"
    )
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(total)])
    counters = sources.counters()
    assert counters.bytes_read == counters.bytes_appended == size
    spool.close()


async def test_partial_line_is_held_then_completed_or_emitted_when_idle(tmp_path: Path) -> None:
    log = tmp_path / "partial.log"
    log.write_bytes(b"one\ntw")
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(log)], [], spool, linger=0.05, partial_line_linger=0.6)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: spooled_text(spool) == "one\n", 5, "the first line")
        held_since = time.monotonic()
        append_bytes(log, b"o\nthr")
        await running.wait_until(
            lambda: spooled_text(spool) == "one\ntwo\n", 5, "the completed second line"
        )
        # "thr" has no newline: held until it has been idle for the partial-line linger.
        await running.wait_until(
            lambda: spooled_text(spool) == "one\ntwo\nthr", 5, "the idle partial line"
        )
        assert time.monotonic() - held_since >= 0.6
        append_bytes(log, b"ee\n")
        await running.wait_until(
            lambda: spooled_text(spool) == "one\ntwo\nthree\n", 5, "the rest of the line"
        )
    checkpoint = spool.checkpoints()[0]
    assert checkpoint.offset == log.stat().st_size
    spool.close()


async def test_ten_megabyte_line_is_split_on_character_boundaries(tmp_path: Path) -> None:
    # 3-byte and 4-byte characters, so a cut at a byte count lands inside one unless
    # the splitter looks for a boundary.
    unit = "ab€𝄞ç"
    line = (unit * (10 * 1024 * 1024 // len(unit.encode()) + 1)) + "\n"
    log = tmp_path / "huge.log"
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(log)], [], spool, chunk_max_bytes=512 * 1024)
    log.touch()
    async with RunningSources(sources) as running:
        data = line.encode()
        for start in range(0, len(data), 777_777):
            append_bytes(log, data[start : start + 777_777])
        await running.wait_until(lambda: running.quiet([log]), 30, "the huge line")
    chunks = spooled(spool)
    assert len(chunks) >= 20
    assert all(chunk.byte_len <= 512 * 1024 for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == line
    assert sources.counters().invalid_bytes_replaced == 0
    spool.close()


async def test_binary_junk_and_invalid_utf8_become_replacement_characters(tmp_path: Path) -> None:
    junk = bytes(range(256)) * 4 + b"\xff\xfe\n" + b"ok \xe2\x82\n" + b"\xc3\x28 end\n"
    log = tmp_path / "junk.log"
    log.write_bytes(junk)
    spool = open_spool(tmp_path / "data")
    seen: list[tuple[str, str]] = []
    sources = SourceSet(
        [str(log)], [], spool, chunk_max_bytes=300, on_chunk=lambda p, t: seen.append((p, t))
    )
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([log]), 10, "the junk")
    expected = junk.decode("utf-8", "replace")
    assert spooled_text(spool) == expected
    assert [(str(log), chunk.text) for chunk in spooled(spool)] == seen
    replaced = sources.counters().invalid_bytes_replaced
    assert replaced == expected.count("\ufffd") > 0
    # Checkpoints count raw bytes, not the (larger) UTF-8 size of the replaced text.
    assert spool.checkpoints()[0].offset == len(junk)
    spool.close()


async def test_restart_mid_stream_continues_exactly(tmp_path: Path) -> None:
    """Stop while a writer writes, start a new SourceSet on the same spool, three times:
    every line once, in order."""
    total = 150_000
    log = tmp_path / "app.log"
    log.touch()
    writer_done = False

    def write() -> None:
        nonlocal writer_done
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        for start in range(0, total, 50):
            append_all(fd, numbered_lines(range(start, start + 50)))
            time.sleep(0.0005)  # pace the writer (~2 s in all) so restarts land mid-stream
        os.close(fd)
        writer_done = True

    writer = WriterThread(write)
    writer.start()
    for round_number in range(4):
        spool = open_spool(tmp_path / "data")
        sources = SourceSet([str(log)], [], spool, linger=0.02)
        async with RunningSources(sources) as running:
            if round_number < 3:
                target = spool.stats().buffered_chunks + 2
                await running.wait_until(
                    functools.partial(has_chunks, spool, target), 20, "some chunks"
                )
                assert not writer_done, "the writer finished before the restart"
            else:
                await running.wait_until(lambda: writer_done, 30, "the writer")
                await running.wait_until(lambda: running.quiet([log]), 20, "every line")
        spool.close()
    writer.join_checked()
    spool = open_spool(tmp_path / "data")
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(total)])
    spool.close()


async def test_from_end_skips_existing_content_but_reads_new_files_whole(tmp_path: Path) -> None:
    old = tmp_path / "old.log"
    old.write_bytes(b"before start 1\nbefore start 2\n")
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(tmp_path / "*.log")], [], spool, from_end=True, linger=0.02)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: len(sources.followed()) == 1, 5, "old.log")
        append_bytes(old, b"after start\n")
        new = tmp_path / "new.log"
        new.write_bytes(b"a new file is read whole\n")
        await running.wait_until(lambda: running.quiet([old, new]), 5, "both files")
    by_path: dict[str, str] = {}
    for chunk in spooled(spool):
        assert chunk.source is not None
        by_path[chunk.source.path] = by_path.get(chunk.source.path, "") + chunk.text
    assert by_path == {str(old): "after start\n", str(new): "a new file is read whole\n"}
    spool.close()


async def test_files_appearing_later_are_picked_up_without_a_quiet_period(tmp_path: Path) -> None:
    """A glob over a directory that does not exist yet; files appear later; each line
    reaches the spool well before any 500 ms stability wait could have passed."""
    logs = tmp_path / "later"
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(logs / "*.log")], [], spool, linger=0.0, rescan_interval=0.2)
    async with RunningSources(sources) as running:
        await asyncio.sleep(0)  # let run() take its first scan
        logs.mkdir()
        (logs / "a.log").write_bytes(b"first\n")
        await running.wait_until(lambda: spooled_text(spool) == "first\n", 5, "a.log")
        await running.wait_until(lambda: running.quiet([logs / "a.log"]), 5, "quiet")
        latencies = []
        for number in range(5):
            started = time.monotonic()
            append_bytes(logs / "a.log", b"line %d\n" % number)
            expected = f"line {number}\n"
            await running.wait_until(
                functools.partial(spooled_ends_with, spool, expected), 5, "the line"
            )
            latencies.append(time.monotonic() - started)
        (logs / "b.log").write_bytes(b"second file\n")
        await running.wait_until(lambda: "second file\n" in spooled_text(spool), 5, "b.log")
    print(f"\nappend -> spool latency: max {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 0.4
    spool.close()
