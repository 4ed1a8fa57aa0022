"""The file sources of the main process: which files are followed, when they are read, and
how their chunks share the spool.

Owns: the rounds (when to rescan, read, sleep and wake: below), the public face of the
file sources (``SourceSet``: counters, backlog progress, ``paused_reason``, and
``notify_room`` / ``notify_delivery_room`` from the acknowledgement path), and the wiring
of its parts, one concern each:

- ``file_discovery``: expanding the ``PATH_OR_GLOB`` patterns (``source_patterns``) and
  one ``FileFollower`` per file identity (device and inode, so a rename keeps its
  follower), with its start position; ``link_policy``: which symbolic links may be
  followed (the ``follow_symlinks`` policy, below);
- ``directory_watch``: the watcher on the directories that can hold matches (on Linux an
  inotify descriptor read by the loop itself, ``inotify_watch``; elsewhere
  ``watchfiles.awatch``, FSEvents and ReadDirectoryChanges; polling with ``poll=True``);
- ``generation_recovery``: the *lineages* of followed logs (``rotation``: the generations
  of one log, read and committed oldest first; a truncated file's rest is read from its
  ``copytruncate`` copy; generations rotated while the client was down, or between two
  looks, are found among the log's siblings, compressed or not);
- ``lineage_reader``: reading and committing each round by ``rotation_policy`` (a file
  gone from every pattern is read to its end and closed once idle), and backpressure
  (reading pauses while the spool is full, ``line_source``), in worker threads
  (``read_workers``);
- ``backlog_queue``: older files uploaded once each, oldest first, and their progress;
- ``gone_file_state``: the spool's file state kept bounded;
- ``source_registry``: the open followers, their counters once closed, trouble reports.

Must not: send anything or know about the connection (``on_appended`` tells the owner
that chunks are waiting), publish status itself (the owner reads ``paused_reason``,
``progress()`` and ``counters()``), use the spool from another thread, or block the event
loop for long: reads are bounded per file per round, file reads and the spool's
fdatasyncs are awaited on worker threads, and every busy round ends by yielding.

Theory of operation
-------------------
Everything happens in *rounds* on the event loop thread (the spool's thread):

1. Rescan (``file_discovery``) if asked (a watcher event that is not "a followed file was modified") or due.
   Every match is ``stat``-ed: a known (dev, ino) keeps its follower (its path is
   updated after a rename); an unknown one gets a new follower, starting at its stored
   checkpoint when the checkpoint's fingerprints describe the file (``file_identity``),
   else at the position reached in a file it is a copy of, else at 0 (at its end with
   ``from_end``, for files found by the first scan only: files that appear later are new
   content and are read whole). A new file at a path whose lineage is being followed is
   that lineage's newest generation; generations missed since the previous one are
   looked for first. A follower whose file no longer matches becomes *detached*: it keeps
   its descriptor, reads the rest, and is closed once it has not grown for
   ``detached_idle_close`` seconds (its partial last line is emitted then). At start,
   every lineage the spool has checkpoints of is checked the same way for generations
   rotated while the client was down (``generation_recovery``).
2. (``lineage_reader``, to 4.) If chunks are waiting because the spool was full, commit them first; while it is
   still full, nothing is read (the files are the buffer) and ``paused_reason`` says why.
3. Each lineage is read oldest generation first, up to ``live_read_budget`` bytes per
   file, by the rule in ``rotation_policy`` (sizes taken newest first; a newer generation waits
   until the older ones are caught up and committed); a truncated file's previous
   content is finished from its copy before its new content is read. Then the active
   backlog file reads up to ``backlog_read_budget``. Live files come first in every
   round and the backlog gets a bounded slice, so a big backlog never delays a live line
   by more than one slice. A live file's complete lines are cut at once while
   ``delivery_room()`` says a chunk would be sent at once (nothing waits for an
   acknowledgement), else they wait up to the linger, grouping while the delivery is
   busy;
   ``notify_delivery_room()`` (an acknowledgement) wakes the loop to cut what waits.
4. Every chunk is appended with the checkpoint it advances (one transaction). If any
   chunk was appended, ``on_appended()`` is called once.
5. If some file still had bytes beyond its budget, the next round starts right after a
   yield; else the loop sleeps until a watcher event, the earliest chunker deadline
   (chunk linger, idle partial line), the next rescan, the close of an idle detached
   file, ``notify_room()``, ``notify_delivery_room()`` with lines waiting or, while
   paused, ``full_retry_interval``.

No quiet-period wait: an inotify event wakes the loop the moment the kernel has it (and
``watchfiles`` runs with ``debounce``/``step`` of a few milliseconds); an event only
wakes the loop, which reads whatever is there.

Symbolic links
--------------
Where the client can read more than whoever can write a log directory, a link swapped in
for a followed file (``app.log -> /etc/shadow``) would make it ship any file it can read.
So by default (``follow_symlinks="named"``) a followed file's last path component may be
a link only when the user named that path without a wildcard (a ``latest.log`` that
points at today's file) and it was a link the first time this run saw it there; such a
path is then followed through the link for the run, even as the link is re-pointed.
Every other link is refused: one a wildcard matches (in ``sources`` or ``backlog``), one
among a log's rotated siblings, and one swapped in during the run at a named path where a
regular file was first seen. A refused link is reported once (``on_trouble``: one
sentence) and its target is never opened: files are opened with ``O_NOFOLLOW`` (see
``file_follower.open_log_file``), so a link swapped in between a look and the open is
refused by the kernel too. ``"never"`` refuses every link; ``"always"`` follows them all
(for trees of links such as ``/var/log/containers``). The directories above the last
component are the pattern's own and are not checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import watchfiles

from main_process.sources.backlog_queue import BacklogProgress, BacklogQueue
from main_process.sources.directory_watch import Changes, DirectoryWatcher
from main_process.sources.file_discovery import FileDiscovery
from main_process.sources.file_follower import ChunkerOptions, SymlinkPolicy
from main_process.sources.generation_recovery import GenerationRecovery
from main_process.sources.gone_file_state import GoneFileState
from main_process.sources.line_chunker import (
    DEFAULT_LINGER,
    DEFAULT_MAX_CHUNK_BYTES,
    DEFAULT_PARTIAL_LINE_LINGER,
)
from main_process.sources.lineage_reader import LineageReader
from main_process.sources.link_policy import LinkPolicy
from main_process.sources.read_workers import ReadWorkers
from main_process.sources.source_patterns import ChunkerOptionsByPattern, pattern_of
from main_process.sources.source_registry import FollowerRegistry, TroubleLog
from main_process.spool.chunks import ForgottenState, Spool

__all__ = ["BacklogProgress", "FollowedFile", "SourceCounters", "SourceSet"]

logger = logging.getLogger(__name__)

_YIELDS_BETWEEN_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class SourceCounters:
    """Totals since this ``SourceSet`` started."""

    bytes_read: int
    """Raw bytes read from files."""
    bytes_appended: int
    """UTF-8 bytes of chunk text appended to the spool."""
    chunks_appended: int
    invalid_bytes_replaced: int
    """Invalid UTF-8 sequences replaced by U+FFFD."""
    troubles: int
    """Warnings reported through ``on_trouble``."""
    truncations: int
    files_followed: int
    """Files open now (live, detached and the active backlog file)."""


@dataclass(frozen=True, slots=True)
class FollowedFile:
    """One open file, for status views and tests."""

    path: str
    key: str
    role: str
    read_offset: int
    committed_offset: int


def _ignore_appended() -> None:
    pass


def _ignore_message(message: str) -> None:
    pass


def _ignore_pause(reason: str | None) -> None:
    pass


def _no_delivery_room() -> bool:
    return False


def _ignore_chunk(path: str, text: str) -> None:
    pass


class SourceSet:
    """Follows the files of ``patterns`` and uploads those of ``backlog_patterns`` once.

    Callbacks (all called on the loop thread, from inside a round, so keep them short):
    ``on_appended()`` once per round that appended chunks (wire it to the connection's
    flush); ``on_chunk(path, text)`` for every chunk appended (for recent-line views);
    ``on_trouble(sentence)`` once per new warning about a path; ``on_pause_changed(reason
    or None)`` when reading pauses for a full spool or resumes.

    Use from the event loop thread that owns ``spool``::

        sources = SourceSet(settings.sources, settings.backlog, spool,
                            on_appended=connection.flush, on_trouble=status.warn)
        task = asyncio.create_task(sources.run())
        ...  # after acknowledgements free spool room:
        sources.notify_room()
        ...
        sources.stop(); await task
    """

    def __init__(
        self,
        patterns: Sequence[str],
        backlog_patterns: Sequence[str],
        spool: Spool,
        *,
        on_appended: Callable[[], None] = _ignore_appended,
        on_trouble: Callable[[str], None] = _ignore_message,
        on_pause_changed: Callable[[str | None], None] = _ignore_pause,
        on_chunk: Callable[[str, str], None] = _ignore_chunk,
        delivery_room: Callable[[], bool] = _no_delivery_room,
        poll: bool = False,
        from_end: bool = False,
        chunk_max_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        linger: float = DEFAULT_LINGER,
        partial_line_linger: float = DEFAULT_PARTIAL_LINE_LINGER,
        # Each round's commit holds the event loop (about 3 ms a MiB): the delivery, which
        # shares the loop, waits at most that long for it.
        live_read_budget: int = 1024 * 1024,
        backlog_read_budget: int = 512 * 1024,
        rescan_interval: float = 1.0,
        quiet_rescan_interval: float | None = None,
        detached_idle_close: float = 5.0,
        full_retry_interval: float = 0.5,
        follow_symlinks: SymlinkPolicy = "named",
        forget_after: float = 30 * 86_400,
        rotation_dirs: Mapping[str, Sequence[str]] | None = None,
        read_stall_after: float = 5.0,
        encoding: str = "utf-8",
        encodings: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._patterns = tuple(patterns)
        self._spool = spool
        self._on_appended = on_appended
        self._rescan_interval = rescan_interval
        self._quiet_rescan_interval = (
            rescan_interval if quiet_rescan_interval is None else quiet_rescan_interval
        )
        self._clock = clock
        options = ChunkerOptionsByPattern(
            ChunkerOptions(chunk_max_bytes, linger, partial_line_linger),
            encoding,
            encodings or {},
        )
        self._rotation_dirs = {
            os.path.abspath(path): tuple(os.path.abspath(g) for g in globs)
            for path, globs in (rotation_dirs or {}).items()
        }
        self._troubles = TroubleLog(on_trouble)
        self._registry = FollowerRegistry()
        links = LinkPolicy(follow_symlinks, self._troubles)
        self._reads = ReadWorkers(self._troubles, read_stall_after)
        self._watcher = DirectoryWatcher(
            poll=poll,
            on_changes=self._on_changes,
            on_lost=self._on_watch_lost,
            troubles=self._troubles,
            rescan_interval=rescan_interval,
        )
        self._recovery = GenerationRecovery(
            spool,
            self._registry,
            self._troubles,
            links,
            rotation_dirs=self._rotation_dirs,
            options_for=lambda lineage: options.for_path(lineage, self._patterns),
        )
        self._discovery = FileDiscovery(
            self._patterns,
            backlog_patterns,
            spool,
            self._registry,
            self._recovery,
            links,
            self._troubles,
            options=options,
            from_end=from_end,
        )
        self._backlog = BacklogQueue(backlog_patterns, spool, self._registry, links, self._troubles)
        self._reader = LineageReader(
            spool,
            self._registry,
            self._reads,
            self._recovery,
            self._backlog,
            self._troubles,
            live_budget=live_read_budget,
            backlog_budget=backlog_read_budget,
            detached_idle_close=detached_idle_close,
            full_retry_interval=full_retry_interval,
            marks_read_generations=bool(backlog_patterns),
            delivery_room=delivery_room,
            on_chunk=on_chunk,
            on_pause_changed=on_pause_changed,
            start_backlog_file=self._discovery.start_backlog_file,
        )
        self._gone = GoneFileState(
            spool,
            self._registry,
            forget_after=forget_after,
            rotation_dirs=self._rotation_dirs,
            watched_dirs=lambda: self._watcher.watched_dirs,
            backlog_seen=lambda: self._backlog.seen,
        )
        self._initial_scan_done = False
        self._stopping = False
        self._running = False
        self._wake: asyncio.Event | None = None
        self._rescan_requested = False
        self._next_rescan_at = 0.0

    # -------------------------------------------------------------------- public API

    @property
    def initial_scan_done(self) -> bool:
        """Whether ``run`` has looked at every pattern and backlog file once (before that,
        ``progress()`` and ``followed()`` are empty)."""
        return self._initial_scan_done

    @property
    def paused_reason(self) -> str | None:
        """Why reading is paused (one sentence), or None while reading."""
        return self._reader.paused_reason

    @property
    def spool(self) -> Spool:
        """The spool the chunks go to."""
        return self._spool

    @property
    def last_trouble(self) -> str | None:
        """The latest warning sentence (also passed to ``on_trouble``)."""
        return self._troubles.last

    def progress(self) -> BacklogProgress:
        return self._backlog.progress()

    def counters(self) -> SourceCounters:
        registry, reader = self._registry, self._reader
        followers = registry.open_followers()
        return SourceCounters(
            bytes_read=registry.closed_bytes_read + sum(f.bytes_read for f in followers),
            bytes_appended=reader.bytes_appended,
            chunks_appended=reader.chunks_appended,
            invalid_bytes_replaced=registry.closed_invalid
            + sum(f.invalid_bytes_replaced for f in followers),
            troubles=self._troubles.count,
            truncations=registry.closed_truncations + sum(f.truncations for f in followers),
            files_followed=len(followers),
        )

    def followed(self) -> tuple[FollowedFile, ...]:
        return tuple(
            FollowedFile(f.path, f.key_text, f.role.value, f.read_offset, f.committed_offset)
            for f in self._registry.open_followers()
        )

    def state_counts(self) -> ForgottenState:
        """The spool's file state as of the last look (checkpoints, backlog marks, and
        how many were forgotten then)."""
        return self._gone.counts

    def notify_room(self) -> None:
        """Call (on the loop thread) after acknowledgements freed spool room."""
        if self._reader.paused_reason is not None and self._wake is not None:
            self._wake.set()

    def notify_delivery_room(self) -> None:
        """Call (on the loop thread) when the delivery window may have room again (an
        acknowledgement, a connection made): lines held for want of it go out now."""
        if self._wake is None or self._wake.is_set():
            return
        if any(follower.holds_lines for follower in self._registry.by_key.values()):
            self._wake.set()

    def stop(self) -> None:
        """Ask ``run`` to return. Chunks held in memory are dropped: they are after the
        last checkpoint, so the next start reads them again."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Follow until ``stop()``; closes every file on the way out."""
        if self._running:
            raise RuntimeError("SourceSet.run is already running")
        self._running = True
        self._wake = asyncio.Event()
        self._reads.start(self._wake)
        try:
            now = self._clock()
            self._rescan(now, initial=True)
            self._recovery.recover_rotated_while_down(now, self._covered)
            self._backlog.scan()
            self._gone.look(now)
            self._initial_scan_done = True
            while not self._stopping:
                more = await self._round()
                if self._stopping:
                    break
                if more:
                    # More to read at once: let the rest of the loop go first. Each yield
                    # runs what is ready; an acknowledgement's way to the next send is a
                    # chain of about four steps (socket, Socket.IO handler, the
                    # connection's driver, the write loop), and with one yield per round
                    # a burst being read held the delivery to 5-15 MB/s until it was all
                    # in the spool.
                    for _ in range(_YIELDS_BETWEEN_ROUNDS):
                        await asyncio.sleep(0)
                    continue
                if not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._next_wake_delay())
                self._wake.clear()
        finally:
            await self._watcher.stop()
            for follower in self._registry.open_followers():
                if self._reads.busy(follower.key):
                    # Still inside a read that has not returned: closing its descriptor
                    # could hand the number to another file under that read. It is the
                    # process's end anyway.
                    continue
                self._registry.forget(follower)
            self._reads.shutdown()
            self._registry.clear()
            self._running = False

    # ------------------------------------------------------------------------ rounds

    async def _round(self) -> bool:
        """One pass over every file; True when some file has more bytes right now."""
        now = self._clock()
        if self._rescan_requested or now >= self._next_rescan_at:
            self._rescan(now)
        if now >= self._gone.next_look_at:
            self._gone.look(now)
        appended_before = self._reader.chunks_appended
        more = await self._reader.read_round(now)
        if self._reader.chunks_appended != appended_before:
            self._on_appended()
        return more

    def _next_wake_delay(self) -> float:
        now = self._clock()
        return max(0.0, self._reader.next_deadline(now, self._next_rescan_at) - now)

    def _rescan(self, now: float, *, initial: bool = False) -> None:
        self._rescan_requested = False
        # The safety net matters where events can be missing (a network file system, a
        # directory that does not exist yet, watchfiles' polling); where inotify sees
        # every change it only has to catch what should never happen.
        sees_all = self._watcher.sees_all
        interval = self._quiet_rescan_interval if sees_all else self._rescan_interval
        self._next_rescan_at = now + interval
        watch_dirs = self._discovery.rescan(now, initial=initial)
        if self._watcher.update(watch_dirs):
            # Events between the scan and the watcher's start would be lost: look again soon.
            self._rescan_requested = True

    def _covered(self, path: str) -> bool:
        """Whether ``path`` is matched by a source pattern (or was, if it is gone now)."""
        return pattern_of(path, self._patterns) is not None

    # ----------------------------------------------------------------------- watching

    def _on_changes(self, changes: Changes) -> None:
        followed = {f.path for f in self._registry.by_key.values()}
        for change, path in changes:
            if change is not watchfiles.Change.modified or path not in followed:
                self._rescan_requested = True
                break
        if self._wake is not None:
            self._wake.set()

    def _on_watch_lost(self) -> None:
        """A watched directory went away, or the kernel dropped events: rescan, and
        watch whatever directories there are then."""
        self._rescan_requested = True
        if self._wake is not None:
            self._wake.set()
