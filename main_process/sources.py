"""The file sources of the main process: which files are followed, when they are read, and
how their chunks share the spool.

Owns: expanding the ``PATH_OR_GLOB`` patterns (at start, whenever a watched directory
reports a new or vanished entry, and every ``rescan_interval`` as a safety net, or every
``quiet_rescan_interval`` while inotify watches every directory that can hold matches on a
local file system, where it sees every change), one
``FileFollower`` per file identity (device and inode, so a rename keeps its follower),
the directory watcher (on the directories that can hold matches: on Linux an inotify
descriptor read by the loop itself, ``inotify_watch``; elsewhere ``watchfiles.awatch``,
FSEvents and ReadDirectoryChanges; polling with ``poll=True``), the *lineages* of followed logs
(``rotation``: the generations of one log, read and committed oldest first; a file gone
from every pattern is read to its end and closed once idle; a truncated file's rest is
read from its ``copytruncate`` copy; generations rotated while the client was down, or
between two looks, are found among the log's siblings, compressed or not), the backlog
queue (older files uploaded once each, oldest first), backpressure (reading pauses while
the spool is full), trouble reports, counters and backlog progress, and which symbolic
links may be followed (the ``follow_symlinks`` policy, below).

Must not: send anything or know about the connection (``on_appended`` tells the owner
that chunks are waiting), publish status itself (the owner reads ``paused_reason``,
``progress()`` and ``counters()``), use the spool from another thread, or block the event
loop for long: reads are bounded per file per round and every busy round ends by yielding.

Theory of operation
-------------------
Everything happens in *rounds* on the event loop thread (the spool's thread):

1. Rescan if asked (a watcher event that is not "a followed file was modified") or due.
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
   rotated while the client was down.
2. If chunks are waiting because the spool was full, commit them first; while it is
   still full, nothing is read (the files are the buffer) and ``paused_reason`` says why.
3. Each lineage is read oldest generation first, up to ``live_read_budget`` bytes per
   file, by the rule in ``rotation`` (sizes taken newest first; a newer generation waits
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
import dataclasses
import fnmatch
import functools
import glob
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import watchfiles

from main_process import inotify_watch
from main_process.file_follower import (
    ChunkerOptions,
    CommitTotals,
    FileFollower,
    FileTrouble,
    FollowerRole,
    ReadPosition,
    SymlinkPolicy,
    Truncation,
    open_log_file,
    symlink_refused,
)
from main_process.file_identity import (
    Anchor,
    CheckpointFingerprint,
    FileKey,
    HeadFingerprint,
    backlog_content_key,
    compressed_identity,
    describes,
    read_before,
    read_head,
)
from main_process.line_chunker import (
    DEFAULT_LINGER,
    DEFAULT_MAX_CHUNK_BYTES,
    DEFAULT_PARTIAL_LINE_LINGER,
)
from main_process.rotation import (
    NOTHING_LEFT,
    Candidate,
    GenerationIncomplete,
    KnownPosition,
    OpenedGeneration,
    compression_of,
    find_candidates,
    known_offset,
    may_be_known,
    open_generation,
    plan_recovery,
    read_compressed_head,
)
from main_process.spool import BacklogFile, Checkpoint, ForgottenState, Spool, SpoolFull
from main_process.text_codecs import FileEncoding
from main_process.text_codecs import normalize as normalize_encoding

logger = logging.getLogger(__name__)

# The watcher thread sleeps ``step`` ms between looks and returns a batch once it stops
# growing (or after ``debounce`` ms): an event reaches the loop within ~2 steps.
_WATCH_STEP_MS = 10
_WATCH_DEBOUNCE_MS = 20
_POLL_DELAY_MS = 100
_RECENT_TRUNCATIONS = 16
# Reads run in worker threads; the loop waits this long for one before going on without
# it (a healthy disk answers in microseconds), and several can hang at once.
_READ_WAIT = 0.02
_READ_WORKERS = 8
# How often gone files' state is looked for (at most; less when it is kept less long).
_FORGET_LOOK_INTERVAL = 86_400.0
# A lineage with a generation still being compressed is looked at again this often, and
# given up on (the file is skipped, and said so) after this long.
_HOLD_RETRY = 0.05
_HOLD_LIMIT = 60.0


@dataclass(frozen=True, slots=True)
class BacklogProgress:
    """Backlog upload progress; totals include files found already uploaded."""

    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0


@dataclass(frozen=True, slots=True)
class SourceCounters:
    """Totals since this ``SourceSet`` started."""

    lines: int
    """Newlines appended to the spool."""
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


class _RecoveryNotSettled(Exception):
    """A generation of the lineage cannot be read yet (still being compressed)."""


@dataclass(slots=True)
class _HeldLineage:
    """A lineage whose missed generations could not all be read yet: none of its files
    is read until ``attempt`` succeeds (or ``_HOLD_LIMIT`` passes), so that nothing newer
    is committed before them."""

    attempt: Callable[[float, bool], None]
    """Find and place the missed generations; raises ``_RecoveryNotSettled`` unless its
    second argument (the last attempt) is true."""
    since: float
    next_try: float


@dataclass(slots=True)
class _ReadInFlight:
    """A read of one follower running in a worker thread for longer than ``_READ_WAIT``."""

    future: Future[tuple[int, Truncation | None]]
    started: float
    reported: bool = False


@dataclass(frozen=True, slots=True)
class _StartPosition:
    """Where a newly opened file is read from, which log it continues, and whether that
    came from its own checkpoint (the same file the last run was reading)."""

    offset: int
    lineage: str
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class _BacklogEntry:
    path: str
    mtime: float
    size: int
    follow_symlink: bool
    compressed_identity: bytes | None = None
    """For a compressed file (decompressed when it is its turn; its content key, of the
    decompressed bytes, is only known then): the identity of its compressed bytes."""


def _pattern_of(path: str, patterns: Sequence[str]) -> str | None:
    """The first of ``patterns`` that matches ``path`` (as it was given), or None."""
    directory, name = os.path.split(path)
    for pattern in patterns:
        expanded = os.path.abspath(os.path.expanduser(pattern))
        if not glob.has_magic(expanded):
            if expanded == path or (os.path.isdir(expanded) and directory == expanded):
                return pattern
            continue
        directory_pattern, name_pattern = os.path.split(expanded)
        if fnmatch.fnmatchcase(name, name_pattern) and (
            directory == directory_pattern or fnmatch.fnmatchcase(directory, directory_pattern)
        ):
            return pattern
    return None


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
        live_read_budget: int = 4 * 1024 * 1024,
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
        self._backlog_patterns = tuple(backlog_patterns)
        self._spool = spool
        self._on_appended = on_appended
        self._on_trouble = on_trouble
        self._on_pause_changed = on_pause_changed
        self._on_chunk = on_chunk
        self._delivery_room = delivery_room
        self._poll = poll
        self._from_end = from_end
        self._encoding = normalize_encoding(encoding)
        self._encodings = {p: normalize_encoding(e) for p, e in (encodings or {}).items()}
        """Per pattern (as given): the encoding of the files it matches."""
        self._options = ChunkerOptions(
            chunk_max_bytes, linger, partial_line_linger, FileEncoding(self._encoding)
        )
        self._live_budget = live_read_budget
        self._backlog_budget = backlog_read_budget
        self._rescan_interval = rescan_interval
        self._quiet_rescan_interval = (
            rescan_interval if quiet_rescan_interval is None else quiet_rescan_interval
        )
        # Whether the inotify watcher sees every change that can matter (see _update_watch).
        self._watch_sees_all = False
        self._detached_idle_close = detached_idle_close
        self._full_retry_interval = full_retry_interval
        self._symlinks = follow_symlinks
        self._forget_after = forget_after
        self._read_stall_after = read_stall_after
        self._reads: dict[FileKey, _ReadInFlight] = {}
        """Reads that did not return within ``_READ_WAIT``: their follower is left alone
        (not committed, not closed) until they do."""
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rotation_dirs = {
            os.path.abspath(path): tuple(os.path.abspath(g) for g in globs)
            for path, globs in (rotation_dirs or {}).items()
        }
        """Per log path: globs of where its earlier generations are moved (besides its
        own siblings), e.g. a game's ``logbackups/*.log``."""
        self._next_forget_at = 0.0
        # Backlog marks whose file was seen by this run (``_forget_missing``), and the
        # compressed identity of a compressed backlog file while it is uploaded.
        self._backlog_seen: set[bytes] = set()
        self._compressed_identity: dict[FileKey, bytes] = {}
        self._state = ForgottenState(0, 0, 0, 0)
        self._first_seen_link: dict[str, bool] = {}
        """Named paths (no wildcard): whether each was a link when first seen."""
        self._clock = clock

        self._followers: dict[FileKey, FileFollower] = {}
        self._lineages: dict[str, list[FileFollower]] = {}
        """Open followers by lineage, oldest generation first (see ``rotation``)."""
        self._held: dict[str, _HeldLineage] = {}
        self._recent_truncations: deque[ReadPosition] = deque(maxlen=_RECENT_TRUNCATIONS)
        self._ever_followed: set[str] = set()
        self._trouble_by_subject: dict[str, str] = {}

        self._backlog_queue: deque[_BacklogEntry] = deque()
        self._backlog_active: FileFollower | None = None
        self._backlog_files_done = 0
        self._backlog_files_total = 0
        self._backlog_bytes_done = 0
        self._backlog_bytes_total = 0

        self._paused_reason: str | None = None
        self._initial_scan_done = False
        self._stopping = False
        self._running = False
        self._wake: asyncio.Event | None = None
        self._rescan_requested = False
        self._next_rescan_at = 0.0

        self._watched_dirs: frozenset[str] | None = None
        self._watch_stop: asyncio.Event | None = None
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._inotify: inotify_watch.InotifyWatcher | None = None

        self._lines = 0
        self._chunks_appended = 0
        self._bytes_appended = 0
        self._troubles = 0
        self._closed_bytes_read = 0
        self._closed_invalid = 0
        self._closed_truncations = 0
        self.last_trouble: str | None = None
        """The latest warning sentence (also passed to ``on_trouble``)."""

    # -------------------------------------------------------------------- public API

    @property
    def initial_scan_done(self) -> bool:
        """Whether ``run`` has looked at every pattern and backlog file once (before that,
        ``progress()`` and ``followed()`` are empty)."""
        return self._initial_scan_done

    @property
    def paused_reason(self) -> str | None:
        """Why reading is paused (one sentence), or None while reading."""
        return self._paused_reason

    def progress(self) -> BacklogProgress:
        active = self._backlog_active
        in_flight = active.committed_offset if active is not None else 0
        return BacklogProgress(
            files_done=self._backlog_files_done,
            files_total=self._backlog_files_total,
            bytes_done=self._backlog_bytes_done + in_flight,
            bytes_total=self._backlog_bytes_total,
        )

    def counters(self) -> SourceCounters:
        followers = self._open_followers()
        return SourceCounters(
            lines=self._lines,
            bytes_read=self._closed_bytes_read + sum(f.bytes_read for f in followers),
            bytes_appended=self._bytes_appended,
            chunks_appended=self._chunks_appended,
            invalid_bytes_replaced=self._closed_invalid
            + sum(f.invalid_bytes_replaced for f in followers),
            troubles=self._troubles,
            truncations=self._closed_truncations + sum(f.truncations for f in followers),
            files_followed=len(followers),
        )

    def followed(self) -> tuple[FollowedFile, ...]:
        return tuple(
            FollowedFile(f.path, f.key_text, f.role.value, f.read_offset, f.committed_offset)
            for f in self._open_followers()
        )

    def notify_room(self) -> None:
        """Call (on the loop thread) after acknowledgements freed spool room."""
        if self._paused_reason is not None and self._wake is not None:
            self._wake.set()

    def notify_delivery_room(self) -> None:
        """Call (on the loop thread) when the delivery window may have room again (an
        acknowledgement, a connection made): lines held for want of it go out now."""
        if self._wake is None or self._wake.is_set():
            return
        if any(follower.holds_lines for follower in self._followers.values()):
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
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(
            max_workers=_READ_WORKERS, thread_name_prefix="log-read"
        )
        try:
            now = self._clock()
            self._rescan(now, initial=True)
            self._recover_rotated_while_down(now)
            self._scan_backlog()
            self._forget_missing(now)
            self._initial_scan_done = True
            while not self._stopping:
                more = self._round()
                if self._stopping:
                    break
                if more:
                    await asyncio.sleep(0)
                    continue
                if not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._next_wake_delay())
                self._wake.clear()
        finally:
            await self._stop_watching()
            for follower in self._open_followers():
                if follower.key in self._reads:
                    # Still inside a read that has not returned: closing its descriptor
                    # could hand the number to another file under that read. It is the
                    # process's end anyway.
                    continue
                self._forget(follower)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._reads.clear()
            self._followers.clear()
            self._lineages.clear()
            self._backlog_active = None
            self._running = False

    # ------------------------------------------------------------------------ rounds

    def _round(self) -> bool:
        """One pass over every file; True when some file has more bytes right now."""
        now = self._clock()
        if self._rescan_requested or now >= self._next_rescan_at:
            self._rescan(now)
        if now >= self._next_forget_at:
            self._forget_missing(now)
        appended_before = self._chunks_appended
        more = False
        self._retry_held(now)
        if self._commit_waiting():
            for lineage, members in list(self._lineages.items()):
                if lineage in self._held:
                    continue
                more = self._pump_lineage(list(members), now) or more
                if self._paused_reason is not None:
                    break
            if self._paused_reason is None:
                more = self._pump_backlog(now) or more
            if self._paused_reason is None:
                self._close_idle_detached(now)
        if self._chunks_appended != appended_before:
            self._on_appended()
        return more and self._paused_reason is None

    def _pump_lineage(self, members: list[FileFollower], now: float) -> bool:
        """Read and commit one lineage's generations, oldest first (``rotation``'s order
        rule); True when some file has more bytes right now."""
        if len(members) == 1:
            more, _ = self._pump_live(members[0], now, None, partial_line=False)
            return more
        # Sizes newest first: each older generation is read up to a size taken after
        # every byte its newer ones held was written.
        newest_size = 0
        with contextlib.suppress(OSError):
            newest_size = members[-1].current_size()
        limits: list[int | None] = [None] * len(members)
        for index in range(len(members) - 2, -1, -1):
            with contextlib.suppress(OSError):
                limits[index] = members[index].current_size()
        more = False
        for index, follower in enumerate(members):
            newer_has_lines = newest_size > 0 or any(
                (limit or 0) > 0 for limit in limits[index + 1 : -1]
            )
            read_more, caught_up = self._pump_live(
                follower, now, limits[index], partial_line=newer_has_lines
            )
            more = more or read_more
            if not caught_up:
                # Newer generations wait for this one.
                return more
        return more

    def _pump_live(
        self, follower: FileFollower, now: float, limit: int | None, *, partial_line: bool
    ) -> tuple[bool, bool]:
        """Read and commit one file of a lineage; with ``limit`` (an older generation)
        read up to it and cut every complete line at once. Returns (more bytes right now,
        caught up and committed)."""
        try:
            result = self._read(
                follower, self._live_budget, now, limit, send_now=self._delivery_room()
            )
        except OSError as exc:
            self._report(follower.path, f"Reading {follower.path} failed: {exc.strerror or exc}.")
            self._remove_member(follower)
            self._forget(follower)
            return False, True
        if result is None:
            return False, False  # the read has not returned: newer generations wait
        count, truncation = result
        if truncation is not None:
            self._after_truncation(follower, truncation, now)
            self._commit(follower)
            # The previous content's rest (if a copy holds it) comes first: next round.
            return True, False
        caught_up = True
        if limit is not None:
            caught_up = follower.read_offset >= limit
            if caught_up:
                follower.flush_lines(partial_line=partial_line)
        committed = self._commit(follower)
        return count >= self._live_budget, caught_up and committed

    def _pump_backlog(self, now: float) -> bool:
        follower = self._backlog_active
        if follower is None:
            follower = self._open_next_backlog()
            if follower is None:
                return False
        if not follower.finished:
            try:
                result = self._read(follower, self._backlog_budget, now, None)
                if result is None:
                    return False
                count, _ = result
                if count < self._backlog_budget and follower.at_end():
                    follower.finish(
                        BacklogFile(follower.content_key(), follower.path, follower.read_offset)
                    )
            except OSError as exc:
                self._report(
                    follower.path, f"Reading {follower.path} failed: {exc.strerror or exc}."
                )
                self._backlog_active = None
                self._forget(follower)
                return True
        if not self._commit(follower):
            return False
        if follower.finished:
            identity = self._compressed_identity.pop(follower.key, None)
            if identity is not None:
                self._spool.mark_backlog_done(
                    BacklogFile(identity, follower.path, follower.committed_offset)
                )
                self._backlog_seen.add(identity)
            self._backlog_files_done += 1
            self._backlog_bytes_done += follower.committed_offset
            self._backlog_active = None
            self._forget(follower)
        return True

    def _read(
        self,
        follower: FileFollower,
        budget: int,
        now: float,
        limit: int | None,
        *,
        send_now: bool = False,
    ) -> tuple[int, Truncation | None] | None:
        """``follower.read`` in a worker thread: its result, or None while it has not
        returned. A read that takes longer than ``_READ_WAIT`` (a stalled network file
        system) is left to finish on its own; the loop goes on with every other file, and
        after ``read_stall_after`` seconds the stall is reported."""
        assert self._executor is not None
        job = self._reads.get(follower.key)
        if job is None:
            future = self._executor.submit(follower.read, budget, now, limit, send_now=send_now)
            try:
                return future.result(timeout=_READ_WAIT)
            except TimeoutError:  # concurrent.futures.TimeoutError is this one since 3.11
                self._reads[follower.key] = _ReadInFlight(future, now)
                future.add_done_callback(self._read_returned)
                return None
        if not job.future.done():
            waited = now - job.started
            if not job.reported and waited >= self._read_stall_after:
                job.reported = True
                self._report(
                    follower.path,
                    f"Reading {follower.path} has not returned for {waited:.0f} s (a stalled "
                    "network file system?); the other files go on, and it resumes by itself.",
                )
            return None
        del self._reads[follower.key]
        if job.reported:
            self._clear_trouble(follower.path)
            logger.info("reading %s returned after %.1f s", follower.path, now - job.started)
        return job.future.result()

    def _read_returned(self, future: Future[Any]) -> None:
        """A late read returned (in its worker thread): wake the loop to use it."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

    def _commit_waiting(self) -> bool:
        """Commit chunks left over from a full spool; True when none is left."""
        for follower in self._open_followers():
            if follower.key in self._reads:
                continue
            if follower.pending and not self._commit(follower):
                return False
        if self._paused_reason is not None:
            self._set_paused(None)
        return True

    def _commit(self, follower: FileFollower) -> bool:
        totals = CommitTotals()
        try:
            while follower.commit_one(self._spool, totals):
                pass
            committed = True
        except SpoolFull as exc:
            self._set_paused(
                f"The spool is full ({exc.buffered_bytes} of {exc.max_bytes} bytes waiting "
                "for the server); reading is paused until it drains."
            )
            committed = False
        for path, text in totals.texts:
            self._on_chunk(path, text)
        self._lines += totals.lines
        self._chunks_appended += totals.chunks
        self._bytes_appended += totals.text_bytes
        return committed

    def _set_paused(self, reason: str | None) -> None:
        if reason == self._paused_reason:
            return
        self._paused_reason = reason
        self._on_pause_changed(reason)

    def _close_idle_detached(self, now: float) -> None:
        for follower in [f for members in self._lineages.values() for f in members]:
            if follower.role is not FollowerRole.DETACHED or follower.key in self._reads:
                continue
            if not follower.at_end() or follower.lineage in self._held:
                continue
            idle_since = follower.last_growth_at if follower.last_growth_at is not None else now
            if now - idle_since < self._detached_idle_close and not follower.holds_a_deleted_name():
                continue
            follower.finish()
            if not self._commit(follower):
                return
            if self._backlog_patterns:
                # Read to its end: a backlog pattern that matches this generation later
                # (compressed, renamed) must not upload it again.
                self._spool.mark_backlog_done(
                    BacklogFile(follower.content_key(), follower.path, follower.read_offset)
                )
            if follower.is_unlinked():
                # Deleted for good: its inode may be reused, its checkpoint is garbage.
                self._spool.delete_checkpoint(follower.key_text)
            self._remove_member(follower)
            self._forget(follower)

    def _next_wake_delay(self) -> float:
        now = self._clock()
        deadline = self._next_rescan_at
        for follower in self._open_followers():
            if follower.key in self._reads:
                continue  # its read wakes the loop when it returns
            chunk_deadline = follower.next_deadline()
            if chunk_deadline is not None:
                deadline = min(deadline, chunk_deadline)
            if follower.role is FollowerRole.DETACHED:
                idle_since = follower.last_growth_at if follower.last_growth_at is not None else now
                deadline = min(deadline, idle_since + self._detached_idle_close)
        if self._paused_reason is not None:
            deadline = min(deadline, now + self._full_retry_interval)
        for held in self._held.values():
            deadline = min(deadline, held.next_try)
        return max(0.0, deadline - now)

    # ------------------------------------------------------------------- which files

    def _rescan(self, now: float, *, initial: bool = False) -> None:
        self._rescan_requested = False
        # The safety net matters where events can be missing (a network file system, a
        # directory that does not exist yet, watchfiles' polling); where inotify sees
        # every change it only has to catch what should never happen.
        interval = self._quiet_rescan_interval if self._watch_sees_all else self._rescan_interval
        self._next_rescan_at = now + interval
        matched: dict[FileKey, tuple[str, bool]] = {}
        watch_dirs: set[str] = set()
        for pattern in self._patterns:
            for path, explicit in self._expand(pattern, watch_dirs):
                found = self._stat_for_following(path, explicit)
                if found is not None:
                    status, follow_symlink = found
                    matched.setdefault(FileKey.of(status), (path, follow_symlink))
        for key, (path, follow_symlink) in matched.items():
            follower = self._followers.get(key)
            if follower is not None:
                follower.path = path
                if follower.role is FollowerRole.DETACHED:
                    follower.role = FollowerRole.LIVE
                self._clear_trouble(path)
            elif self._backlog_active is None or self._backlog_active.key != key:
                self._start_following(path, now, initial=initial, follow_symlink=follow_symlink)
        for key, follower in self._followers.items():
            if follower.role is FollowerRole.LIVE and key not in matched:
                follower.role = FollowerRole.DETACHED
                follower.last_growth_at = now
        self._update_watch(watch_dirs)

    @staticmethod
    def _expand(pattern: str, watch_dirs: set[str]) -> list[tuple[str, bool]]:
        """Paths matching ``pattern`` (and whether it names one file explicitly)."""
        expanded = os.path.abspath(os.path.expanduser(pattern))
        if not glob.has_magic(expanded):
            watch_dirs.add(os.path.dirname(expanded))
            return [(expanded, True)]
        directory_pattern = os.path.dirname(expanded)
        if glob.has_magic(directory_pattern):
            watch_dirs.update(glob.glob(directory_pattern, recursive=True))
        else:
            watch_dirs.add(directory_pattern)
        return [(path, False) for path in sorted(glob.glob(expanded, recursive=True))]

    def _may_follow_link(self, path: str, explicit: bool, is_link: bool) -> bool:
        """Whether a symbolic link at ``path`` may be followed (see "Symbolic links" in
        the module docstring); records what a named path was when first seen."""
        if self._symlinks == "always":
            return True
        if self._symlinks == "never" or not explicit:
            return False
        return self._first_seen_link.setdefault(path, is_link)

    def _link_refused(self, path: str, explicit: bool) -> bool | None:
        """None when ``path`` is a symbolic link that may not be followed (reported);
        else whether to open it following a link."""
        try:
            is_link = stat.S_ISLNK(os.lstat(path).st_mode)
        except OSError:
            # Missing or unreachable: the stat that follows says which, in a sentence.
            return False
        follow = self._may_follow_link(path, explicit, is_link)
        if is_link and not follow:
            self._report(path, str(symlink_refused(path)))
            return None
        return follow

    def _stat_for_following(self, path: str, explicit: bool) -> tuple[os.stat_result, bool] | None:
        """The status of a file to follow at ``path`` and whether to open it through a
        link; None (reported when worth saying) when it is not to be followed."""
        follow_symlink = self._link_refused(path, explicit)
        if follow_symlink is None:
            return None
        try:
            status = os.stat(path)
        except FileNotFoundError:
            if explicit and path not in self._ever_followed:
                if os.path.islink(path):
                    message = f"{path} is a symbolic link to a missing file; it will be followed once the target exists."
                else:
                    message = f"{path} does not exist; it will be followed once it appears."
                self._report(path, message)
            return None
        except PermissionError:
            self._report(path, f"{path} cannot be reached: permission denied.")
            return None
        except OSError as exc:
            self._report(path, f"{path} cannot be examined: {exc.strerror or exc}.")
            return None
        if stat.S_ISREG(status.st_mode):
            return status, follow_symlink
        if explicit and stat.S_ISDIR(status.st_mode):
            self._report(
                path, f"{path} is a directory, not a log file (use a glob like {path}/*.log)."
            )
        elif explicit:
            self._report(path, f"{path} is not a regular file.")
        return None

    def _start_following(
        self,
        path: str,
        now: float,
        *,
        initial: bool,
        follow_symlink: bool,
        role: FollowerRole = FollowerRole.LIVE,
    ) -> None:
        try:
            fd, status = open_log_file(path, follow_symlink=follow_symlink)
        except FileTrouble as trouble:
            self._report(path, str(trouble))
            return
        key = FileKey.of(status)
        if key in self._followers:
            os.close(fd)
            return
        try:
            start = self._start_offset(path, fd, status, initial=initial)
            follower = FileFollower(
                path,
                fd,
                status,
                start.offset,
                role,
                options=self._options_for(start.lineage, self._patterns),
                lineage=start.lineage,
            )
        except OSError as exc:
            os.close(fd)
            self._report(path, f"{path} cannot be read: {exc.strerror or exc}.")
            return
        follower.last_growth_at = now
        follower.resumed = start.resumed
        members = self._lineages.get(follower.lineage)
        self._add_member(follower)
        if members and len(members) > 1 and not initial:
            # A new generation of a log being followed: first the ones missed since the
            # previous one (rotated twice between two looks, while paused…).
            previous = members[-2]
            try:
                not_before = previous.status().st_mtime_ns
            except OSError:
                not_before = previous.mtime_ns

            def place_missed(now: float, last_attempt: bool) -> None:
                for missed in self._find_missed_generations(
                    follower.lineage,
                    now,
                    not_before_ns=not_before,
                    positions=(),
                    last_attempt=last_attempt,
                ):
                    self._add_member(missed, before=follower)

            self._recover(follower.lineage, now, place_missed)
        self._ever_followed.add(path)
        self._clear_trouble(path)
        logger.info("following %s from byte %d", path, start.offset)

    def _start_offset(
        self, path: str, fd: int, status: os.stat_result, *, initial: bool
    ) -> _StartPosition:
        size = status.st_size
        key = FileKey.of(status)
        checkpoint = self._spool.get_checkpoint(str(key))
        if checkpoint is not None:
            fingerprint = CheckpointFingerprint.from_bytes(checkpoint.fingerprint)
            if fingerprint is not None and describes(fingerprint, checkpoint.offset, fd, size):
                return _StartPosition(checkpoint.offset, checkpoint.path, resumed=True)
        for position in self._copy_candidates():
            if describes(position.fingerprint, position.offset, fd, size):
                logger.info("%s is a copy of a file read up to byte %d", path, position.offset)
                return _StartPosition(position.offset, path)
        if initial and self._from_end and not self._has_history(path):
            fingerprint = CheckpointFingerprint(
                HeadFingerprint.of(read_head(fd)), Anchor.of(read_before(fd, size))
            )
            # Stored now, so a restart does not skip what is written meanwhile.
            self._spool.set_checkpoint(Checkpoint(str(key), path, size, fingerprint.to_bytes()))
            return _StartPosition(size, path)
        return _StartPosition(0, path)

    def _has_history(self, lineage: str) -> bool:
        """Whether the spool remembers reading some generation of ``lineage``."""
        return bool(self._spool.checkpoints(path=lineage))

    def _copy_candidates(self) -> list[ReadPosition]:
        positions = [f.position() for f in self._followers.values()]
        positions.extend(self._recent_truncations)
        return [p for p in positions if p.offset > 0]

    def _after_truncation(self, follower: FileFollower, truncation: Truncation, now: float) -> None:
        """Finish a truncated file's previous content from wherever it went.

        ``copytruncate`` copies the file next to it, then truncates it: the bytes the
        follower had not read yet are only in the copy (possibly compressed by now, and
        followed by more copies if it was truncated more than once since the last look).
        """
        logger.info("%s was truncated after byte %d", follower.path, truncation.position.offset)
        self._recent_truncations.append(truncation.position)
        position = truncation.position
        reach = position.offset
        known = KnownPosition(position.fingerprint, reach, reach, time.time_ns())

        def place_rest(now: float, last_attempt: bool) -> None:
            missed = self._find_missed_generations(
                follower.lineage,
                now,
                not_before_ns=truncation.mtime_ns,
                positions=(known,),
                # The follower's own checkpoint is in the generation it read up to here.
                reached={follower.key_text: reach},
                last_attempt=last_attempt,
            )
            if not missed:
                return
            # What was cut of the previous content but not committed goes first.
            missed[0].adopt_pending(follower.take_pending())
            for generation in missed:
                self._add_member(generation, before=follower)
                logger.info("reading the rest of %s from %s", follower.lineage, generation.path)

        self._recover(follower.lineage, now, place_rest)

    def _recover_rotated_while_down(self, now: float) -> None:
        """At start: for every log the spool has read before and the patterns still
        cover, read the generations rotated away while the client was down, oldest first,
        before its current file."""
        by_lineage: dict[str, float] = {}
        for checkpoint in self._spool.checkpoints():
            if self._covered(checkpoint.path):
                at = checkpoint.updated_at or 0.0
                by_lineage[checkpoint.path] = max(by_lineage.get(checkpoint.path, 0.0), at)
        for lineage, last_update in by_lineage.items():
            members = self._lineages.get(lineage, [])
            if any(m.resumed and m.path == lineage for m in members):
                continue  # the log at its path is the one that was being read
            self._recover(
                lineage,
                now,
                functools.partial(self._place_rotated_while_down, lineage, last_update),
            )

    def _place_rotated_while_down(
        self, lineage: str, last_update: float, now: float, last_attempt: bool
    ) -> None:
        found = self._find_missed_generations(
            lineage,
            now,
            not_before_ns=None,
            positions=(),
            fallback_not_before_ns=int(last_update * 1e9),
            last_attempt=last_attempt,
        )
        for generation in found:
            self._followers[generation.key] = generation
            logger.info("reading %s, rotated while the client was down", generation.path)
        # Generation order: files a glob matched under rotated names by modification time,
        # then the ones found now (already in order), the file at the path last.
        members = self._lineages.get(lineage, [])
        at_path = [m for m in members if m.path == lineage]
        others = sorted(
            (m for m in members if m.path != lineage), key=lambda f: (f.mtime_ns, f.path)
        )
        if others or found or at_path:
            self._lineages[lineage] = others + found + at_path

    def _recover(self, lineage: str, now: float, attempt: Callable[[float, bool], None]) -> None:
        """Place a lineage's missed generations now, or hold the lineage until they can
        all be read (``_HeldLineage``)."""
        try:
            attempt(now, False)
        except _RecoveryNotSettled:
            self._held[lineage] = _HeldLineage(attempt, now, now + _HOLD_RETRY)

    def _retry_held(self, now: float) -> None:
        for lineage, held in list(self._held.items()):
            if now < held.next_try:
                continue
            last_attempt = now - held.since >= _HOLD_LIMIT
            try:
                held.attempt(now, last_attempt)
            except _RecoveryNotSettled:
                held.next_try = now + _HOLD_RETRY
                continue
            del self._held[lineage]

    def _find_missed_generations(
        self,
        lineage: str,
        now: float,
        *,
        not_before_ns: int | None,
        positions: Sequence[KnownPosition],
        reached: dict[str, int] | None = None,
        fallback_not_before_ns: int | None = None,
        last_attempt: bool = True,
    ) -> list[FileFollower]:
        """Open the generations of ``lineage`` that hold lines not read yet and that no
        follower has open, oldest first (``rotation.plan_recovery``). ``positions`` are
        known besides the lineage's checkpoints; ``reached`` says how far the generation
        of a checkpoint (by key) was read beyond it. Raises ``_RecoveryNotSettled`` when a
        candidate is still being compressed, unless ``last_attempt`` (then it is skipped,
        and said so)."""
        reached = reached or {}
        checkpoints = self._spool.checkpoints(path=lineage)
        known = list(positions)
        for checkpoint in checkpoints:
            fingerprint = CheckpointFingerprint.from_bytes(checkpoint.fingerprint)
            if fingerprint is not None:
                reach = max(checkpoint.offset, reached.get(checkpoint.key, 0))
                at_ns = int((checkpoint.updated_at or 0.0) * 1e9)
                known.append(KnownPosition(fingerprint, checkpoint.offset, reach, at_ns))
        candidates = [
            candidate
            for candidate in find_candidates(
                lineage, (c.key for c in checkpoints), self._rotation_dirs.get(lineage, ())
            )
            if candidate.key not in self._followers
            and (self._backlog_active is None or self._backlog_active.key != candidate.key)
            and (not_before_ns is None or candidate.mtime_ns >= not_before_ns)
        ]
        if not candidates:
            return []
        candidates.sort(key=lambda c: (c.mtime_ns, c.path), reverse=True)
        members = self._lineages.get(lineage, [])
        opened: dict[str, OpenedGeneration] = {}
        unreadable: set[str] = set()

        def copies_an_open_generation(generation: OpenedGeneration) -> bool:
            # Renamed, then compressed (or copied) while a follower had it open: that
            # follower reads it through its own descriptor.
            return any(m.holds_copy_of(generation.fd, generation.size) for m in members)

        def is_known(candidate: Candidate) -> int | None:
            if candidate.compressed:
                head = read_compressed_head(
                    candidate.path, follow_symlink=self._symlinks == "always"
                )
                if head is None or not may_be_known(head, known):
                    return None
            generation = self._open_generation(candidate.path, last_attempt)
            if generation is None:
                # Not readable: neither known nor to be read, or a copy finished meanwhile
                # would be read whole a second time.
                unreadable.add(candidate.path)
                return None
            opened[candidate.path] = generation
            if copies_an_open_generation(generation):
                return NOTHING_LEFT  # and everything older was read
            return known_offset(generation.fd, generation.size, candidate.mtime_ns, known)

        followers: list[FileFollower] = []
        try:
            plan = plan_recovery(
                candidates,
                is_known,
                not_before_ns if not_before_ns is not None else fallback_not_before_ns,
            )
            for step in plan:
                path = step.candidate.path
                if path in unreadable:
                    continue
                generation = opened.pop(path, None)
                if generation is None:
                    generation = self._open_generation(path, last_attempt)
                    if generation is None:
                        continue
                    if copies_an_open_generation(generation):
                        generation.close()
                        continue
                if step.start >= generation.size or generation.key in self._followers:
                    generation.close()
                    continue
                follower = FileFollower(
                    path,
                    generation.fd,
                    os.fstat(generation.fd),
                    step.start,
                    FollowerRole.DETACHED,
                    options=self._options_for(lineage, self._patterns),
                    lineage=lineage,
                    key=generation.key,
                    decompressed=generation.decompressed,
                )
                follower.last_growth_at = now
                followers.append(follower)
        except BaseException:
            for follower in followers:
                follower.close()
            raise
        finally:
            for generation in opened.values():
                generation.close()
        return followers

    def _open_generation(self, path: str, last_attempt: bool) -> OpenedGeneration | None:
        try:
            # A rotated sibling is never named by the user: a link there is refused
            # unless every link is followed.
            return open_generation(
                path, self._spool.directory, follow_symlink=self._symlinks == "always"
            )
        except GenerationIncomplete as incomplete:
            if not last_attempt:
                # Most likely still being compressed: look again in a moment.
                raise _RecoveryNotSettled(str(incomplete)) from None
            self._report(path, f"{incomplete} It is skipped.")
            return None
        except FileTrouble as trouble:
            self._report(path, str(trouble))
            return None

    def _covered(self, path: str) -> bool:
        """Whether ``path`` is matched by a source pattern (or was, if it is gone now)."""
        return _pattern_of(path, self._patterns) is not None

    def _options_for(self, path: str, patterns: Sequence[str]) -> ChunkerOptions:
        """The chunker options of a file: its pattern's encoding, else the default one."""
        pattern = _pattern_of(path, patterns)
        name = self._encodings.get(pattern, self._encoding) if pattern else self._encoding
        if name == self._options.encoding.name:
            return self._options
        return dataclasses.replace(self._options, encoding=FileEncoding(name))

    # ------------------------------------------------------------------------ backlog

    def _scan_backlog(self) -> None:
        seen = set(self._followers)
        entries: list[_BacklogEntry] = []
        for pattern in self._backlog_patterns:
            for path, explicit in self._expand_backlog(pattern):
                follow_symlink = self._link_refused(path, explicit)
                if follow_symlink is None:
                    continue
                try:
                    status = os.stat(path)
                except OSError:
                    continue
                key = FileKey.of(status)
                if not stat.S_ISREG(status.st_mode) or key in seen:
                    continue
                seen.add(key)
                if compression_of(path) is not None:
                    # Its content key is known only once decompressed, which waits for its
                    # turn, so a start never decompresses every old log; a file done before
                    # is known by the identity of its compressed bytes.
                    identity = self._compressed_identity_of(path, follow_symlink)
                    if identity is None:
                        continue
                    self._backlog_files_total += 1
                    self._backlog_bytes_total += status.st_size
                    if self._spool.is_backlog_done(identity):
                        self._backlog_seen.add(identity)
                        self._backlog_files_done += 1
                        self._backlog_bytes_done += status.st_size
                        continue
                    entries.append(
                        _BacklogEntry(
                            path, status.st_mtime, status.st_size, follow_symlink, identity
                        )
                    )
                    continue
                try:
                    fd, status = open_log_file(path, follow_symlink=follow_symlink)
                except FileTrouble as trouble:
                    self._report(path, str(trouble))
                    continue
                try:
                    content_key = backlog_content_key(fd, status.st_size)
                except OSError as exc:
                    self._report(path, f"{path} cannot be read: {exc.strerror or exc}.")
                    continue
                finally:
                    os.close(fd)
                self._backlog_files_total += 1
                self._backlog_bytes_total += status.st_size
                if self._spool.is_backlog_done(content_key):
                    self._backlog_seen.add(content_key)
                    self._backlog_files_done += 1
                    self._backlog_bytes_done += status.st_size
                else:
                    entries.append(
                        _BacklogEntry(path, status.st_mtime, status.st_size, follow_symlink)
                    )
        entries.sort(key=lambda entry: (entry.mtime, entry.path))
        self._backlog_queue = deque(entries)

    def _expand_backlog(self, pattern: str) -> list[tuple[str, bool]]:
        """Paths of ``pattern`` (and whether it names that one file explicitly)."""
        expanded = os.path.abspath(os.path.expanduser(pattern))
        if glob.has_magic(expanded):
            return [(path, False) for path in sorted(glob.glob(expanded, recursive=True))]
        if os.path.isdir(expanded):
            try:
                names = sorted(os.listdir(expanded))
            except OSError as exc:
                self._report(expanded, f"{expanded} cannot be listed: {exc.strerror or exc}.")
                return []
            return [(os.path.join(expanded, name), False) for name in names]
        if os.path.lexists(expanded):
            return [(expanded, True)]
        self._report(expanded, f"The backlog {expanded} does not exist.")
        return []

    def _open_next_backlog(self) -> FileFollower | None:
        while self._backlog_queue:
            entry = self._backlog_queue.popleft()
            try:
                generation = open_generation(
                    entry.path, self._spool.directory, follow_symlink=entry.follow_symlink
                )
            except FileTrouble as trouble:
                self._report(entry.path, str(trouble))
                self._backlog_files_total -= 1
                self._backlog_bytes_total -= entry.size
                continue
            if generation.key in self._followers:
                generation.close()
                self._backlog_files_total -= 1
                self._backlog_bytes_total -= entry.size
                continue
            try:
                status = os.fstat(generation.fd)
                if self._backlog_already_shipped(generation):
                    generation.close()
                    if entry.compressed_identity is not None:
                        self._mark_backlog_identity(entry.compressed_identity, entry)
                    self._backlog_files_done += 1
                    self._backlog_bytes_done += entry.size
                    continue
                start = self._start_offset(entry.path, generation.fd, status, initial=False)
                follower = FileFollower(
                    entry.path,
                    generation.fd,
                    status,
                    start.offset,
                    FollowerRole.BACKLOG,
                    options=self._options_for(entry.path, self._backlog_patterns),
                    lineage=start.lineage,
                    key=generation.key,
                    decompressed=generation.decompressed,
                )
            except OSError as exc:
                generation.close()
                self._report(entry.path, f"{entry.path} cannot be read: {exc.strerror or exc}.")
                continue
            if entry.compressed_identity is not None:
                self._compressed_identity[follower.key] = entry.compressed_identity
            self._backlog_active = follower
            return follower
        return None

    def _forget_missing(self, now: float) -> None:
        """Keep the spool's file state bounded (``Spool.forget_missing``): checkpoints of
        files not found next to any followed log, and backlog marks of files not seen by
        this run's backlog scan, are forgotten once gone for ``forget_after``. Looked at
        once at start and then once a day."""
        self._next_forget_at = now + min(self._forget_after / 2, _FORGET_LOOK_INTERVAL)
        present = {f.key_text for f in self._open_followers()}
        directories = {os.path.dirname(c.path) for c in self._spool.checkpoints()}
        directories.update(self._watched_dirs or ())
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
        marks = set(self._backlog_seen)
        self._state = self._spool.forget_missing(present, marks, self._forget_after)
        if self._state.checkpoints_forgotten or self._state.backlog_forgotten:
            logger.info(
                "forgot %d checkpoints and %d backlog marks of files gone for %g days",
                self._state.checkpoints_forgotten,
                self._state.backlog_forgotten,
                self._forget_after / 86_400,
            )

    def state_counts(self) -> ForgottenState:
        """The spool's file state as of the last look (checkpoints, backlog marks, and
        how many were forgotten then)."""
        return self._state

    def _compressed_identity_of(self, path: str, follow_symlink: bool) -> bytes | None:
        try:
            fd, status = open_log_file(path, follow_symlink=follow_symlink)
        except FileTrouble as trouble:
            self._report(path, str(trouble))
            return None
        try:
            return compressed_identity(fd, status.st_size)
        except OSError as exc:
            self._report(path, f"{path} cannot be read: {exc.strerror or exc}.")
            return None
        finally:
            os.close(fd)

    def _mark_backlog_identity(self, identity: bytes, entry: _BacklogEntry) -> None:
        """Remember a compressed backlog file as done by its compressed bytes, so the next
        start knows it without decompressing it."""
        self._spool.mark_backlog_done(BacklogFile(identity, entry.path, entry.size))
        self._backlog_seen.add(identity)

    def _backlog_already_shipped(self, generation: OpenedGeneration) -> bool:
        """Whether a backlog file's content went out already: uploaded before (under any
        name, compressed or not), or a copy of a generation a followed log reads itself."""
        # Asked again now, not only at the scan: a followed log's generation read to its end
        # meanwhile is marked done (``_close_idle_detached``).
        if self._spool.is_backlog_done(backlog_content_key(generation.fd, generation.size)):
            return True
        return any(
            member.holds_copy_of(generation.fd, generation.size)
            for members in self._lineages.values()
            for member in members
        )

    # ----------------------------------------------------------------------- watching

    def _update_watch(self, directories: set[str]) -> None:
        existing = frozenset(d for d in directories if os.path.isdir(d))
        if existing == self._watched_dirs:
            return
        if self._watch_stop is not None:
            self._watch_stop.set()
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._watch_sees_all = False
        self._watched_dirs = existing
        self._watch_tasks = [task for task in self._watch_tasks if not task.done()]
        if not existing:
            self._watch_stop = None
            return
        # Events between the scan and the watcher's start would be lost: look again soon.
        self._rescan_requested = True
        if not self._poll and inotify_watch.available():
            try:
                self._inotify = inotify_watch.InotifyWatcher(
                    sorted(existing), self._on_changes, self._on_watch_lost
                )
                self._watch_sees_all = len(existing) == len(directories) and (
                    inotify_watch.sees_every_change(existing)
                )
                return
            except OSError as exc:
                # Out of watches (fs.inotify.max_user_watches) or a directory gone since
                # the scan: watchfiles' own inotify (or its polling) may still do.
                logger.info("inotify refused (%s); watching with watchfiles", exc)
        self._watch_stop = asyncio.Event()
        self._watch_tasks.append(asyncio.create_task(self._watch(existing, self._watch_stop)))

    def _on_watch_lost(self) -> None:
        """A watched directory went away, or the kernel dropped events: rescan, and
        watch whatever directories there are then."""
        self._watched_dirs = None
        self._watch_sees_all = False
        self._rescan_requested = True
        if self._wake is not None:
            self._wake.set()

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
            self._report(
                "watcher",
                f"Watching {', '.join(sorted(directories))} failed ({exc}); "
                f"changes are picked up by rescanning every {self._rescan_interval:g} s.",
            )
            # A later rescan starts a new watcher.
            self._watched_dirs = None

    def _on_changes(self, changes: set[tuple[watchfiles.Change, str]]) -> None:
        followed = {f.path for f in self._followers.values()}
        for change, path in changes:
            if change is not watchfiles.Change.modified or path not in followed:
                self._rescan_requested = True
                break
        if self._wake is not None:
            self._wake.set()

    async def _stop_watching(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        if self._watch_stop is not None:
            self._watch_stop.set()
        for task in self._watch_tasks:
            try:
                await asyncio.wait_for(task, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        self._watch_tasks = []
        self._watched_dirs = None

    # -------------------------------------------------------------------- bookkeeping

    def _open_followers(self) -> list[FileFollower]:
        """Every open file: lineage by lineage, oldest generation first; then the backlog."""
        followers = [follower for members in self._lineages.values() for follower in members]
        if self._backlog_active is not None:
            followers.append(self._backlog_active)
        return followers

    def _add_member(self, follower: FileFollower, before: FileFollower | None = None) -> None:
        """Add an open follower to its lineage: as the newest generation, or just before
        ``before`` (an older generation found late)."""
        self._followers[follower.key] = follower
        members = self._lineages.setdefault(follower.lineage, [])
        if before is not None and before in members:
            members.insert(members.index(before), follower)
        else:
            members.append(follower)

    def _remove_member(self, follower: FileFollower) -> None:
        self._followers.pop(follower.key, None)
        members = self._lineages.get(follower.lineage)
        if members is not None and follower in members:
            members.remove(follower)
            if not members:
                del self._lineages[follower.lineage]

    def _forget(self, follower: FileFollower) -> None:
        self._closed_bytes_read += follower.bytes_read
        self._closed_invalid += follower.invalid_bytes_replaced
        self._closed_truncations += follower.truncations
        follower.close()

    def _report(self, subject: str, message: str) -> None:
        if self._trouble_by_subject.get(subject) == message:
            return
        self._trouble_by_subject[subject] = message
        self._troubles += 1
        self.last_trouble = message
        logger.warning("%s", message)
        self._on_trouble(message)

    def _clear_trouble(self, subject: str) -> None:
        self._trouble_by_subject.pop(subject, None)
