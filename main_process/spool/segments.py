"""The spool's chunk texts, in append-only segment files beside its SQLite file.

Owns the directory ``<spool>-segments/`` and its files ``<number>.seg`` (0600): writing
the UTF-8 text of new chunks at the end of the active segment, reading one back by
(segment, offset, length), counting the live chunks of each segment, deleting a segment
once its last chunk is gone (acknowledged or dead-lettered) and it is no longer the one
being written, and at open deleting the segments no chunk refers to.

Why not in SQLite: a 512 KiB row is written twice (its WAL frames, then the checkpoint's
copy into the database file), and deleting it reads every overflow page back to free
it. End to end that was about 3 CPU seconds of every GB shipped. Here a text is written
once and a segment is deleted with one unlink.

Rules it keeps:

1. The spool commits the rows that point at texts only after the texts are on stable
   storage: ``stage`` writes them (and fsyncs the directory when it starts a segment),
   and its ``StagedTexts.sync`` fdatasyncs every segment they went to, on any thread
   (the spool runs it on a worker while the event loop goes on); ``append`` is both at
   once. So after a power loss a committed row never points at text that did not reach
   the disk: the row and its checkpoint are one transaction, and if it was lost the file
   is read again from the older checkpoint.
2. A new segment is started at every open: the end of the last one may hold texts whose
   rows were never committed (a crash between the two), and nothing refers to them.
3. A segment is counted live from the commit of its rows (``settle``) to the commit that
   deletes the last of them (``release``); only then is it deleted. The active one too,
   once it holds ``RECYCLE_BYTES``: acknowledged text never holds more of the disk than a
   segment or two. A segment holding texts staged and not yet settled is never deleted
   (acknowledgements go on while they are made durable).

Must not: know what a chunk, a checkpoint or a seq is (``spool.chunks`` does), or run
from another thread than the spool's (but ``StagedTexts.sync``, which touches only its
own descriptors).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ipc.atomic_file import fsync_directory
from main_process.spool.database import flush_data

logger = logging.getLogger("main_process.spool")

# Large enough that a busy spool opens a new file every second at most, small enough
# that one slow chunk keeps little acknowledged text on disk (a sixteenth of the file
# system at most: on a small one, acknowledged text must not be what fills it).
ROLL_BYTES = 64 * 1024 * 1024
MIN_ROLL_BYTES = 1024 * 1024
# The active segment, once every chunk in it is gone, is deleted when it holds at least
# this much (a new one is started by the next append), so that a spool that drains
# between appends does not create and delete a file for every chunk.
RECYCLE_BYTES = 1024 * 1024


def roll_bytes_for(filesystem_bytes: int) -> int:
    """How large a segment grows before the next is started, on a file system this size."""
    return max(MIN_ROLL_BYTES, min(ROLL_BYTES, filesystem_bytes // 16))


_NAME = re.compile(r"^(\d{8})\.seg$")
# Segments kept open for reading: chunks are read back in seq order, from one or two.
_OPEN_READERS = 4
_PRIVATE_FILE_MODE = 0o600
_BINARY = getattr(os, "O_BINARY", 0)
_flush_data = flush_data
"""How a segment is made durable (a module attribute: the tests count a segment's syncs
apart from the WAL's)."""
_write = os.write
"""How texts reach a segment (a module attribute: the tests put a full disk in its place)."""


class SegmentMissing(Exception):
    """A chunk points at a segment (or bytes of one) that is not there."""


class StagedTexts:
    """Texts written to their segments and not yet durable: where each one is, and the
    descriptors (duplicates, owned here) of the segments ``sync`` makes durable."""

    def __init__(self, locations: list[tuple[int, int]], to_sync: list[int]) -> None:
        self.locations = locations
        self._to_sync = to_sync

    def sync(self) -> None:
        """fdatasync every segment the texts went to, then close the descriptors
        (from any thread, once). Raises ``OSError``."""
        to_sync = self._take()
        try:
            for fd in to_sync:
                _flush_data(fd)
        finally:
            for fd in to_sync:
                os.close(fd)

    def discard(self) -> None:
        """Close the descriptors not synced yet (the texts will not be committed; the
        spool's thread, possibly while ``sync`` runs on another)."""
        for fd in self._take():
            os.close(fd)

    def _take(self) -> list[int]:
        # ``list.pop`` is atomic: a descriptor is taken (and closed) by one caller only.
        taken: list[int] = []
        with contextlib.suppress(IndexError):
            while True:
                taken.append(self._to_sync.pop(0))
        return taken


class SegmentFiles:
    """The segment files of one spool; see the module docstring."""

    def __init__(self, directory: Path, *, roll_bytes: int = ROLL_BYTES) -> None:
        self.directory = directory
        self._roll_bytes = roll_bytes
        self._live: dict[int, int] = {}
        self._active: int | None = None
        self._active_fd: int | None = None
        self._active_end = 0
        self._readers: dict[int, int] = {}
        self._finished: set[int] = set()
        self._next = 1
        # The segments of the texts staged and not settled yet (one append at a time).
        self._staged: set[int] = set()

    # ---------------------------------------------------------------- lifetime

    def open(self, live: Mapping[int, int]) -> None:
        """Start from the chunks the database holds (segment → how many): check that
        their segments exist, delete every other segment. Raises ``SegmentMissing``
        and ``OSError``."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        present = self._present()
        missing = sorted(set(live) - set(present))
        if missing:
            raise SegmentMissing(
                f"the segment {self._path(missing[0]).name} of waiting chunks is missing"
            )
        for number in sorted(set(present) - set(live)):
            # Texts of chunks acknowledged before a crash, or never committed.
            with contextlib.suppress(FileNotFoundError):
                present[number].unlink()
        self._live = {number: count for number, count in live.items() if count > 0}
        self._next = max([*present, *live, 0]) + 1

    def close(self) -> None:
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        self._close_active()

    # ----------------------------------------------------------------- writing

    def append(self, texts: Sequence[bytes]) -> list[tuple[int, int]]:
        """Write ``texts`` and make them durable (``stage``, then its ``sync`` on this
        thread); their (segment, offset) in order. Raises ``OSError``."""
        staged = self.stage(texts)
        staged.sync()
        return staged.locations

    def stage(self, texts: Sequence[bytes]) -> StagedTexts:
        """Write ``texts`` at the end of the active segment (starting new ones as it
        fills); they are durable once the result's ``sync`` has run. One staged append
        at a time: ``settle`` ends it.

        Raises ``OSError`` (a full disk: ``ENOSPC``); then nothing refers to what was
        written, and the next append writes over it."""
        locations: list[tuple[int, int]] = []
        # A descriptor of its own for each segment written here: the sync makes them
        # durable even if the segment is closed meanwhile (rolled over, or recycled).
        to_sync: list[int] = []
        written: int | None = None  # the segment this call last wrote to
        try:
            for text in texts:
                if self._active_fd is None or (
                    self._active_end > 0 and self._active_end + len(text) > self._roll_bytes
                ):
                    if written is not None and self._active_fd is not None:
                        to_sync.append(os.dup(self._active_fd))
                    self._start_segment()
                assert self._active is not None
                assert self._active_fd is not None
                locations.append((self._active, self._active_end))
                self._staged.add(self._active)
                written = self._active
                self._write_all(self._active_fd, text, self._active_end)
                self._active_end += len(text)
            if written is not None and self._active_fd is not None:
                to_sync.append(os.dup(self._active_fd))
        except BaseException:
            for fd in to_sync:
                os.close(fd)
            raise
        return StagedTexts(locations, to_sync)

    def _start_segment(self) -> None:
        self._finish_active()
        number = self._next
        path = self._path(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _BINARY, _PRIVATE_FILE_MODE)
        try:
            # The new name must survive a power loss before any row points into it.
            fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._next = number + 1
        self._active, self._active_fd, self._active_end = number, fd, 0

    def _finish_active(self) -> None:
        """The active segment will not be written again. Texts staged in it are synced
        by their ``StagedTexts``; it is deleted (when empty) only by ``settle``, after
        their commit."""
        if self._active is not None:
            self._finished.add(self._active)
        self._close_active()

    def _close_active(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active, self._active_fd = None, None

    @staticmethod
    def _write_all(fd: int, data: bytes, offset: int) -> None:
        os.lseek(fd, offset, os.SEEK_SET)
        view = memoryview(data)
        while view:
            written = _write(fd, view)
            view = view[written:]

    # ------------------------------------------------------------------ counting

    def settle(self, committed: Iterable[int] = ()) -> None:
        """After the commit (or the failed commit) of the rows of a staged append: count
        the rows pointing into ``committed`` (one per item), then delete the segments
        finished meanwhile that no row points into."""
        self._staged.clear()
        for number in committed:
            self._live[number] = self._live.get(number, 0) + 1
        for number in self._finished:
            if self._live.get(number, 0) == 0:
                self._delete(number)
        self._finished.clear()

    def release(self, segments: Iterable[int]) -> None:
        """Rows pointing into these segments (one per item) were deleted; a segment
        left with none, and not being written, is deleted."""
        for number in segments:
            count = self._live.get(number, 0) - 1
            if count > 0:
                self._live[number] = count
                continue
            self._live.pop(number, None)
            if number == self._active:
                if (
                    self._active_end >= min(RECYCLE_BYTES, self._roll_bytes)
                    and number not in self._staged
                ):
                    self._close_active()
                    self._delete(number)
            elif number not in self._finished:
                self._delete(number)

    def _delete(self, number: int) -> None:
        reader = self._readers.pop(number, None)
        if reader is not None:
            os.close(reader)  # Windows cannot delete an open file
        try:
            self._path(number).unlink(missing_ok=True)
        except OSError as exc:
            # Only disk space is lost; the next open deletes it again.
            logger.warning("could not delete the spool segment %s: %s", number, exc)

    # ----------------------------------------------------------------- reading

    def read(self, segment: int, offset: int, length: int) -> bytes:
        """The ``length`` bytes at ``offset`` of ``segment``; raises ``SegmentMissing``."""
        fd = self._readers.get(segment)
        if fd is None:
            try:
                fd = os.open(self._path(segment), os.O_RDONLY | _BINARY)
            except FileNotFoundError:
                raise SegmentMissing(
                    f"the segment {self._path(segment).name} of a waiting chunk is missing"
                ) from None
            if len(self._readers) >= _OPEN_READERS:
                os.close(self._readers.pop(next(iter(self._readers))))
            self._readers[segment] = fd
        data = _read_at(fd, length, offset)
        if len(data) != length:
            raise SegmentMissing(
                f"the segment {self._path(segment).name} ends before a waiting chunk"
            )
        return data

    # ------------------------------------------------------------------- facts

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:08d}.seg"

    def _present(self) -> dict[int, Path]:
        found: dict[int, Path] = {}
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match is not None:
                found[int(match.group(1))] = path
        return found

    @property
    def live_segments(self) -> dict[int, int]:
        """Segment → chunks committed in it and not deleted (a copy, for tests)."""
        return dict(self._live)


def _read_at(fd: int, length: int, offset: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
    parts: list[bytes] = []
    while length > 0:
        data = _read_some(fd, length, offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)


def _read_some(fd: int, length: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, length, offset)
    # Windows has no pread; only the spool's thread reads through this descriptor.
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows only
    return os.read(fd, length)  # pragma: no cover - Windows only
