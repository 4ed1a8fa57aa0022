"""The backlog: older files uploaded once each, oldest first, and their progress.

Owns: scanning the ``backlog`` patterns once at start (each file's content key, or for a
compressed file the identity of its compressed bytes, so a start never decompresses every
old log), the queue of files not uploaded yet (oldest modification first), opening the
next one when it is its turn (decompressed then), skipping one whose content went out
already (uploaded under any name, or a generation a followed log reads itself), the marks
of files done, and the progress counts (``BacklogProgress``).

Must not: read or commit the active file (``lineage_reader`` does, one bounded slice a
round, after the live files) or look at the backlog again after the start.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from main_process.sources.file_follower import FileFollower, FileTrouble, open_log_file
from main_process.sources.file_identity import FileKey, backlog_content_key, compressed_identity
from main_process.sources.link_policy import LinkPolicy
from main_process.sources.rotation import OpenedGeneration, compression_of, open_generation
from main_process.sources.source_patterns import expand_backlog_pattern
from main_process.sources.source_registry import FollowerRegistry, TroubleLog
from main_process.spool.chunks import BacklogFile, Spool


@dataclass(frozen=True, slots=True)
class BacklogProgress:
    """Backlog upload progress; totals include files found already uploaded."""

    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0


@dataclass(frozen=True, slots=True)
class _BacklogEntry:
    path: str
    mtime: float
    size: int
    follow_symlink: bool
    compressed_identity: bytes | None = None
    """For a compressed file (decompressed when it is its turn; its content key, of the
    decompressed bytes, is only known then): the identity of its compressed bytes."""


StartBacklogFile = Callable[[str, OpenedGeneration, os.stat_result], FileFollower]
"""Make the follower of a backlog file (path, opened generation, its status)."""


class BacklogQueue:
    """The backlog files of one run; see the module docstring."""

    def __init__(
        self,
        patterns: Sequence[str],
        spool: Spool,
        registry: FollowerRegistry,
        links: LinkPolicy,
        troubles: TroubleLog,
    ) -> None:
        self._patterns = tuple(patterns)
        self._spool = spool
        self._registry = registry
        self._links = links
        self._troubles = troubles
        self._queue: deque[_BacklogEntry] = deque()
        self.seen: set[bytes] = set()
        """Backlog marks whose file was seen by this run (kept by ``forget_missing``)."""
        self._compressed_identity: dict[FileKey, bytes] = {}
        """The compressed identity of a compressed backlog file while it is uploaded."""
        self._files_done = 0
        self._files_total = 0
        self._bytes_done = 0
        self._bytes_total = 0

    def progress(self) -> BacklogProgress:
        active = self._registry.backlog_active
        in_flight = active.committed_offset if active is not None else 0
        return BacklogProgress(
            files_done=self._files_done,
            files_total=self._files_total,
            bytes_done=self._bytes_done + in_flight,
            bytes_total=self._bytes_total,
        )

    def _count(self, size: int, *, done: bool) -> None:
        self._files_total += 1
        self._bytes_total += size
        if done:
            self._files_done += 1
            self._bytes_done += size

    def _uncount(self, size: int) -> None:
        self._files_total -= 1
        self._bytes_total -= size

    def scan(self) -> None:
        seen = set(self._registry.by_key)
        entries: list[_BacklogEntry] = []
        report = self._troubles.report
        for pattern in self._patterns:
            for path, explicit in expand_backlog_pattern(pattern, report):
                follow_symlink = self._links.link_refused(path, explicit)
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
                    identity = self._identity_of(path, follow_symlink, compressed_identity)
                    if identity is None:
                        continue
                    entry = _BacklogEntry(
                        path, status.st_mtime, status.st_size, follow_symlink, identity
                    )
                else:
                    identity = self._identity_of(path, follow_symlink, backlog_content_key)
                    if identity is None:
                        continue
                    entry = _BacklogEntry(path, status.st_mtime, status.st_size, follow_symlink)
                done = self._spool.is_backlog_done(identity)
                self._count(status.st_size, done=done)
                if done:
                    self.seen.add(identity)
                else:
                    entries.append(entry)
        entries.sort(key=lambda entry: (entry.mtime, entry.path))
        self._queue = deque(entries)

    def open_next(self, start: StartBacklogFile) -> FileFollower | None:
        """Open the next backlog file to upload (made the active one), or None."""
        while self._queue:
            entry = self._queue.popleft()
            try:
                generation = open_generation(
                    entry.path, self._spool.directory, follow_symlink=entry.follow_symlink
                )
            except FileTrouble as trouble:
                self._troubles.report(entry.path, str(trouble))
                self._uncount(entry.size)
                continue
            if generation.key in self._registry.by_key:
                generation.close()
                self._uncount(entry.size)
                continue
            try:
                status = os.fstat(generation.fd)
                if self._already_shipped(generation):
                    generation.close()
                    if entry.compressed_identity is not None:
                        self._mark_done(
                            BacklogFile(entry.compressed_identity, entry.path, entry.size)
                        )
                    self._files_done += 1
                    self._bytes_done += entry.size
                    continue
                follower = start(entry.path, generation, status)
            except OSError as exc:
                generation.close()
                self._troubles.report(
                    entry.path, f"{entry.path} cannot be read: {exc.strerror or exc}."
                )
                continue
            if entry.compressed_identity is not None:
                self._compressed_identity[follower.key] = entry.compressed_identity
            self._registry.backlog_active = follower
            return follower
        return None

    def finished(self, follower: FileFollower) -> None:
        """The active file is read to its end and committed (its own mark with it)."""
        identity = self._compressed_identity.pop(follower.key, None)
        if identity is not None:
            # Remembered by its compressed bytes too, so the next start knows it without
            # decompressing it.
            self._mark_done(BacklogFile(identity, follower.path, follower.committed_offset))
        self._files_done += 1
        self._bytes_done += follower.committed_offset
        self._registry.backlog_active = None

    def dropped(self) -> None:
        """The active file could not be read; it is given up for this run."""
        self._registry.backlog_active = None

    def _mark_done(self, mark: BacklogFile) -> None:
        self._spool.mark_backlog_done(mark)
        self.seen.add(mark.fingerprint)

    def _identity_of(
        self, path: str, follow_symlink: bool, identity: Callable[[int, int], bytes]
    ) -> bytes | None:
        """``identity(fd, size)`` of the file at ``path``; None (reported) when it cannot
        be read."""
        try:
            fd, status = open_log_file(path, follow_symlink=follow_symlink)
        except FileTrouble as trouble:
            self._troubles.report(path, str(trouble))
            return None
        try:
            return identity(fd, status.st_size)
        except OSError as exc:
            self._troubles.report(path, f"{path} cannot be read: {exc.strerror or exc}.")
            return None
        finally:
            os.close(fd)

    def _already_shipped(self, generation: OpenedGeneration) -> bool:
        """Whether a backlog file's content went out already: uploaded before (under any
        name, compressed or not), or a copy of a generation a followed log reads itself."""
        # Asked again now, not only at the scan: a followed log's generation read to its end
        # meanwhile is marked done (``lineage_reader``, closing an idle detached file).
        if self._spool.is_backlog_done(backlog_content_key(generation.fd, generation.size)):
            return True
        return any(
            member.holds_copy_of(generation.fd, generation.size)
            for members in self._registry.lineages.values()
            for member in members
        )
