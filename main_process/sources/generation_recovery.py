"""Finding the generations of a followed log that were missed, and placing them in its
lineage before the newer ones (the state and I/O around ``rotation.plan_recovery``).

Owns: looking for missed generations when a new generation of a followed log appears
(rotated twice between two looks, while paused…), when a file was truncated (its previous
content's rest is in its ``copytruncate`` copy), and at start (rotated while the client
was down); the positions just left by truncated files (a copy made from them is read
from there); and *held* lineages: one with a generation still being compressed is not
read at all until that generation can be read, looked at again every ``_HOLD_RETRY``,
and given up on (the file skipped, and said so) after ``_HOLD_LIMIT``. A lineage is held
the same way when a listed file is no longer under its name when it is read (a rotation
renamed files since the listing), and when a look is asked for while it is held (the
looks run in the order asked). A generation found under two names (a rotated file and its
whole compressed copy, before the compressor unlinks the original) is read once.

Must not: read or commit (``lineage_reader`` does), or decide which files are followed
(``file_discovery``); it opens the missed generations and adds them to the registry.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from main_process.sources.file_follower import (
    ChunkerOptions,
    FileFollower,
    FileTrouble,
    FollowerRole,
    ReadPosition,
    Truncation,
)
from main_process.sources.file_identity import CheckpointFingerprint, FileKey, holds_copy_of
from main_process.sources.link_policy import LinkPolicy
from main_process.sources.rotation import (
    NOTHING_LEFT,
    Candidate,
    GenerationIncomplete,
    KnownPosition,
    OpenedGeneration,
    find_candidates,
    known_offset,
    may_be_known,
    open_generation,
    plan_recovery,
    read_compressed_head,
)
from main_process.sources.source_registry import FollowerRegistry, TroubleLog
from main_process.spool.chunks import Spool

logger = logging.getLogger("main_process.sources")

_RECENT_TRUNCATIONS = 16
# A lineage with a generation still being compressed is looked at again this often, and
# given up on (the file is skipped, and said so) after this long.
_HOLD_RETRY = 0.05
_HOLD_LIMIT = 60.0


class _RecoveryNotSettled(Exception):
    """A generation of the lineage cannot be read yet (still being compressed)."""


@dataclass(slots=True)
class _HeldLineage:
    """A lineage whose missed generations could not all be read yet: none of its files
    is read until every one of ``attempts`` succeeds (or ``_HOLD_LIMIT`` passes), so that
    nothing newer is committed before them."""

    attempts: list[Callable[[float, bool], None]]
    """Each finds and places some missed generations, and raises ``_RecoveryNotSettled``
    unless its second argument (the last attempt) is true. Oldest first: one asked for
    while the lineage is held (a new generation appeared meanwhile) runs after those
    before it, which may look for older generations than it does."""
    since: float
    next_try: float


@dataclass(slots=True)
class _Chosen:
    """A generation the recovery plan will read: from ``start``, once ``taken`` by its
    follower (which then owns the descriptor)."""

    path: str
    generation: OpenedGeneration
    start: int
    taken: bool = False

    def same_generation(self, other: OpenedGeneration) -> bool:
        """Whether ``other`` holds the same bytes as far as the shorter goes."""
        return holds_copy_of(self.generation.fd, other.fd, other.size)


class GenerationRecovery:
    """Missed generations of followed logs; see the module docstring."""

    def __init__(
        self,
        spool: Spool,
        registry: FollowerRegistry,
        troubles: TroubleLog,
        links: LinkPolicy,
        *,
        rotation_dirs: Mapping[str, Sequence[str]],
        options_for: Callable[[str], ChunkerOptions],
    ) -> None:
        self._spool = spool
        self._registry = registry
        self._troubles = troubles
        self._links = links
        self._rotation_dirs = rotation_dirs
        """Per log path: globs of where its earlier generations are moved (besides its
        own siblings), e.g. a game's ``logbackups/*.log``."""
        self._options_for = options_for
        self._held: dict[str, _HeldLineage] = {}
        self._recent_truncations: deque[ReadPosition] = deque(maxlen=_RECENT_TRUNCATIONS)

    def is_held(self, lineage: str) -> bool:
        return lineage in self._held

    def next_try(self) -> float | None:
        """When a held lineage is looked at again (None when none is held)."""
        return min((held.next_try for held in self._held.values()), default=None)

    def copy_candidates(self) -> list[ReadPosition]:
        """Positions a new file may be a copy of: every open file's, and those just left
        by truncated files."""
        positions = [f.position() for f in self._registry.by_key.values()]
        positions.extend(self._recent_truncations)
        return [p for p in positions if p.offset > 0]

    def after_new_generation(self, follower: FileFollower, now: float) -> None:
        """``follower`` is a new generation of a log being followed: first the ones
        missed since the previous one (rotated twice between two looks, while paused…)."""
        members = self._registry.lineages.get(follower.lineage, [])
        if len(members) < 2:
            return
        previous = members[members.index(follower) - 1]
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
                self._registry.add_member(missed, before=follower)

        self._recover(follower.lineage, now, place_missed)

    def after_truncation(self, follower: FileFollower, truncation: Truncation, now: float) -> None:
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
            missed[0].pending.put_first(follower.pending.take_all())
            for generation in missed:
                self._registry.add_member(generation, before=follower)
                logger.info("reading the rest of %s from %s", follower.lineage, generation.path)

        self._recover(follower.lineage, now, place_rest)

    def recover_rotated_while_down(self, now: float, covered: Callable[[str], bool]) -> None:
        """At start: for every log the spool has read before and the patterns still
        cover, read the generations rotated away while the client was down, oldest first,
        before its current file."""
        by_lineage: dict[str, float] = {}
        for checkpoint in self._spool.checkpoints():
            if covered(checkpoint.path):
                at = checkpoint.updated_at or 0.0
                by_lineage[checkpoint.path] = max(by_lineage.get(checkpoint.path, 0.0), at)
        for lineage, last_update in by_lineage.items():
            members = self._registry.lineages.get(lineage, [])
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
            logger.info("reading %s, rotated while the client was down", generation.path)
        # Generation order: files a glob matched under rotated names by modification time,
        # then the ones found now (already in order), the file at the path last.
        members = self._registry.lineages.get(lineage, [])
        at_path = [m for m in members if m.path == lineage]
        others = sorted(
            (m for m in members if m.path != lineage), key=lambda f: (f.mtime_ns, f.path)
        )
        if others or found or at_path:
            self._registry.set_lineage(lineage, others + found + at_path)

    def _recover(self, lineage: str, now: float, attempt: Callable[[float, bool], None]) -> None:
        """Place a lineage's missed generations now, or hold the lineage until they can
        all be read (``_HeldLineage``). A lineage held already keeps its earlier attempts:
        this one waits behind them (replacing them would forget the generations only they
        look for, e.g. those rotated while the client was down)."""
        held = self._held.get(lineage)
        if held is not None:
            held.attempts.append(attempt)
            return
        try:
            attempt(now, False)
        except _RecoveryNotSettled:
            self._held[lineage] = _HeldLineage([attempt], now, now + _HOLD_RETRY)

    def retry_held(self, now: float) -> None:
        for lineage, held in list(self._held.items()):
            if now < held.next_try:
                continue
            last_attempt = now - held.since >= _HOLD_LIMIT
            try:
                while held.attempts:
                    held.attempts[0](now, last_attempt)
                    held.attempts.pop(0)
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
        registry = self._registry
        candidates = [
            candidate
            for candidate in find_candidates(
                lineage, (c.key for c in checkpoints), self._rotation_dirs.get(lineage, ())
            )
            if not registry.is_open(candidate.key)
            and (not_before_ns is None or candidate.mtime_ns >= not_before_ns)
        ]
        if not candidates:
            return []
        candidates.sort(key=lambda c: (c.mtime_ns, c.path), reverse=True)
        members = registry.lineages.get(lineage, [])
        opened: dict[str, OpenedGeneration] = {}
        unreadable: set[str] = set()

        def copies_an_open_generation(generation: OpenedGeneration) -> bool:
            # Renamed, then compressed (or copied) while a follower had it open: that
            # follower reads it through its own descriptor.
            return any(m.holds_copy_of(generation.fd, generation.size) for m in members)

        def is_known(candidate: Candidate) -> int | None:
            if candidate.compressed:
                found = read_compressed_head(
                    candidate.path, follow_symlink=self._links.follows_every_link
                )
                if found is not None and found[1] != candidate.key:
                    _listing_changed(candidate.path, last_attempt)
                    return None
                if found is None or not may_be_known(found[0], known):
                    return None
            generation = self._open_generation(candidate, last_attempt)
            if generation is None:
                # Not readable: neither known nor to be read, or a copy finished meanwhile
                # would be read whole a second time.
                unreadable.add(candidate.path)
                return None
            opened[candidate.path] = generation
            if copies_an_open_generation(generation):
                return NOTHING_LEFT  # and everything older was read
            return known_offset(generation.fd, generation.size, candidate.mtime_ns, known)

        chosen: list[_Chosen] = []
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
                    generation = self._open_generation(step.candidate, last_attempt)
                    if generation is None:
                        continue
                    if copies_an_open_generation(generation):
                        generation.close()
                        continue
                if generation.key in registry.by_key:
                    generation.close()
                    continue
                twin = next((c for c in chosen if c.same_generation(generation)), None)
                if twin is None:
                    chosen.append(_Chosen(path, generation, step.start))
                    continue
                # One generation under two names: a rotated file and its compressed copy,
                # both there until the compressor unlinks the original. Read once, from
                # the longer (the original may have grown after it was copied).
                if generation.size <= twin.generation.size:
                    generation.close()
                    continue
                start = known_offset(generation.fd, generation.size, step.candidate.mtime_ns, known)
                twin.generation.close()
                twin.path, twin.generation = path, generation
                twin.start = twin.start if start is None else start
            for choice in chosen:
                generation = choice.generation
                if choice.start >= generation.size:
                    continue
                followers.append(
                    FileFollower(
                        choice.path,
                        generation.fd,
                        os.fstat(generation.fd),
                        choice.start,
                        FollowerRole.DETACHED,
                        options=self._options_for(lineage),
                        lineage=lineage,
                        key=generation.key,
                        decompressed=generation.decompressed,
                        opened_at=now,
                    )
                )
                choice.taken = True
        except BaseException:
            for follower in followers:
                follower.close()
            raise
        finally:
            for generation in opened.values():
                generation.close()
            for choice in chosen:
                if not choice.taken:
                    choice.generation.close()
        return followers

    def _open_generation(self, candidate: Candidate, last_attempt: bool) -> OpenedGeneration | None:
        path = candidate.path
        try:
            # A rotated sibling is never named by the user: a link there is refused
            # unless every link is followed.
            generation = open_generation(
                path, self._spool.directory, follow_symlink=self._links.follows_every_link
            )
        except GenerationIncomplete as incomplete:
            if not last_attempt:
                # Most likely still being compressed: look again in a moment.
                raise _RecoveryNotSettled(str(incomplete)) from None
            self._troubles.report(path, f"{incomplete} It is skipped.")
            return None
        except FileTrouble as trouble:
            if not _still_listed(candidate):
                _listing_changed(path, last_attempt)
                return None
            self._troubles.report(path, str(trouble))
            return None
        if generation.key != candidate.key:
            generation.close()
            _listing_changed(path, last_attempt)
            return None
        return generation


def _still_listed(candidate: Candidate) -> bool:
    """Whether the file listed as ``candidate`` is still under its name."""
    try:
        return FileKey.of(os.stat(candidate.path)) == candidate.key
    except OSError:
        return False


def _listing_changed(path: str, last_attempt: bool) -> None:
    """The file listed under ``path`` is no longer there: a rotation renamed files since
    the directory was listed, so the name may now hold a newer generation (or nothing),
    and reading it would skip the one listed. Look again in a moment (raises
    ``_RecoveryNotSettled``), unless this is the last attempt (then it is left out)."""
    if not last_attempt:
        raise _RecoveryNotSettled(f"{path} was renamed while its lineage was looked at")
