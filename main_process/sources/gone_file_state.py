"""Keeping the spool's file state bounded: the checkpoints and backlog marks of files
gone for good are forgotten (``Spool.forget_missing``).

Owns: when to look (once at start, then every ``forget_after / 2`` but at least once a
day), which files are present (every open follower, and every entry of the directories
that can hold a log's generations: the checkpoints' directories, the watched ones and the
``rotation_dirs``), and the counts of the last look.

Must not: forget a checkpoint of a file that is still there, or a backlog mark of a file
this run's backlog scan saw (``BacklogQueue.seen``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from main_process.sources.file_identity import FileKey
from main_process.sources.source_registry import FollowerRegistry
from main_process.spool.chunks import ForgottenState, Spool

logger = logging.getLogger("main_process.sources")

# How often gone files' state is looked for (at most; less when it is kept less long).
_FORGET_LOOK_INTERVAL = 86_400.0


class GoneFileState:
    """Forgets the state of files gone for ``forget_after`` seconds; see the module
    docstring."""

    def __init__(
        self,
        spool: Spool,
        registry: FollowerRegistry,
        *,
        forget_after: float,
        rotation_dirs: Mapping[str, Sequence[str]],
        watched_dirs: Callable[[], Iterable[str]],
        backlog_seen: Callable[[], Iterable[bytes]],
    ) -> None:
        self._spool = spool
        self._registry = registry
        self._forget_after = forget_after
        self._rotation_dirs = rotation_dirs
        self._watched_dirs = watched_dirs
        self._backlog_seen = backlog_seen
        self.next_look_at = 0.0
        self.counts = ForgottenState(0, 0, 0, 0)
        """The spool's file state as of the last look."""

    def look(self, now: float) -> None:
        self.next_look_at = now + min(self._forget_after / 2, _FORGET_LOOK_INTERVAL)
        present = {f.key_text for f in self._registry.open_followers()}
        directories = {os.path.dirname(c.path) for c in self._spool.checkpoints()}
        directories.update(self._watched_dirs())
        for globs in self._rotation_dirs.values():
            directories.update(os.path.dirname(g) for g in globs)
        for directory in directories:
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        with contextlib.suppress(OSError):
                            present.add(str(FileKey.of(entry.stat(follow_symlinks=False))))
            except OSError:
                continue
        marks = set(self._backlog_seen())
        self.counts = self._spool.forget_missing(present, marks, self._forget_after)
        if self.counts.checkpoints_forgotten or self.counts.backlog_forgotten:
            logger.info(
                "forgot %d checkpoints and %d backlog marks of files gone for %g days",
                self.counts.checkpoints_forgotten,
                self.counts.backlog_forgotten,
                self._forget_after / 86_400,
            )
