"""Watching the directories that can hold the file sources' matches.

Owns: one watcher on the current set of directories, replaced whenever the set changes:
on Linux an inotify descriptor read by the loop itself (``inotify_watch``), elsewhere
``watchfiles.awatch`` (FSEvents, ReadDirectoryChanges), and ``watchfiles``' polling with
``poll=True`` or when inotify refuses (out of watches); whether the watcher sees every
change that can matter (``sees_all``: then the sources' safety-net rescan can be rare).

Must not: decide what a change means (``SourceSet`` does: ``on_changes`` gets every batch
of ``(watchfiles.Change, path)``), or block the loop.

Theory: a new watcher misses what happens between the scan that chose its directories
and its start, so ``update`` answers True then, and the caller looks again at once. A
watched directory that goes away, or events the kernel dropped, call ``on_lost``: the
caller rescans, and the next ``update`` watches whatever directories exist then.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import watchfiles

from main_process.sources import inotify_watch
from main_process.sources.source_registry import TroubleLog

logger = logging.getLogger("main_process.sources")

# The watcher thread sleeps ``step`` ms between looks and returns a batch once it stops
# growing (or after ``debounce`` ms): an event reaches the loop within ~2 steps.
_WATCH_STEP_MS = 10
_WATCH_DEBOUNCE_MS = 20
_POLL_DELAY_MS = 100

Changes = set[tuple[watchfiles.Change, str]]


class DirectoryWatcher:
    """Watches a set of directories (not recursively); see the module docstring."""

    def __init__(
        self,
        *,
        poll: bool,
        on_changes: Callable[[Changes], None],
        on_lost: Callable[[], None],
        troubles: TroubleLog,
        rescan_interval: float,
    ) -> None:
        self._poll = poll
        self._on_changes = on_changes
        self._on_lost = on_lost
        self._troubles = troubles
        self._rescan_interval = rescan_interval
        self._watched_dirs: frozenset[str] | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inotify: inotify_watch.InotifyWatcher | None = None
        self.sees_all = False
        """Whether inotify watches every directory that can hold matches, on local file
        systems, so that it sees every change that can matter."""

    @property
    def watched_dirs(self) -> frozenset[str]:
        return self._watched_dirs or frozenset()

    def update(self, directories: set[str]) -> bool:
        """Watch the existing ones of ``directories``; True when a new watcher started
        (the caller should look again: events before its start are lost)."""
        existing = frozenset(d for d in directories if os.path.isdir(d))
        if existing == self._watched_dirs:
            return False
        if self._stop is not None:
            self._stop.set()
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self.sees_all = False
        self._watched_dirs = existing
        self._tasks = [task for task in self._tasks if not task.done()]
        if not existing:
            self._stop = None
            return False
        if not self._poll and inotify_watch.available():
            try:
                self._inotify = inotify_watch.InotifyWatcher(
                    sorted(existing), self._on_changes, self._lost
                )
                self.sees_all = len(existing) == len(directories) and (
                    inotify_watch.sees_every_change(existing)
                )
                return True
            except OSError as exc:
                # Out of watches (fs.inotify.max_user_watches) or a directory gone since
                # the scan: watchfiles' own inotify (or its polling) may still do.
                logger.info("inotify refused (%s); watching with watchfiles", exc)
        self._stop = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._watch(existing, self._stop)))
        return True

    def _lost(self) -> None:
        self._watched_dirs = None
        self.sees_all = False
        self._on_lost()

    async def _watch(self, directories: frozenset[str], stop_event: asyncio.Event) -> None:
        try:
            async for changes in watchfiles.awatch(
                *sorted(directories),
                watch_filter=None,
                debounce=_WATCH_DEBOUNCE_MS,
                step=_WATCH_STEP_MS,
                stop_event=stop_event,
                force_polling=self._poll,
                poll_delay_ms=_POLL_DELAY_MS,
                recursive=False,
                ignore_permission_denied=True,
            ):
                self._on_changes(changes)
        except Exception as exc:
            if stop_event.is_set():
                return
            self._troubles.report(
                "watcher",
                f"Watching {', '.join(sorted(directories))} failed ({exc}); "
                f"changes are picked up by rescanning every {self._rescan_interval:g} s.",
            )
            # A later rescan starts a new watcher.
            self._watched_dirs = None

    async def stop(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        if self._stop is not None:
            self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        self._tasks = []
        self._watched_dirs = None
