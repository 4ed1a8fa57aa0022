"""Backlog: older files uploaded once each (by content, across restarts and renames),
oldest first, sharing the spool with live files without starving them; and backpressure
when the spool is full."""

from __future__ import annotations

import os
from pathlib import Path

from main_process.sources.source_set import BacklogProgress, SourceSet
from main_process.spool.chunks import Spool
from tests.support.sources_helpers import (
    RunningSources,
    assert_exactly_once_in_order,
    numbered_lines,
    open_spool,
    spooled,
    upload_backlog,
)


def make_backlog(directory: Path, files: int, lines: int) -> list[Path]:
    """Files with the same banner (so only full content keys tell them apart), mtimes
    in the reverse of their name order."""
    directory.mkdir(parents=True)
    paths = []
    for index in range(files):
        path = directory / f"game-{index}.log"
        banner = b"".join(
            b"Game engine 4.2 starting up, loading assets %03d\n" % i for i in range(30)
        )
        path.write_bytes(banner + numbered_lines(range(index * lines, (index + 1) * lines)))
        os.utime(path, (1_000_000 - index * 100, 1_000_000 - index * 100))
        paths.append(path)
    return paths


def source_order(spool: Spool) -> list[str]:
    order: list[str] = []
    for chunk in spooled(spool):
        assert chunk.source is not None
        name = Path(chunk.source.path).name
        if not order or order[-1] != name:
            order.append(name)
    return order


async def test_backlog_uploaded_once_across_restarts_and_renames(tmp_path: Path) -> None:
    backlog = tmp_path / "backups"
    paths = make_backlog(backlog, files=4, lines=2000)
    total_bytes = sum(p.stat().st_size for p in paths)
    spool = open_spool(tmp_path / "data", max_bytes=1024 * 1024 * 1024)

    first = await upload_backlog(spool, [str(backlog)])
    assert first == BacklogProgress(4, 4, total_bytes, total_bytes)
    # Oldest (mtime) first: game-3 is the oldest.
    assert source_order(spool) == ["game-3.log", "game-2.log", "game-1.log", "game-0.log"]
    text_after_first = "".join(chunk.text for chunk in spooled(spool))
    assert text_after_first == "".join(p.read_text() for p in reversed(paths))

    # Renamed, and copied to a new inode: remembered by content, not by name or inode.
    paths[0].rename(backlog / "renamed.log")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "copy.log").write_bytes(paths[1].read_bytes())
    patterns = [str(backlog / "*.log"), str(moved)]
    for _restart in range(2):
        again = await upload_backlog(spool, patterns)
        copy_size = paths[1].stat().st_size
        assert again == BacklogProgress(5, 5, total_bytes + copy_size, total_bytes + copy_size)
        assert "".join(chunk.text for chunk in spooled(spool)) == text_after_first
    spool.close()


async def test_backlog_interrupted_resumes_where_it_stopped(tmp_path: Path) -> None:
    backlog = tmp_path / "backups"
    make_backlog(backlog, files=3, lines=20_000)
    spool = open_spool(tmp_path / "data", max_bytes=1024 * 1024 * 1024)

    stopped_at: list[BacklogProgress] = []

    def stop_in_the_middle() -> None:
        if not stopped_at and sources.progress().bytes_done > 800_000:
            stopped_at.append(sources.progress())
            sources.stop()

    sources = SourceSet(
        [], [str(backlog)], spool, on_appended=stop_in_the_middle, chunk_max_bytes=64 * 1024
    )
    await sources.run()
    progress = stopped_at[0]
    assert progress.files_done == 1, progress  # stopped inside the second file
    assert 800_000 < progress.bytes_done < progress.bytes_total
    await upload_backlog(spool, [str(backlog)])
    assert_exactly_once_in_order(
        line_numbers_of_backlog(spool),
        [range(40_000, 60_000), range(20_000, 40_000), range(20_000)],
    )
    spool.close()


def line_numbers_of_backlog(spool: Spool) -> list[int]:
    numbers: list[int] = []
    for chunk in spooled(spool):
        numbers.extend(int(line[:8]) for line in chunk.text.splitlines() if line[:8].isdigit())
    return numbers


async def test_live_lines_are_not_starved_by_a_big_backlog(tmp_path: Path) -> None:
    """Live files are read first in every round and the backlog gets a bounded slice: a
    live file's content is spooled before the backlog's third chunk."""
    backlog = tmp_path / "backups"
    make_backlog(backlog, files=2, lines=200_000)
    live = tmp_path / "live.log"
    live.write_bytes(numbered_lines(range(10_000_000, 10_020_000)))
    spool = open_spool(tmp_path / "data", max_bytes=1024 * 1024 * 1024)
    # No linger: the live file's last, short chunk goes at once (this is about scheduling).
    sources = SourceSet([str(live)], [str(backlog)], spool, linger=0.0)
    async with RunningSources(sources) as running:

        def all_done() -> bool:
            progress = sources.progress()
            return (
                sources.initial_scan_done
                and progress.files_done == progress.files_total
                and running.quiet([live])
            )

        await running.wait_until(all_done, 20, "the live file and the backlog")
    chunks = spooled(spool)
    live_seqs = [c.seq for c in chunks if c.source is not None and c.source.path == str(live)]
    backlog_seqs = [c.seq for c in chunks if c.source is not None and c.source.path != str(live)]
    assert len(backlog_seqs) > 10
    assert max(live_seqs) < sorted(backlog_seqs)[2]
    spool.close()


async def test_backpressure_pauses_reading_and_resumes_after_acks(tmp_path: Path) -> None:
    total = 20_000
    log = tmp_path / "app.log"
    log.write_bytes(numbered_lines(range(total)))
    spool = open_spool(tmp_path / "data", max_bytes=64 * 1024)
    pauses: list[str | None] = []
    sources = SourceSet(
        [str(log)],
        [],
        spool,
        chunk_max_bytes=16 * 1024,
        on_pause_changed=pauses.append,
        full_retry_interval=30.0,  # resume must come from notify_room, not the timer
    )
    acknowledged: list[str] = []
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: sources.paused_reason is not None, 10, "a pause")
        reason = sources.paused_reason
        assert reason is not None
        assert "spool is full" in reason
        assert spool.stats().full
        assert spool.stats().buffered_bytes <= 64 * 1024

        def drained() -> bool:
            for chunk in spool.pending(limit=1000):
                acknowledged.append(chunk.text)
                spool.acknowledge(chunk.seq)
            sources.notify_room()
            return running.quiet([log]) and not spool.pending(limit=1)

        await running.wait_until(drained, 20, "everything, acknowledged as it comes")
    assert sources.paused_reason is None
    assert len(pauses) >= 2
    assert pauses[0] is not None
    assert pauses[-1] is None
    assert_exactly_once_in_order(
        [int(line[:8]) for line in "".join(acknowledged).splitlines()], [range(total)]
    )
    spool.close()
