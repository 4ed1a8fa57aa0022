"""Following one open log file: read its new bytes, cut chunks, commit them with checkpoints.

Owns: one file descriptor (opened once, so a rename or a delete does not stop reading the
rest), the ``LineChunker`` of that file, detecting a truncation (``copytruncate``,
truncate in place, a rewrite of the head), the file's role (live while a pattern matches
it, detached once none does: ``matched_at``, ``detach``) and when it last grew, and
opening log files (``open_log_file``: links refused unless allowed). Its parts: the
chunks cut but not yet in the spool, committed with the checkpoint each advances in ONE
``Spool.append`` (``pending_chunks``, the follower's ``pending``), and the head
fingerprint and recent raw bytes its checkpoints are fingerprinted with (``read_mirror``).

Must not: find files, decide which files to follow or when to stop, wait, or know about
asyncio. The parts of ``sources`` drive it: ``read`` when the file may have grown,
``poll`` at ``next_deadline``, ``pending.commit_all`` after either, ``flush_lines`` when a
newer generation of the same log has lines (see ``rotation``), ``finish`` when the file
will not grow again (rotated away and idle, or a backlog file at its end).

Lineage. A follower belongs to the *lineage* of the path its log was first followed at
(``rotation``): its checkpoints and its chunks' ``source.path`` name that path, not the
name the file has now (``app.log.1``, a temporary copy of ``app.log.1.gz``), so the
server sees the log the lines were written to and a restart knows which log a
checkpoint continues.

Offsets. ``TextChunk`` offsets are raw file bytes; the chunk's size in the spool is the
UTF-8 size of its decoded text (different when invalid bytes became U+FFFD). Checkpoints
always use the raw offsets. To compute the anchor of each checkpoint (the hash of the
bytes before its offset, see ``file_identity``) without reading the file again, the
follower keeps a mirror of the raw bytes from ``FINGERPRINT_SPAN`` before the chunker's
first held byte up to the last byte read.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
import sys
from dataclasses import dataclass
from typing import Literal, TypeAlias

from main_process.sources.file_identity import (
    CheckpointFingerprint,
    FileKey,
    HeadFingerprint,
    backlog_content_key,
    holds_copy_of,
    read_before,
    read_exactly,
    read_head,
)
from main_process.sources.line_chunker import (
    DEFAULT_LINGER,
    DEFAULT_MAX_CHUNK_BYTES,
    DEFAULT_PARTIAL_LINE_LINGER,
    LineChunker,
    TextChunk,
)
from main_process.sources.pending_chunks import PendingChunk, PendingChunks
from main_process.sources.read_mirror import ReadMirror
from main_process.sources.text_codecs import DEFAULT_ENCODING, FileEncoding
from main_process.sources.windows_files import SymlinkRefused, deletion_pending, open_shared
from main_process.spool.chunks import BacklogFile, Checkpoint, ChunkSource

READ_SIZE = 1024 * 1024
"""Bytes asked of the OS per read call."""

pread = os.pread
"""How a file's bytes are read (a module attribute: the tests put a read that can be held
in its place, to stand in for a stalled network file system)."""

SymlinkPolicy: TypeAlias = Literal["named", "never", "always"]
"""Which followed files may be symbolic links (the ``follow_symlinks`` setting;
``link_policy`` applies it, ``open_log_file`` enforces it): ``named``, only a path the user
named without a wildcard that was a link when first seen; ``never``; ``always``."""

# Where the OS has no O_NOFOLLOW (Windows), a link is refused by an lstat before the open.
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)


class FollowerRole(enum.Enum):
    LIVE = "live"
    """Matched by a source pattern: followed for as long as it is matched."""
    DETACHED = "detached"
    """Rotated or deleted away from every pattern: its rest is read, then it is closed."""
    BACKLOG = "backlog"
    """An older file uploaded once, to its end."""


class FileTrouble(Exception):
    """A file cannot be followed; ``str(error)`` is one sentence for the user."""


@dataclass(frozen=True, slots=True)
class ChunkerOptions:
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    linger: float = DEFAULT_LINGER
    partial_line_linger: float = DEFAULT_PARTIAL_LINE_LINGER
    encoding: FileEncoding = DEFAULT_ENCODING


@dataclass(frozen=True, slots=True)
class ReadPosition:
    """What was read of a file: its bytes ``[0, offset)``, with this head. Enough to
    recognise the same file, or a copy of it, and continue at ``offset``."""

    fingerprint: CheckpointFingerprint
    offset: int


@dataclass(frozen=True, slots=True)
class Truncation:
    """A file found shorter, or rewritten: where reading of its previous content stopped,
    and the modification time it had when it was last read (rotated copies of that
    content were made after it)."""

    position: ReadPosition
    mtime_ns: int


def symlink_refused(path: str) -> FileTrouble:
    """The sentence for a symbolic link that is not followed."""
    return FileTrouble(
        f"{path} is a symbolic link, which is not followed (its target is not read; "
        "see the follow_symlinks setting)."
    )


def open_log_file(path: str, *, follow_symlink: bool = False) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading; raise ``FileTrouble`` with a sentence when it cannot be.

    Every followed, rotated or backlog file is opened here (compressed generations too,
    before their bytes go to a decompressor). Unless ``follow_symlink``, a path whose last
    component is a symbolic link is refused with ``O_NOFOLLOW``: the kernel checks it in
    the same call that opens, so a link swapped in at any moment never gets its target
    read. (Links among the directories above are the path's own: whoever named it chose
    them.)

    ``O_NONBLOCK`` so that a FIFO matched by mistake does not block the event loop; it is
    refused right after, like any file that is not a regular file.

    On Windows the file is opened sharing delete access (``windows_files``), so the program
    writing it can still rename or delete it.
    """
    if sys.platform == "win32":  # pragma: no cover - Windows only (windows_files is tested)
        try:
            fd = open_shared(path, follow_symlink=follow_symlink)
        except SymlinkRefused:
            raise symlink_refused(path) from None
        except OSError as exc:
            raise _trouble_opening(path, exc) from None
        return _regular_file(path, fd)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if not follow_symlink:
        flags |= _O_NOFOLLOW
        if not _O_NOFOLLOW and os.path.islink(path):
            raise symlink_refused(path)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        # O_NOFOLLOW's refusal is ELOOP (EMLINK on FreeBSD); ELOOP is also a loop of
        # links among the directories, told apart by looking at the last component.
        if exc.errno in (errno.ELOOP, errno.EMLINK) and not follow_symlink and os.path.islink(path):
            raise symlink_refused(path) from None
        raise _trouble_opening(path, exc) from None
    return _regular_file(path, fd)


