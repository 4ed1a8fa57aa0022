"""The inotify watcher: changes reach the loop the moment the kernel has them, and a lost
directory or an overflow is reported so that the owner rescans.

Real inotify on real directories (Linux only, like the watcher itself)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest
import watchfiles

from main_process.sources import inotify_watch
from main_process.sources.inotify_watch import Changes, InotifyWatcher
from main_process.sources.source_set import SourceSet
from tests.support.sources_helpers import RunningSources, append_bytes, open_spool, spooled_text

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


class Seen:
    def __init__(self) -> None:
        self.changes: Changes = set()
        self.lost = 0
        self.event = asyncio.Event()

    def on_changes(self, changes: Changes) -> None:
        self.changes |= changes
        self.event.set()

    def on_lost(self) -> None:
        self.lost += 1
        self.event.set()

    async def wait_for(self, predicate: object, what: str, timeout: float = 5.0) -> None:
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what}; saw {self.changes}")
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), remaining)
            except TimeoutError:
                continue


def test_inotify_is_available_on_linux() -> None:
    assert inotify_watch.available()


async def test_appends_creations_renames_and_deletions_are_reported(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    seen = Seen()
    watcher = InotifyWatcher([str(tmp_path)], seen.on_changes, seen.on_lost)
    try:
        started = time.monotonic()
        append_bytes(log, b"a line\n")
        await seen.wait_for(
            lambda: (watchfiles.Change.modified, str(log)) in seen.changes, "the append"
        )
        # No step to wait for: well under watchfiles' 10-20 ms, even on a busy machine.
        assert time.monotonic() - started < 1.0
        (tmp_path / "new.log").write_bytes(b"x\n")
        os.rename(log, tmp_path / "app.log.1")
        (tmp_path / "new.log").unlink()
        await seen.wait_for(
            lambda: (
                {
                    (watchfiles.Change.added, str(tmp_path / "new.log")),
                    (watchfiles.Change.deleted, str(log)),
                    (watchfiles.Change.added, str(tmp_path / "app.log.1")),
                    (watchfiles.Change.deleted, str(tmp_path / "new.log")),
                }
                <= seen.changes
            ),
            "the creation, the rename and the deletion",
        )
        assert seen.lost == 0
    finally:
        watcher.close()
        watcher.close()  # idempotent


async def test_a_watched_directory_removed_is_reported_lost(tmp_path: Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    seen = Seen()
    watcher = InotifyWatcher([str(directory)], seen.on_changes, seen.on_lost)
    try:
        directory.rmdir()
        await seen.wait_for(lambda: seen.lost > 0, "the directory reported lost")
    finally:
        watcher.close()


async def test_a_missing_directory_is_refused_at_once(tmp_path: Path) -> None:
    seen = Seen()
    with pytest.raises(FileNotFoundError):
        InotifyWatcher([str(tmp_path / "absent")], seen.on_changes, seen.on_lost)


def test_a_local_file_system_is_seen_whole_and_a_missing_directory_is_not(
    tmp_path: Path,
) -> None:
    # The test directories are on the machine's own disk or a tmpfs.
    assert inotify_watch.sees_every_change([str(tmp_path)])
    assert not inotify_watch.sees_every_change([str(tmp_path), str(tmp_path / "absent")])


async def test_the_quiet_rescan_waits_only_while_inotify_sees_every_directory(
    tmp_path: Path,
) -> None:
    # A pattern whose directory does not exist yet has no watch: its files can only be
    # found by the rescan, so the short interval holds there, not the quiet one.
    later = tmp_path / "later"
    spool = open_spool(tmp_path / "spool")
    sources = SourceSet(
        [str(tmp_path / "*.log"), str(later / "*.log")],
        [],
        spool,
        linger=0.0,
        rescan_interval=0.1,
        quiet_rescan_interval=600.0,
    )
    async with RunningSources(sources) as running:
        later.mkdir()
        (later / "new.log").write_bytes(b"found by the rescan\n")
        await running.wait_until(
            lambda: "found by the rescan\n" in spooled_text(spool), 10, "the new directory's file"
        )
        # Now every directory is watched on a local file system: a new file is found by
        # its event, with the next rescan ten minutes away.
        (tmp_path / "app.log").write_bytes(b"found by its event\n")
        await running.wait_until(
            lambda: "found by its event\n" in spooled_text(spool), 10, "the event's file"
        )
