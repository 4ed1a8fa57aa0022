"""Recursive globs (``**``) for sources and backlog: files at any depth, including in
directories created after the client started, each followed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import (
    RunningSources,
    append_bytes,
    assert_exactly_once_in_order,
    line_numbers,
    numbered_lines,
    open_spool,
    spooled,
    upload_backlog,
)


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "poll"])
async def test_a_recursive_glob_follows_files_at_any_depth_and_in_new_directories(
    tmp_path: Path, poll: bool
) -> None:
    root = tmp_path / "logs"
    (root / "a").mkdir(parents=True)
    top = root / "top.log"
    top.write_bytes(numbered_lines(range(0, 10)))
    nested = root / "a" / "nested.log"
    nested.write_bytes(numbered_lines(range(10, 20)))
    (root / "a" / "ignored.txt").write_text("not a log\n")
    spool = open_spool(tmp_path / "data")
    sources = SourceSet([str(root / "**" / "*.log")], [], spool, poll=poll)
    async with RunningSources(sources) as running:
        await running.wait_until(lambda: running.quiet([top, nested], 20), 10, "existing files")
        # Created while following, two levels down, in directories that did not exist.
        deep = root / "b" / "c" / "deep.log"
        deep.parent.mkdir(parents=True)
        deep.write_bytes(numbered_lines(range(20, 30)))
        await running.wait_until(lambda: running.quiet([top, nested, deep], 30), 10, "deep.log")
        append_bytes(nested, numbered_lines(range(30, 40)))
        await running.wait_until(lambda: running.quiet([nested], 40), 10, "more of nested.log")
    spool.close()
    numbers = line_numbers(spooled(open_spool(tmp_path / "data")))
    assert_exactly_once_in_order(
        numbers, [range(0, 10), range(10, 20), range(20, 30), range(30, 40)]
    )


async def test_a_recursive_backlog_glob_uploads_files_at_any_depth(tmp_path: Path) -> None:
    root = tmp_path / "old"
    (root / "2025" / "12").mkdir(parents=True)
    (root / "2026" / "01").mkdir(parents=True)
    (root / "2025" / "12" / "a.log").write_bytes(numbered_lines(range(0, 50)))
    (root / "2026" / "01" / "b.log").write_bytes(numbered_lines(range(50, 100)))
    spool = open_spool(tmp_path / "data")
    progress = await upload_backlog(spool, [str(root / "**" / "*.log")])
    assert progress.files_done == progress.files_total == 2
    assert_exactly_once_in_order(line_numbers(spooled(spool)), [range(0, 50), range(50, 100)])
    spool.close()