def _trouble_opening(path: str, exc: OSError) -> FileTrouble:
    if isinstance(exc, FileNotFoundError):
        return FileTrouble(f"{path} was deleted before it could be read.")
    if isinstance(exc, PermissionError):
        return FileTrouble(f"{path} cannot be read: permission denied.")
    return FileTrouble(f"{path} cannot be opened: {exc.strerror or exc}.")


def _regular_file(path: str, fd: int) -> tuple[int, os.stat_result]:
    """``fd`` and its status when it is a regular file; else closed, and one sentence."""
    status = os.fstat(fd)
    if stat.S_ISREG(status.st_mode):
        return fd, status
    os.close(fd)
    if stat.S_ISDIR(status.st_mode):
        raise FileTrouble(f"{path} is a directory, not a log file (use a glob like {path}/*.log).")
    raise FileTrouble(f"{path} is not a regular file.")


class FileFollower:
    """Reads one open file from ``start_offset`` on; see the module docstring."""

    def __init__(
        self,
        path: str,
        fd: int,
        status: os.stat_result,
        start_offset: int,
        role: FollowerRole,
        *,
        head: HeadFingerprint | None = None,
        options: ChunkerOptions = ChunkerOptions(),
        lineage: str | None = None,
        key: FileKey | None = None,
        decompressed: bool = False,
        opened_at: float | None = None,
        resumed: bool = False,
    ) -> None:
        self.path = path
        """The file's name now (for views and messages)."""
        self.lineage = lineage if lineage is not None else path
        """The path of the log this file is a generation of (see the module docstring)."""
        self.role = role
        self.key = key if key is not None else FileKey.of(status)
        self.decompressed = decompressed
        """``fd`` is a decompressed copy of the compressed file ``path``: it cannot grow."""
        self._fd: int | None = fd
        self._options = options
        self.size_seen = status.st_size
        self._mtime_seen = status.st_mtime_ns
        self.last_growth_at: float | None = opened_at
        """Clock time the file last grew (or was opened, or detached); for closing idle
        rotated files."""
        self.pending = PendingChunks(start_offset)
        self._invalid_before = 0
        self._bytes_read = 0
        # The codec waits for the file's first two bytes when it depends on them (a UTF-16
        # byte-order mark); ``read`` settles it once they are there.
        self._codec_settled = not options.encoding.needs_head or status.st_size >= 2
        self._chunker = self._new_chunker(start_offset, fd)
        self._mirror = ReadMirror(
            head if head is not None else HeadFingerprint.of(read_head(fd)),
            read_before(fd, start_offset),
            start_offset,
        )
        self.truncations = 0
        self.resumed = resumed
        """It started at its own checkpoint: the file the last run was reading."""
        self.finished = False
        """``finish`` was called: the file is read to its end and only commits remain."""

    # --------------------------------------------------------------------------- facts

    @property
    def key_text(self) -> str:
        return str(self.key)

    @property
    def committed_offset(self) -> int:
        """Where a restart would resume: the end of the last chunk in the spool."""
        return self.pending.committed_offset

    @property
    def read_offset(self) -> int:
        return self._chunker.next_offset

    @property
    def invalid_bytes_replaced(self) -> int:
        return self._invalid_before + self._chunker.invalid_bytes_replaced

    @property
    def bytes_read(self) -> int:
        return self._bytes_read

    def position(self) -> ReadPosition:
        """What was read so far (every byte read, held in the chunker or not)."""
        offset = self._chunker.next_offset
        return ReadPosition(self._mirror.fingerprint_at(offset), offset)

    def holds_copy_of(self, fd: int, size: int) -> bool:
        """Whether the open file ``fd`` of ``size`` bytes holds this file's bytes, or a
        prefix of them (``file_identity.holds_copy_of``)."""
        return holds_copy_of(self._require_open(), fd, size)

    def next_deadline(self) -> float | None:
        return self._chunker.next_deadline()

    @property
    def holds_lines(self) -> bool:
        """Whether complete lines wait in the chunker (for room to send, or the linger)."""
        return self._chunker.holds_lines

    @property
    def mtime_ns(self) -> int:
        """The modification time seen at the last ``read``."""
        return self._mtime_seen

    def current_size(self) -> int:
        """The file's size now (one ``fstat``)."""
        return self.status().st_size

    def status(self) -> os.stat_result:
        """The open file's ``fstat``."""
        return os.fstat(self._require_open())

    # ------------------------------------------------------------------------ matching

    def matched_at(self, path: str) -> None:
        """A source pattern matches the file, at ``path`` (its name may have changed): it
        is followed live again if it was detached."""
        self.path = path
        if self.role is FollowerRole.DETACHED:
            self.role = FollowerRole.LIVE

    def detach(self, now: float) -> None:
        """No source pattern matches the file any more: its rest is read, and it is closed
        once it has been idle for a while (counted from ``now``)."""
        self.role = FollowerRole.DETACHED
        self.last_growth_at = now

    def idle_since(self, now: float) -> float:
        """Clock time the file last grew (``now`` when that is not known)."""
        return self.last_growth_at if self.last_growth_at is not None else now

    # ------------------------------------------------------------------------- reading

    def read(
        self, budget: int, now: float, limit: int | None = None, *, send_now: bool = False
    ) -> tuple[int, Truncation | None]:
        """Read up to ``budget`` new bytes (and not beyond offset ``limit``, when given)
        and cut the chunks that are ready: with ``send_now`` (the delivery window has
        room) every complete line, once everything of this call is read.

        Returns the number of bytes read and, when the file turned out to be truncated or
        rewritten, where its previous content was left: then everything read before was
        cut into chunks, partial line included, reading restarts at 0, and nothing of the
        new content is read in this call, so that the caller can first read the rest of
        the previous content from wherever it went (a ``copytruncate`` copy).
        """
        fd = self._require_open()
        status = os.fstat(fd)
        size = status.st_size
        changed = size != self.size_seen or status.st_mtime_ns != self._mtime_seen
        mtime_before = self._mtime_seen
        self._mtime_seen = status.st_mtime_ns
        if size < self._chunker.next_offset or (
            changed and not self._mirror.same_content(fd, self._chunker.next_offset)
        ):
            # Shorter than what was read, or rewritten (possibly to the same size or
            # longer) between two looks: what was read is all there is of the old content.
            position = self._restart_after_truncation()
            self.last_growth_at = now
            return 0, Truncation(position, mtime_before)
        if size != self.size_seen:
            self.size_seen = size
            self.last_growth_at = now
        if not self._codec_settled and size >= 2:
            self._settle_codec(fd)
        end = size if limit is None else min(size, limit)
        if end <= self._chunker.next_offset:
            self._take(self._chunker.poll(now, send_now=send_now))
            return 0, None
        total = 0
        while total < budget:
            offset = self._chunker.next_offset
            if offset >= end:
                break
            data = pread(fd, min(READ_SIZE, budget - total, end - offset), offset)
            if not data:
                break
            total += len(data)
            self._mirror.extend(data)
            self._take(self._chunker.feed(data, offset, now))
        if send_now:
            # After the whole read, not after each block of it: a burst read in several
            # blocks still makes full-size chunks, not a small one per block.
            self._take(self._chunker.poll(now, send_now=True))
        self._bytes_read += total
        self.size_seen = max(self.size_seen, self._chunker.next_offset)
        return total, None

    def at_end(self) -> bool:
        """Whether every byte of the file (as of the last ``read``) was read."""
        return self._chunker.next_offset >= self.size_seen

    def poll(self, now: float) -> None:
        self._take(self._chunker.poll(now))

    def flush_lines(self, *, partial_line: bool) -> None:
        """Cut every complete line held now, without waiting for the linger, and the
        partial last line too when ``partial_line`` (its writer has moved on)."""
        self._take(self._chunker.flush() if partial_line else self._chunker.flush_lines())

    def finish(self, backlog_done: BacklogFile | None = None) -> None:
        """The file will not grow again: cut everything held, partial line included.

        ``backlog_done`` goes with the last chunk (or alone, if there is none), so the
        mark and the last bytes of the file are committed together.
        """
        self._take(self._chunker.flush())
        self.finished = True
        if backlog_done is not None:
            self.pending.mark_backlog_done(backlog_done)

    def content_key(self) -> bytes:
        """The backlog content key of the bytes read so far (see ``file_identity``)."""
        return backlog_content_key(self._require_open(), self._chunker.next_offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holds_a_deleted_name(self) -> bool:
        """Whether keeping the file open keeps its name taken although it was deleted
        (Windows' pending deletion: the program cannot create its log anew until the
        last handle closes); then it is closed as soon as it is read, not once idle."""
        if sys.platform != "win32" or self._fd is None or self.decompressed:
            return False
        return deletion_pending(self._fd)  # pragma: no cover - Windows only

    def is_unlinked(self) -> bool:
        """Whether the file has no name left (deleted for good)."""
        if self._fd is None:
            return False
        if self.decompressed:
            try:
                return FileKey.of(os.stat(self.path)) != self.key
            except OSError:
                return True
        if sys.platform == "win32":  # pragma: no cover - Windows only
            return deletion_pending(self._fd)
        return os.fstat(self._fd).st_nlink == 0

    # ------------------------------------------------------------------------ internals

    def _require_open(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"the follower of {self.path} is closed")
        return self._fd

    def _new_chunker(self, start_offset: int, fd: int | None = None) -> LineChunker:
        encoding = self._options.encoding
        head = read_exactly(fd, 2, 0) if fd is not None and encoding.needs_head else b""
        return LineChunker(
            start_offset,
            max_chunk_bytes=self._options.max_chunk_bytes,
            linger=self._options.linger,
            partial_line_linger=self._options.partial_line_linger,
            codec=encoding.for_file(head),
        )

    def _settle_codec(self, fd: int) -> None:
        """The file has its first two bytes now: choose the codec by them (before any
        byte was fed, the chunker is made anew; later it was chosen already)."""
        self._codec_settled = True
        if self._chunker.next_offset == 0:
            self._chunker = self._new_chunker(0, fd)

    def _restart_after_truncation(self) -> ReadPosition:
        position = self.position()
        self._take(self._chunker.flush())
        self._invalid_before += self._chunker.invalid_bytes_replaced
        self._chunker = self._new_chunker(0)
        self._codec_settled = not self._options.encoding.needs_head
        self._mirror.reset()
        self.size_seen = 0
        self._mtime_seen = -1
        self.truncations += 1
        return position

    def _take(self, chunks: list[TextChunk]) -> None:
        if not chunks:
            return
        for chunk in chunks:
            fingerprint = self._mirror.fingerprint_at(chunk.end_offset)
            self.pending.append(
                PendingChunk(
                    chunk.text,
                    ChunkSource(self.lineage, chunk.start_offset),
                    Checkpoint(
                        self.key_text, self.lineage, chunk.end_offset, fingerprint.to_bytes()
                    ),
                    chunk.raw_length,
                )
            )
        self._mirror.keep_from(self._chunker.emitted_offset)
