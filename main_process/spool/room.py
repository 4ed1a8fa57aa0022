"""How full the spool is: its counters, its byte bound and the disk under it.

Owns the spool's counters in memory (chunks and bytes waiting, chunks and bytes
acknowledged, chunks dead-lettered: loaded once at open, then moved only after each
transaction commits, so ``stats()`` is O(1)), the ``full`` flag (a producer was refused
room and none was freed since), the decision whether a chunk fits, and the disk reserve
that lets a spool on a full disk drain.

Rules it keeps:

1. The spool is bounded by bytes (UTF-8 size of the text): a chunk fits when the bytes
   waiting plus its own stay within the bound. A single chunk larger than the bound fits
   when the spool is empty, so one huge line cannot block a source forever.
2. Growth never fills the disk to the last byte: a chunk's text (written to a segment
   file) is measured against the free space, and a margin is left for the WAL and for
   draining.
3. An operation that frees room and finds the disk full first gives the WAL's disk back,
   then the reserve (``RESERVE_BYTES`` set aside beside the spool), and tries again;
   the reserve is taken again once the spool is empty.

Must not: run SQL of its own beyond counting at open, or decide what is stored
(``spool`` does).
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from main_process.spool.database import SpoolDiskFull, filesystem_size
from main_process.spool.disk_reserve import DiskReserve

_Result = TypeVar("_Result")

if TYPE_CHECKING:
    from main_process.spool.database import SpoolDatabase

logger = logging.getLogger("main_process.spool")

# Disk space set aside next to the spool. Deleting a row needs a little disk too (WAL
# frames), so on a disk filled to the last byte the spool could never drain and the
# client would be stuck forever; giving this file back lets acknowledgements through.
RESERVE_BYTES = 4 * 1024 * 1024


def disk_margin(directory: Path) -> int:
    """Free disk the spool leaves alone when growing: room for its WAL and for draining."""
    return min(64 * 1024 * 1024, filesystem_size(directory) // 4)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Counters for status. ``full``: a producer was refused room and none was freed since."""

    buffered_chunks: int
    buffered_bytes: int
    sent_chunks: int
    sent_bytes: int
    dead_lettered: int
    full: bool
    max_bytes: int


class SpoolRoom:
    """The spool's counters and bound; see the module docstring."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._path = path
        self.max_bytes = max_bytes
        self.full = False
        self.buffered_chunks = 0
        self.buffered_bytes = 0
        self.sent_chunks = 0
        self.sent_bytes = 0
        self.dead_lettered = 0
        self._database: SpoolDatabase | None = None
        self._reserve: DiskReserve | None = None

    def load(self, database: SpoolDatabase) -> None:
        """Count what the opened database holds, and set the disk reserve aside."""
        self._database = database
        try:
            row = database.connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(byte_len), 0) FROM chunks"
            ).fetchone()
            self.buffered_chunks, self.buffered_bytes = int(row[0]), int(row[1])
            row = database.connection.execute(
                "SELECT sent_chunks, sent_bytes FROM counters WHERE id = 1"
            ).fetchone()
            self.sent_chunks, self.sent_bytes = int(row[0]), int(row[1])
            row = database.connection.execute("SELECT COUNT(*) FROM dead_letter").fetchone()
            self.dead_lettered = int(row[0])
        except sqlite3.Error as exc:
            raise database.translate(exc, "read") from exc
        self._reserve = DiskReserve(self._path, RESERVE_BYTES)
        self._reserve.keep()

    def stats(self) -> SpoolStats:
        return SpoolStats(
            buffered_chunks=self.buffered_chunks,
            buffered_bytes=self.buffered_bytes,
            sent_chunks=self.sent_chunks,
            sent_bytes=self.sent_bytes,
            dead_lettered=self.dead_lettered,
            full=self.full,
            max_bytes=self.max_bytes,
        )

    # ------------------------------------------------------------ counters moved

    def appended(self, chunks: int, byte_len: int) -> None:
        self.buffered_chunks += chunks
        self.buffered_bytes += byte_len
        self.full = False

    def acknowledged(self, byte_len: int) -> None:
        self.buffered_chunks -= 1
        self.buffered_bytes -= byte_len
        self.sent_chunks += 1
        self.sent_bytes += byte_len
        self.full = False

    def dead_letter_moved(self, byte_len: int) -> None:
        self.buffered_chunks -= 1
        self.buffered_bytes -= byte_len
        self.dead_lettered += 1
        self.full = False

    # ------------------------------------------------------------------ the bound

    def fits(self, byte_len: int, count: int) -> bool:
        if self.buffered_chunks == 0 and count == 1:
            return True
        if self.buffered_bytes + byte_len > self.max_bytes:
            return False
        return self._disk_allows(byte_len)

    def _disk_allows(self, byte_len: int) -> bool:
        """Whether storing ``byte_len`` more leaves the disk its margin (rule 2)."""
        try:
            free = shutil.disk_usage(self._path.parent).free
        except OSError:
            return True  # no answer: let the write say whether it fits
        # The text goes to a segment file; its row is a few dozen bytes.
        return free - byte_len >= disk_margin(self._path.parent)

    # ---------------------------------------------------------------- draining

    def draining(self, operation: Callable[..., _Result], *args: Any) -> _Result:
        """Run an operation that frees room; on a full disk give back the reserve first."""
        assert self._database is not None
        assert self._reserve is not None
        try:
            done = operation(*args)
        except SpoolDiskFull:
            # First give the WAL's disk back (its frames are copied into pages the
            # database already has), then, if that was not enough, the reserve.
            self._database.truncate_wal()
            try:
                done = operation(*args)
            except SpoolDiskFull:
                if not self._release_reserve():
                    raise
                done = operation(*args)
        if self.buffered_chunks == 0:
            self._reserve.keep()
        return done

    def _release_reserve(self) -> bool:
        assert self._reserve is not None
        if not self._reserve.release():
            return False
        logger.warning(
            "the disk under %s is full; released the spool's reserve to drain it", self._path
        )
        return True
