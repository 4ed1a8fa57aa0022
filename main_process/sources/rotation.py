"""Rotation lineages: which files hold the earlier generations of a followed log, and in
which order they are read.

Owns: the rule that names a log's rotated siblings (``is_rotated_name``), opening a
generation whether plain or compressed (``open_generation``: ``.gz``, ``.bz2`` and ``.xz``
are decompressed into an anonymous temporary file that is read like any other), finding
which known read position describes a file (``known_offset``), and the recovery plan
(``plan_recovery``): given the candidate files of a lineage, newest first, which ones
still hold unread lines and from which byte.

Must not: keep state, touch the spool, or decide when to look. ``generation_recovery``
calls these when a lineage may have lost track of a generation and acts on the answer.

Theory of operation
-------------------
A *lineage* is the sequence of files that were, one after another, the log at one path
``P`` (the lineage's name). Every rotation scheme ends one generation and starts the next:

- rename and create: the old file moves to a sibling name (``P.1``, ``P-20261127``) and a
  new file appears at ``P``; a writer that has not reopened yet still appends to the old;
- the same with ``compress``: the renamed file is then compressed (``P.1.gz``) and
  unlinked, so only a descriptor opened before reads it as it was;
- copytruncate: ``P`` is copied to a sibling and truncated in place, and what was written
  after our last read is only in the copy;
- truncate in place: ``P`` is emptied; what was not read is gone.

**Order.** Each writer finishes with one generation before it writes the next, so if an
older generation's bytes are committed before any of a newer one's, every writer's lines
stay in order. ``lineage_reader`` reads a lineage's open generations oldest first, but
first takes their sizes newest first: whatever a newer one held at that moment was
written after everything the older ones hold at the (later) moment their sizes were
taken. An older generation is read up to its size and its complete lines are cut at once
(no linger); a newer one is read only when all older ones are caught up and committed
(the rule itself, without I/O: ``rotation_policy``).

**Recovery.** Generations can be missed: rotated while the client was down, rotated twice
between two looks (while reading is paused for a full spool, say), or the tail of a
truncated file that is only in its copy. They are looked for among ``P``'s siblings:
regular files in ``P``'s directory named ``P``'s name followed by ``.``, ``-`` or ``_``
(logrotate's numbers and dates, Python's ``TimedRotatingFileHandler``, compressed
forms), and any file there whose inode is a checkpoint's. Walking them newest first (by
modification time: a generation's last write comes before the next one's first), each is
*known* when a stored checkpoint or the position just left by a truncated follower
describes it (``file_identity.describes``): reading resumes there, and the walk stops,
because everything older was read. Until then each file is *unknown*: a whole generation
never seen, read from its first byte. When no file is known (the generation being read
was deleted by the rotation's count), only unknown files modified after ``not_before``
are taken, so that old rotated logs the client never followed are not uploaded.

What stays out of reach: a rotation that moves files to another directory (``olddir``)
or puts the date before the extension (``app-20261127.log``) is not recognised as a
sibling; such files hold nothing the client can find after a restart.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import lzma
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from main_process.sources.file_follower import FileTrouble, open_log_file
from main_process.sources.file_identity import (
    FINGERPRINT_SPAN,
    CheckpointFingerprint,
    FileKey,
    describes,
    read_exactly,
)

# Each reads the decompressed bytes of an open compressed file (callers close both). They
# get a file object, never a path: the file is opened by ``open_log_file`` like any other.
_DECOMPRESSORS: dict[str, Callable[[BinaryIO], io.BufferedIOBase]] = {
    ".gz": lambda compressed: gzip.GzipFile(fileobj=compressed, mode="rb"),
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
}
_SIBLING_SEPARATORS = (".", "-", "_")
_LISTING_ATTEMPTS = 5
_COPY_BUFFER = 1024 * 1024


NOTHING_LEFT = 2**63 - 1
"""A start offset for a generation with nothing left to read (see ``known_offset``)."""


@dataclass(frozen=True, slots=True)
class KnownPosition:
    """A place in some generation: ``fingerprint`` taken at ``offset``, that generation
    read up to ``reach`` (at least ``offset``), as of ``at_ns`` (wall clock)."""

    fingerprint: CheckpointFingerprint
    offset: int
    reach: int
    at_ns: int


@dataclass(frozen=True, slots=True)
class Candidate:
    """A file that may be a generation of a lineage."""

    path: str
    key: FileKey
    mtime_ns: int

    @property
    def compressed(self) -> bool:
        return compression_of(self.path) is not None


@dataclass(frozen=True, slots=True)
class Recovered:
    """A generation to read: ``candidate`` from byte ``start``."""

    candidate: Candidate
    start: int
    known: bool


class GenerationIncomplete(FileTrouble):
    """A compressed file that ends before its end marker: most likely still being
    written by the compressor (not worth a warning; the next look reads it whole)."""


class OpenedGeneration:
    """An open generation: a descriptor to read (the file itself, or a decompressed
    copy of it), its size, and the key of the file on disk."""

    def __init__(self, fd: int, size: int, key: FileKey, decompressed: bool) -> None:
        self.fd = fd
        self.size = size
        self.key = key
        self.decompressed = decompressed

    def close(self) -> None:
        os.close(self.fd)


def compression_of(path: str) -> str | None:
    """The compressed-file suffix of ``path`` that can be read (``.gz``…), or None."""
    for suffix in _DECOMPRESSORS:
        if path.endswith(suffix):
            return suffix
    return None


def is_rotated_name(base: str, name: str) -> bool:
    """Whether ``name`` looks like a rotated generation of the log named ``base``."""
    return (
        len(name) > len(base) + 1
        and name.startswith(base)
        and name[len(base)] in _SIBLING_SEPARATORS
    )


def find_candidates(
    lineage: str, checkpoint_keys: Iterable[str], elsewhere: Sequence[str] = ()
) -> list[Candidate]:
    """The siblings of ``lineage`` (a path) on disk, any file next to it whose ``dev:ino``
    is in ``checkpoint_keys``, and the files the globs ``elsewhere`` match (where a program
    moves its old logs, e.g. a game's ``logbackups/*.log``); the file at ``lineage``
    itself is not one.

    A directory listing taken while a rotation renames files can miss a file that moves
    from a name not listed yet to one listed already, so the directory is listed until
    two listings in a row agree.
    """
    keys = set(checkpoint_keys)
    previous = _list_candidates(lineage, keys, elsewhere)
    for _ in range(_LISTING_ATTEMPTS):
        current = _list_candidates(lineage, keys, elsewhere)
        if current == previous:
            break
        previous = current
    return previous


def _list_candidates(lineage: str, keys: set[str], elsewhere: Sequence[str]) -> list[Candidate]:
    directory, base = os.path.split(lineage)
    found: list[Candidate] = []
    for pattern in elsewhere:
        for path in glob.glob(pattern):
            try:
                status = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode) and path != lineage:
                found.append(Candidate(path, FileKey.of(status), status.st_mtime_ns))
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name == base:
                    continue
                try:
                    status = entry.stat(follow_symlinks=True)
                except OSError:
                    continue
                if not stat.S_ISREG(status.st_mode):
                    continue
                key = FileKey.of(status)
                if is_rotated_name(base, entry.name) or str(key) in keys:
                    found.append(Candidate(entry.path, key, status.st_mtime_ns))
    except OSError:
        pass
    unique = {candidate.path: candidate for candidate in found}
    return sorted(unique.values(), key=lambda candidate: candidate.path)


def open_generation(
    path: str, scratch_dir: str | os.PathLike[str], *, follow_symlink: bool = False
) -> OpenedGeneration:
    """Open a generation for reading (``open_log_file``: a symbolic link is refused unless
    ``follow_symlink``); a compressed one is decompressed whole into an anonymous temporary
    file in ``scratch_dir`` first (on disk, not in a tmpfs: rotated logs can be large).
    Raises ``FileTrouble`` with a sentence."""
    suffix = compression_of(path)
    compressed_fd, status = open_log_file(path, follow_symlink=follow_symlink)
    if suffix is None:
        return OpenedGeneration(compressed_fd, status.st_size, FileKey.of(status), False)
    try:
        with (
            os.fdopen(compressed_fd, "rb") as compressed,
            _DECOMPRESSORS[suffix](compressed) as source,
            tempfile.TemporaryFile(prefix="rotated-", dir=scratch_dir) as target,
        ):
            shutil.copyfileobj(source, target, _COPY_BUFFER)
            target.flush()
            fd = os.dup(target.fileno())
    except EOFError:
        raise GenerationIncomplete(
            f"{path} ends before its end marker (still being compressed, or damaged)."
        ) from None
    except (OSError, lzma.LZMAError) as exc:
        raise FileTrouble(f"{path} cannot be decompressed: {exc}.") from None
    return OpenedGeneration(fd, os.fstat(fd).st_size, FileKey.of(status), decompressed=True)


def read_compressed_head(
    path: str, *, follow_symlink: bool = False
) -> tuple[bytes, FileKey] | None:
    """The first decompressed bytes of a compressed file, and the key of the file read
    (None when unreadable, or a symbolic link that is not to be followed)."""
    suffix = compression_of(path)
    assert suffix is not None
    try:
        fd, status = open_log_file(path, follow_symlink=follow_symlink)
    except FileTrouble:
        return None
    try:
        with os.fdopen(fd, "rb") as compressed, _DECOMPRESSORS[suffix](compressed) as source:
            return source.read(FINGERPRINT_SPAN), FileKey.of(status)
    except (OSError, EOFError, lzma.LZMAError):
        return None


def known_offset(
    fd: int, size: int, mtime_ns: int, positions: Sequence[KnownPosition]
) -> int | None:
    """Where reading of the open file resumes, if some known position is in it; else
    None (a generation never seen).

    A position describes the file (``describes``: a copy of the generation it was taken
    in, or that file itself) → resume at the furthest ``reach`` of such positions, or
    ``NOTHING_LEFT`` when the file ends before it. A file shorter than a position whose
    head it shares, last modified before that position was taken, is an earlier
    snapshot of that generation (``copytruncate`` copies, then the writer appends more,
    which was read, then the file is truncated) → ``NOTHING_LEFT``.
    """
    head = read_exactly(fd, FINGERPRINT_SPAN, 0)
    best: int | None = None
    for position in positions:
        if not position.fingerprint.head.matches(head):
            continue
        if size < position.offset:
            if mtime_ns <= position.at_ns:
                best = NOTHING_LEFT
            continue
        if (best is None or position.reach > best) and describes(
            position.fingerprint, position.offset, fd, size
        ):
            best = position.reach
    if best is not None and best >= size:
        return NOTHING_LEFT
    return best


def may_be_known(head: bytes, positions: Sequence[KnownPosition]) -> bool:
    """Whether some position's head fingerprint matches ``head`` (a cheap first test)."""
    return any(p.fingerprint.head.matches(head) for p in positions)


def plan_recovery(
    newest_first: Sequence[Candidate],
    is_known: Callable[[Candidate], int | None],
    not_before_ns: int | None,
) -> list[Recovered]:
    """Which candidates to read, oldest first, from which byte (see the docstring).

    ``newest_first`` is sorted by modification time, newest first; ``is_known`` returns
    the offset a known position gives for a candidate, or None.
    """
    unknown: list[Candidate] = []
    for candidate in newest_first:
        offset = is_known(candidate)
        if offset is not None:
            plan = [Recovered(candidate, offset, known=True)]
            plan.extend(Recovered(c, 0, known=False) for c in reversed(unknown))
            return plan
        unknown.append(candidate)
    if not_before_ns is None:
        return []
    return [Recovered(c, 0, known=False) for c in reversed(unknown) if c.mtime_ns > not_before_ns]
