"""Which files the source patterns match now, and where each newly found one is read from.

Owns: a rescan (every match ``stat``-ed: a known (dev, ino) keeps its follower, which is
told its path after a rename; an unknown one gets a new follower; a follower whose file
no longer matches is detached), opening a new follower, and its start position: its
stored checkpoint when the checkpoint's fingerprints describe the file
(``file_identity``), else the position reached in a file it is a copy of, else 0 (its
end with ``from_end``, for files found by the first scan only, unless the spool remembers
reading that log: files that appear later are new content and are read whole).

Must not: read or commit (``lineage_reader``), watch directories (``directory_watch``),
or look for missed generations itself (``generation_recovery`` is asked to, when a new
file continues a followed log).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from main_process.sources.file_follower import (
    ChunkerOptions,
    FileFollower,
    FileTrouble,
    FollowerRole,
    open_log_file,
)
from main_process.sources.file_identity import (
    Anchor,
    CheckpointFingerprint,
    FileKey,
    HeadFingerprint,
    describes,
    read_before,
    read_head,
)
from main_process.sources.generation_recovery import GenerationRecovery
from main_process.sources.link_policy import LinkPolicy
from main_process.sources.rotation import OpenedGeneration
from main_process.sources.source_patterns import ChunkerOptionsByPattern, expand_source_pattern
from main_process.sources.source_registry import FollowerRegistry, TroubleLog
from main_process.spool.chunks import Checkpoint, Spool

logger = logging.getLogger("main_process.sources")


@dataclass(frozen=True, slots=True)
class _StartPosition:
    """Where a newly opened file is read from, which log it continues, and whether that
    came from its own checkpoint (the same file the last run was reading)."""

    offset: int
    lineage: str
    resumed: bool = False


class FileDiscovery:
    """Matches the source patterns and opens new followers; see the module docstring."""

    def __init__(
        self,
        patterns: Sequence[str],
        backlog_patterns: Sequence[str],
        spool: Spool,
        registry: FollowerRegistry,
        recovery: GenerationRecovery,
        links: LinkPolicy,
        troubles: TroubleLog,
        *,
        options: ChunkerOptionsByPattern,
        from_end: bool,
    ) -> None:
        self._patterns = tuple(patterns)
        self._backlog_patterns = tuple(backlog_patterns)
        self._spool = spool
        self._registry = registry
        self._recovery = recovery
        self._links = links
        self._troubles = troubles
        self._options = options
        self._from_end = from_end
        self._ever_followed: set[str] = set()

    def options_for(self, path: str) -> ChunkerOptions:
        """The chunker options of a file of the source patterns."""
        return self._options.for_path(path, self._patterns)

    def stat_for_following(self, path: str, explicit: bool) -> tuple[os.stat_result, bool] | None:
        """``LinkPolicy.stat_for_following``; a missing named path is reported until it
        was followed once."""
        return self._links.stat_for_following(
            path, explicit, report_missing=path not in self._ever_followed
        )

    def rescan(self, now: float, *, initial: bool = False) -> set[str]:
        """Match every pattern and act on it; returns the directories to watch."""
        matched: dict[FileKey, tuple[str, bool]] = {}
        watch_dirs: set[str] = set()
        for pattern in self._patterns:
            for path, explicit in expand_source_pattern(pattern, watch_dirs):
                found = self.stat_for_following(path, explicit)
                if found is not None:
                    status, follow_symlink = found
                    matched.setdefault(FileKey.of(status), (path, follow_symlink))
        registry = self._registry
        for key, (path, follow_symlink) in matched.items():
            follower = registry.by_key.get(key)
            if follower is not None:
                follower.matched_at(path)
                self._troubles.clear(path)
            elif registry.backlog_active is None or registry.backlog_active.key != key:
                self._start_following(path, now, initial=initial, follow_symlink=follow_symlink)
        for key, follower in registry.by_key.items():
            if follower.role is FollowerRole.LIVE and key not in matched:
                follower.detach(now)
        return watch_dirs

    def _start_following(
        self, path: str, now: float, *, initial: bool, follow_symlink: bool
    ) -> None:
        try:
            fd, status = open_log_file(path, follow_symlink=follow_symlink)
        except FileTrouble as trouble:
            self._troubles.report(path, str(trouble))
            return
        key = FileKey.of(status)
        if key in self._registry.by_key:
            os.close(fd)
            return
        try:
            start = self.start_offset(path, fd, status, initial=initial)
            follower = FileFollower(
                path,
                fd,
                status,
                start.offset,
                FollowerRole.LIVE,
                options=self.options_for(start.lineage),
                lineage=start.lineage,
                opened_at=now,
                resumed=start.resumed,
            )
        except OSError as exc:
            os.close(fd)
            self._troubles.report(path, f"{path} cannot be read: {exc.strerror or exc}.")
            return
        self._registry.add_member(follower)
        if not initial:
            self._recovery.after_new_generation(follower, now)
        self._ever_followed.add(path)
        self._troubles.clear(path)
        logger.info("following %s from byte %d", path, start.offset)

    def start_backlog_file(
        self, path: str, generation: OpenedGeneration, status: os.stat_result
    ) -> FileFollower:
        """The follower of a backlog file, from its checkpoint if it was begun before."""
        start = self.start_offset(path, generation.fd, status, initial=False)
        return FileFollower(
            path,
            generation.fd,
            status,
            start.offset,
            FollowerRole.BACKLOG,
            options=self._options.for_path(path, self._backlog_patterns),
            lineage=start.lineage,
            key=generation.key,
            decompressed=generation.decompressed,
        )

    def start_offset(
        self, path: str, fd: int, status: os.stat_result, *, initial: bool
    ) -> _StartPosition:
        size = status.st_size
        key = FileKey.of(status)
        checkpoint = self._spool.get_checkpoint(str(key))
        if checkpoint is not None:
            fingerprint = CheckpointFingerprint.from_bytes(checkpoint.fingerprint)
            if fingerprint is not None and describes(fingerprint, checkpoint.offset, fd, size):
                return _StartPosition(checkpoint.offset, checkpoint.path, resumed=True)
        for position in self._recovery.copy_candidates():
            if describes(position.fingerprint, position.offset, fd, size):
                logger.info("%s is a copy of a file read up to byte %d", path, position.offset)
                return _StartPosition(position.offset, path)
        if initial and self._from_end and not self._spool.checkpoints(path=path):
            # No generation of this log was read before: start at its end.
            fingerprint = CheckpointFingerprint(
                HeadFingerprint.of(read_head(fd)), Anchor.of(read_before(fd, size))
            )
            # Stored now, so a restart does not skip what is written meanwhile.
            self._spool.set_checkpoint(Checkpoint(str(key), path, size, fingerprint.to_bytes()))
            return _StartPosition(size, path)
        return _StartPosition(0, path)
