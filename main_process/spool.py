"""The durable send buffer: every chunk waits here, on disk, until the server acks it.

Owns one SQLite file (``<data-dir>/spool.sqlite3``) holding:

- ``chunks``: the chunks not yet acknowledged, one row each, ``seq`` strictly increasing
  and never reused (AUTOINCREMENT remembers the largest seq ever handed out, even after
  every row is deleted), so ``chunkId = "<clientId>:<seq>"`` is stable across resends;
- ``checkpoints``: per source file (key, e.g. ``"dev:ino"``), the path, the byte offset
  where the last committed chunk ended and the file's fingerprint;
- ``backlog_done``: fingerprints of backlog files uploaded completely;
- ``dead_letter``: chunks the server rejected permanently (``too_large``, ``invalid``),
  kept for the user, counted in status;
- ``counters``: totals of chunks and bytes acknowledged, across restarts.

Rules it keeps:

1. A chunk and the checkpoint (and backlog mark) it advances are committed in ONE
   transaction: after a crash either both exist or neither, so a restart resumes exactly
   after the last committed chunk, with no line twice and none skipped.
2. A chunk leaves ``chunks`` only by ``acknowledge`` (a positive ack) or ``dead_letter``
   (a permanent rejection, moved in one transaction). Nothing is deleted otherwise.
3. The spool is bounded by bytes (UTF-8 size of the text): ``append`` raises ``SpoolFull``
   when the bound would be exceeded, and sources pause (the file is the buffer). A
   single chunk larger than the bound is accepted when the spool is empty, so one huge
   line cannot block a source forever.
4. A damaged or unreadable file raises ``SpoolCorruptError`` or ``SpoolUnavailableError``
   with a one-sentence message. Nothing is deleted, moved or recreated: the main process
   stops with that sentence, and the file stays where it is for the user to inspect.

Durability. The journal is WAL with ``synchronous=NORMAL`` by default: a commit reaches
the operating system before ``append`` returns, so killing the process (kill -9, a
crash) at any instant loses no committed chunk. On power loss or an OS crash, the last
few commits may be rolled back (the database stays consistent, and a chunk rolls back
with its checkpoint, so the lines are read again). The one hazard would be a chunk that
was already sent and then rolled back: its seq would be handed out again for different
text. ``sync()`` closes that gap: it forces everything committed so far to stable storage
with one fsync, and is a no-op when nothing was appended since; the connection calls it
before sending chunks it has not sent before. ``durability="full"`` instead fsyncs every
commit (slower, for users who prefer it).

Threads. A ``Spool`` is used from one thread, the main process's asyncio thread (every
call is a short local transaction, a few milliseconds at most for a 512 KiB chunk).
sqlite3's ``check_same_thread`` stays on, so use from another thread raises instead of
corrupting state. ``stats()`` is O(1): counters live in memory, loaded once at open and
updated only after each transaction commits.

Must not: read log files, talk to the server, or decide when to send or retry.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from main_process.disk_reserve import DiskReserve

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_SCHEMA_VERSION = 2
# Version 2: ``missing_since`` on checkpoints and backlog marks (``forget_missing``).
_MIGRATIONS = {
    1: "ALTER TABLE checkpoints ADD COLUMN missing_since REAL;"
    " ALTER TABLE backlog_done ADD COLUMN missing_since REAL;",
}
# 64 KiB chunks and larger are stored mostly on overflow pages; bigger pages mean fewer
# page headers and B-tree pointers per chunk. Only effective when the file is created.
_PAGE_SIZE = 16384
# Checkpoint the WAL into the database every ~16 MiB instead of every ~4 MiB: fewer,
# larger copies, and chunks acknowledged before a checkpoint are never copied at all.
_WAL_AUTOCHECKPOINT_PAGES = 1024
# After a checkpoint the WAL file is truncated back to this size instead of staying at
# its high-water mark.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
_BUSY_TIMEOUT_SECONDS = 5.0
_SMALL_FILESYSTEM = 1024 * 1024 * 1024


def _filesystem_size(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).total
    except OSError:
        return _SMALL_FILESYSTEM


def _disk_margin(directory: Path) -> int:
    """Free disk the spool leaves alone when growing: room for its WAL and for draining."""
    return min(64 * 1024 * 1024, _filesystem_size(directory) // 4)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    source_path TEXT,
    source_offset INTEGER,
    byte_len INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    source_path TEXT,
    source_offset INTEGER,
    byte_len INTEGER NOT NULL,
    created_at REAL NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    dead_lettered_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    offset INTEGER NOT NULL,
    fingerprint BLOB,
    updated_at REAL NOT NULL,
    missing_since REAL
);
CREATE TABLE IF NOT EXISTS backlog_done (
    fingerprint BLOB PRIMARY KEY,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    finished_at REAL NOT NULL,
    missing_since REAL
);
CREATE TABLE IF NOT EXISTS counters (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sent_chunks INTEGER NOT NULL,
    sent_bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (id, sent_chunks, sent_bytes) VALUES (1, 0, 0);
"""

_CHUNK_COLUMNS = "seq, text, source_path, source_offset, byte_len, created_at"

# SQLite result codes (sqlite3.Error.sqlite_errorname) and what they mean for the user.
_CORRUPT_ERRORS = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
# Mistakes of the calling code (wrong thread, closed spool, constraint violated by a bad
# argument): re-raised as they are, not dressed up as a problem with the user's file.
_CALLER_ERRORS = (sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.IntegrityError)


class SpoolError(Exception):
    """The spool cannot do what was asked; ``str(error)`` is one sentence for the user."""


class SpoolCorruptError(SpoolError):
    """The spool file is damaged or is not a spool."""


class SpoolUnavailableError(SpoolError):
    """The spool file cannot be opened or written (permissions, disk full, locked, I/O)."""


class SpoolFull(SpoolError):
    """Appending would exceed the byte bound; retry once acknowledgements free room."""

    def __init__(self, needed_bytes: int, buffered_bytes: int, max_bytes: int) -> None:
        self.needed_bytes = needed_bytes
        self.buffered_bytes = buffered_bytes
        self.max_bytes = max_bytes
        super().__init__(
            f"The spool is full ({buffered_bytes} of {max_bytes} bytes used, "
            f"{needed_bytes} more needed)."
        )


class SpoolDiskFull(SpoolFull):
    """The disk under the spool is full. For producers it is the same backpressure as a
    full spool (pause, retry later): the log file keeps what could not be stored."""

    def __init__(self, message: str, buffered_bytes: int, max_bytes: int) -> None:
        super().__init__(0, buffered_bytes, max_bytes)
        self.message = message

    def __str__(self) -> str:
        return self.message


# Disk space set aside next to the spool. Deleting a row needs a little disk too (WAL
# frames), so on a disk filled to the last byte the spool could never drain and the
# client would be stuck forever; giving this file back lets acknowledgements through.
RESERVE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChunkSource:
    """The file a chunk was read from and the byte offset where the chunk starts."""

    path: str
    offset: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where reading of one file resumes. ``updated_at`` is set by the spool (ignored on write)."""

    key: str
    path: str
    offset: int
    fingerprint: bytes | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class ForgottenState:
    """What ``forget_missing`` deleted, and what is left."""

    checkpoints_forgotten: int
    backlog_forgotten: int
    checkpoints: int
    backlog_marks: int


@dataclass(frozen=True, slots=True)
class BacklogFile:
    """A backlog file uploaded completely, remembered by fingerprint across renames."""

    fingerprint: bytes
    path: str
    size: int


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk to append with ``append_many``."""

    text: str
    source: ChunkSource | None = None


@dataclass(frozen=True, slots=True)
class SpooledChunk:
    """A chunk in the spool, waiting for its acknowledgement."""

    seq: int
    chunk_id: str
    text: str
    source: ChunkSource | None
    byte_len: int
    created_at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A chunk the server rejected permanently, kept for the user."""

    seq: int
    chunk_id: str
    text: str
    source: ChunkSource | None
    byte_len: int
    created_at: float
    code: str
    message: str
    dead_lettered_at: float


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


class Spool:
    """The durable, bounded, ordered send buffer; see the module docstring."""

    def __init__(
        self,
        path: Path | str,
        client_id: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        durability: Literal["normal", "full"] = "normal",
        verify: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open (or create) the spool at ``path``.

        ``verify`` runs SQLite's ``quick_check`` so damage is reported now, as a
        ``SpoolCorruptError``, rather than in the middle of delivery.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._path = Path(path)
        self.directory = self._path.parent
        """Where the spool lives (the data dir), also for scratch files of the sources."""
        self._client_id = client_id
        self._max_bytes = max_bytes
        self._clock = clock
        self._full = False
        self._appended_since_sync = False
        self._connection = self._open(durability, verify)
        try:
            self._load_counters()
        except BaseException:
            self._connection.close()
            raise
        self._reserve = DiskReserve(self._path, RESERVE_BYTES)
        self._reserve.keep()

    # ----------------------------------------------------------------- open and close

    def _open(self, durability: str, verify: bool) -> sqlite3.Connection:
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolUnavailableError(
                f"Cannot create the directory of the spool {self._path}: {exc.strerror or exc}."
            ) from exc
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            connection = sqlite3.connect(
                self._path, isolation_level=None, timeout=_BUSY_TIMEOUT_SECONDS
            )
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from exc
        try:
            connection.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolUnavailableError(
                    f"The spool {self._path} cannot use write-ahead logging "
                    f"(journal mode {mode}); is it on a network file system?"
                )
            synchronous = "FULL" if durability == "full" else "NORMAL"
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            # On a small file system a 16 MiB WAL would itself be what fills the disk.
            small = _filesystem_size(self._path.parent) < _SMALL_FILESYSTEM
            checkpoint_pages = 64 if small else _WAL_AUTOCHECKPOINT_PAGES
            connection.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
            connection.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            connection.execute("PRAGMA foreign_keys = OFF")
            # Debian builds SQLite with secure_delete on: every acknowledged 512 KiB row
            # would be overwritten with zeros, doubling the writes and, on a full disk,
            # needing 512 KiB of WAL just to delete it. FAST zeroes what costs no I/O.
            connection.execute("PRAGMA secure_delete = FAST")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise SpoolError(
                    f"The spool {self._path} was written by a newer version of "
                    f"log-monitor (format {version}); upgrade, or move the file away."
                )
            if verify:
                problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise SpoolCorruptError(
                        f"The spool {self._path} is corrupt ({problems[0]}); "
                        "move it aside to start with an empty spool."
                    )
            # One transaction, so a crash cannot leave half a schema behind. An older
            # file is brought up to date in the same one.
            migrations = (
                "".join(_MIGRATIONS[step] for step in range(max(version, 1), _SCHEMA_VERSION))
                if version
                else ""
            )
            connection.executescript(
                f"BEGIN IMMEDIATE; {migrations} {_SCHEMA} "
                f"PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;"
            )
            self._check_schema(connection)
        except sqlite3.Error as exc:
            connection.close()
            raise self._translate(exc, "open") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        """A file that has our table names but other columns is not a spool we can use."""
        columns = [row[1] for row in connection.execute("PRAGMA table_info(chunks)")]
        expected = [name.strip() for name in _CHUNK_COLUMNS.split(",")]
        if columns != expected:
            raise SpoolCorruptError(
                f"The file {self._path} is not a log-monitor spool (unexpected chunks table)."
            )

    def _load_counters(self) -> None:
        try:
            row = self._connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(byte_len), 0) FROM chunks"
            ).fetchone()
            self._buffered_chunks, self._buffered_bytes = int(row[0]), int(row[1])
            row = self._connection.execute(
                "SELECT sent_chunks, sent_bytes FROM counters WHERE id = 1"
            ).fetchone()
            self._sent_chunks, self._sent_bytes = int(row[0]), int(row[1])
            row = self._connection.execute("SELECT COUNT(*) FROM dead_letter").fetchone()
            self._dead_lettered = int(row[0])
        except sqlite3.Error as exc:
            raise self._translate(exc, "read") from exc

    def close(self) -> None:
        """Close the database (the WAL is checkpointed by SQLite). Idempotent."""
        self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------------------- facts

    @property
    def path(self) -> Path:
        return self._path

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def stats(self) -> SpoolStats:
        return SpoolStats(
            buffered_chunks=self._buffered_chunks,
            buffered_bytes=self._buffered_bytes,
            sent_chunks=self._sent_chunks,
            sent_bytes=self._sent_bytes,
            dead_lettered=self._dead_lettered,
            full=self._full,
            max_bytes=self._max_bytes,
        )

    @property
    def buffered_chunks(self) -> int:
        """Chunks not yet acknowledged (``stats().buffered_chunks``, without the copy)."""
        return self._buffered_chunks

    def chunk_id(self, seq: int) -> str:
        return f"{self._client_id}:{seq}"

    def has_room(self, byte_len: int) -> bool:
        """Whether a chunk of ``byte_len`` UTF-8 bytes can be appended now.

        A refusal marks the spool ``full`` in stats, as a refused ``append`` does.
        """
        if self._fits(byte_len, 1):
            return True
        self._full = True
        return False

    def _fits(self, byte_len: int, count: int) -> bool:
        if self._buffered_chunks == 0 and count == 1:
            return True
        if self._buffered_bytes + byte_len > self._max_bytes:
            return False
        return self._disk_allows(byte_len)

    def _disk_allows(self, byte_len: int) -> bool:
        """Whether storing ``byte_len`` more leaves the disk its margin.

        Rows freed by acknowledgements leave pages inside the file that new rows reuse
        without any disk, so only growth beyond those pages is measured against the
        free space. Never filling the disk to the last byte means draining (which writes
        a little to the WAL) always has room.
        """
        try:
            free = shutil.disk_usage(self._path.parent).free
            free_pages = self._connection.execute("PRAGMA freelist_count").fetchone()[0]
        except (OSError, sqlite3.Error):
            return True  # no answer: let SQLite say whether it fits
        growth = max(0, byte_len * 2 - int(free_pages) * _PAGE_SIZE)
        return free - growth >= _disk_margin(self._path.parent)

    # ------------------------------------------------------------------------ writing

    def append(
        self,
        text: str,
        source: ChunkSource | None = None,
        *,
        checkpoint: Checkpoint | None = None,
        backlog_done: BacklogFile | None = None,
    ) -> SpooledChunk:
        """Store one chunk, and with it (same transaction) the checkpoint it advances and
        the mark of a backlog file it completes. Raises ``SpoolFull``."""
        return self.append_many(
            [NewChunk(text, source)], checkpoint=checkpoint, backlog_done=backlog_done
        )[0]

    def append_many(
        self,
        chunks: Sequence[NewChunk],
        *,
        checkpoint: Checkpoint | None = None,
        backlog_done: BacklogFile | None = None,
    ) -> list[SpooledChunk]:
        """Store several chunks in order, in one transaction with the checkpoint and mark.

        All or nothing: raises ``SpoolFull`` when they do not all fit.
        """
        sizes = [len(chunk.text.encode("utf-8")) for chunk in chunks]
        total = sum(sizes)
        if not self._fits(total, len(chunks)):
            self._full = True
            raise SpoolFull(total, self._buffered_bytes, self._max_bytes)
        now = self._clock()
        try:
            stored = self._insert(chunks, sizes, now, checkpoint, backlog_done)
        except SpoolDiskFull:
            # Something else filled the disk past the margin; give the WAL's space back
            # so that acknowledgements can still drain the spool.
            self._truncate_wal()
            raise
        self._buffered_chunks += len(stored)
        self._buffered_bytes += total
        self._full = False
        if stored:
            self._appended_since_sync = True
        return stored

    def _insert(
        self,
        chunks: Sequence[NewChunk],
        sizes: list[int],
        now: float,
        checkpoint: Checkpoint | None,
        backlog_done: BacklogFile | None,
    ) -> list[SpooledChunk]:
        stored: list[SpooledChunk] = []
        with self._write_transaction() as connection:
            for chunk, size in zip(chunks, sizes, strict=True):
                source = chunk.source
                cursor = connection.execute(
                    "INSERT INTO chunks (text, source_path, source_offset, byte_len, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        chunk.text,
                        None if source is None else source.path,
                        None if source is None else source.offset,
                        size,
                        now,
                    ),
                )
                seq = cursor.lastrowid
                assert seq is not None
                stored.append(SpooledChunk(seq, self.chunk_id(seq), chunk.text, source, size, now))
            if checkpoint is not None:
                self._write_checkpoint(connection, checkpoint, now)
            if backlog_done is not None:
                self._write_backlog_done(connection, backlog_done, now)
        return stored

    def acknowledge(self, seq: int) -> bool:
        """Delete an acknowledged chunk and count it as sent.

        Returns False (and changes nothing) when the chunk is not in the spool, e.g. a
        duplicate ack after a resend.
        """
        return self._draining(self._acknowledge, seq)

    def _draining(self, operation: Callable[..., bool], *args: Any) -> bool:
        """Run an operation that frees room; on a full disk give back the reserve first."""
        try:
            done = operation(*args)
        except SpoolDiskFull:
            # First give the WAL's disk back (its frames are copied into pages the
            # database already has), then, if that was not enough, the reserve.
            self._truncate_wal()
            try:
                done = operation(*args)
            except SpoolDiskFull:
                if not self._release_reserve():
                    raise
                done = operation(*args)
        if self._buffered_chunks == 0:
            self._reserve.keep()
        return done

    def _truncate_wal(self) -> None:
        try:
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            logger.warning("could not checkpoint the spool's WAL on a full disk: %s", exc)

    def _release_reserve(self) -> bool:
        if not self._reserve.release():
            return False
        logger.warning(
            "the disk under %s is full; released the spool's reserve to drain it", self._path
        )
        return True

    def _acknowledge(self, seq: int) -> bool:
        with self._write_transaction() as connection:
            # fetchall: the DELETE statement must be finished before COMMIT.
            rows = connection.execute(
                "DELETE FROM chunks WHERE seq = ? RETURNING byte_len", (seq,)
            ).fetchall()
            if not rows:
                return False
            byte_len = int(rows[0][0])
            connection.execute(
                "UPDATE counters SET sent_chunks = sent_chunks + 1,"
                " sent_bytes = sent_bytes + ? WHERE id = 1",
                (byte_len,),
            )
        self._buffered_chunks -= 1
        self._buffered_bytes -= byte_len
        self._sent_chunks += 1
        self._sent_bytes += byte_len
        self._full = False
        return True

    def dead_letter(self, seq: int, code: str, message: str = "") -> bool:
        """Move a permanently rejected chunk to the dead-letter table (one transaction).

        Returns False when the chunk is not in the spool.
        """
        return self._draining(self._dead_letter, seq, code, message)

    def _dead_letter(self, seq: int, code: str, message: str) -> bool:
        now = self._clock()
        with self._write_transaction() as connection:
            rows = connection.execute(
                f"DELETE FROM chunks WHERE seq = ? RETURNING {_CHUNK_COLUMNS}", (seq,)
            ).fetchall()
            if not rows:
                return False
            row = rows[0]
            connection.execute(
                f"INSERT INTO dead_letter ({_CHUNK_COLUMNS}, code, message, dead_lettered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, code, message, now),
            )
            byte_len = int(row[4])
        self._buffered_chunks -= 1
        self._buffered_bytes -= byte_len
        self._dead_lettered += 1
        self._full = False
        return True

    def set_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint on its own (a new file, a truncation, ``--from-end``)."""
        with self._write_transaction() as connection:
            self._write_checkpoint(connection, checkpoint, self._clock())

    def delete_checkpoint(self, key: str) -> bool:
        """Forget a file's checkpoint (the file is gone for good)."""
        with self._write_transaction() as connection:
            cursor = connection.execute("DELETE FROM checkpoints WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def mark_backlog_done(self, backlog_file: BacklogFile) -> None:
        """Record a backlog file as uploaded (for files that produced no chunk, e.g. empty;
        otherwise pass ``backlog_done`` to the append of its last chunk)."""
        with self._write_transaction() as connection:
            self._write_backlog_done(connection, backlog_file, self._clock())

    def forget_missing(
        self,
        present_keys: set[str],
        present_fingerprints: set[bytes],
        after_seconds: float,
    ) -> ForgottenState:
        """Keep the file state bounded: a checkpoint whose file (``key``) is not among
        ``present_keys``, or a backlog mark whose content is not among
        ``present_fingerprints``, is noted missing (from now); one missing for longer than
        ``after_seconds`` is deleted. One present again is no longer missing."""
        now = self._clock()
        with self._write_transaction() as connection:
            connection.execute(
                "CREATE TEMP TABLE IF NOT EXISTS present_keys (key TEXT PRIMARY KEY)"
            )
            connection.execute(
                "CREATE TEMP TABLE IF NOT EXISTS present_fingerprints (fingerprint BLOB PRIMARY KEY)"
            )
            connection.execute("DELETE FROM temp.present_keys")
            connection.execute("DELETE FROM temp.present_fingerprints")
            connection.executemany(
                "INSERT OR IGNORE INTO temp.present_keys VALUES (?)", [(k,) for k in present_keys]
            )
            connection.executemany(
                "INSERT OR IGNORE INTO temp.present_fingerprints VALUES (?)",
                [(f,) for f in present_fingerprints],
            )
            forgotten = []
            for table, column, present in (
                ("checkpoints", "key", "present_keys"),
                ("backlog_done", "fingerprint", "present_fingerprints"),
            ):
                seen = f"{column} IN (SELECT {column} FROM temp.{present})"
                connection.execute(f"UPDATE {table} SET missing_since = NULL WHERE {seen}")
                connection.execute(
                    f"UPDATE {table} SET missing_since = ? WHERE missing_since IS NULL AND NOT {seen}",
                    (now,),
                )
                cursor = connection.execute(
                    f"DELETE FROM {table} WHERE missing_since < ?", (now - after_seconds,)
                )
                forgotten.append(cursor.rowcount)
        checkpoints, marks = self.state_counts()
        return ForgottenState(forgotten[0], forgotten[1], checkpoints, marks)

    def state_counts(self) -> tuple[int, int]:
        """How many checkpoints and backlog marks the spool holds."""
        try:
            checkpoints = self._connection.execute("SELECT count(*) FROM checkpoints").fetchone()
            marks = self._connection.execute("SELECT count(*) FROM backlog_done").fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc, "read") from exc
        return int(checkpoints[0]), int(marks[0])

    def sync(self) -> None:
        """Force every committed chunk to stable storage (survives power loss).

        One fsync of the WAL, and only when something was appended since the last call.
        """
        if not self._appended_since_sync:
            return
        try:
            connection = self._connection
            connection.execute("PRAGMA synchronous = FULL")
            try:
                # A commit under synchronous=FULL fsyncs the WAL file, which holds every
                # earlier commit too. The transaction itself writes nothing new.
                with self._write_transaction() as transaction:
                    transaction.execute("UPDATE counters SET id = id WHERE id = 1")
            finally:
                connection.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise self._translate(exc, "write") from exc
        self._appended_since_sync = False

    @staticmethod
    def _write_checkpoint(
        connection: sqlite3.Connection, checkpoint: Checkpoint, now: float
    ) -> None:
        connection.execute(
            "INSERT INTO checkpoints (key, path, offset, fingerprint, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET path = excluded.path,"
            " offset = excluded.offset, fingerprint = excluded.fingerprint,"
            " updated_at = excluded.updated_at, missing_since = NULL",
            (checkpoint.key, checkpoint.path, checkpoint.offset, checkpoint.fingerprint, now),
        )

    @staticmethod
    def _write_backlog_done(
        connection: sqlite3.Connection, backlog_file: BacklogFile, now: float
    ) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO backlog_done (fingerprint, path, size, finished_at)"
            " VALUES (?, ?, ?, ?)",
            (backlog_file.fingerprint, backlog_file.path, backlog_file.size, now),
        )

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
        except _CALLER_ERRORS:
            raise
        except sqlite3.Error as exc:
            raise self._translate(exc, "write") from exc
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                connection.rollback()
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, _CALLER_ERRORS):
                raise self._translate(exc, "write") from exc
            raise

    # ------------------------------------------------------------------------ reading

    def pending(self, after_seq: int | None = None, limit: int = 64) -> list[SpooledChunk]:
        """Up to ``limit`` chunks with ``seq > after_seq`` (all when None), in seq order."""
        try:
            rows = self._connection.execute(
                f"SELECT {_CHUNK_COLUMNS} FROM chunks WHERE seq > ? ORDER BY seq LIMIT ?",
                (-1 if after_seq is None else after_seq, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc, "read") from exc
        return [
            SpooledChunk(
                seq=row[0],
                chunk_id=self.chunk_id(row[0]),
                text=row[1],
                source=None if row[2] is None else ChunkSource(row[2], row[3]),
                byte_len=row[4],
                created_at=row[5],
            )
            for row in rows
        ]

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead-lettered chunks, in seq order."""
        try:
            rows = self._connection.execute(
                f"SELECT {_CHUNK_COLUMNS}, code, message, dead_lettered_at FROM dead_letter"
                " ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc, "read") from exc
        return [
            DeadLetter(
                seq=row[0],
                chunk_id=self.chunk_id(row[0]),
                text=row[1],
                source=None if row[2] is None else ChunkSource(row[2], row[3]),
                byte_len=row[4],
                created_at=row[5],
                code=row[6],
                message=row[7],
                dead_lettered_at=row[8],
            )
            for row in rows
        ]

    def get_checkpoint(self, key: str) -> Checkpoint | None:
        try:
            row = self._connection.execute(
                "SELECT key, path, offset, fingerprint, updated_at FROM checkpoints WHERE key = ?",
                (key,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc, "read") from exc
        return None if row is None else _checkpoint_from_row(row)

    def checkpoints(self, path: str | None = None) -> list[Checkpoint]:
        """Every checkpoint, or those of one log ``path`` (the lineage they continue)."""
        select = "SELECT key, path, offset, fingerprint, updated_at FROM checkpoints"
        try:
            if path is None:
                rows = self._connection.execute(f"{select} ORDER BY key").fetchall()
            else:
                rows = self._connection.execute(
                    f"{select} WHERE path = ? ORDER BY key", (path,)
                ).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc, "read") from exc
        return [_checkpoint_from_row(row) for row in rows]

    def is_backlog_done(self, fingerprint: bytes) -> bool:
        try:
            row = self._connection.execute(
                "SELECT 1 FROM backlog_done WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc, "read") from exc
        return row is not None

    # ------------------------------------------------------------------------- errors

    def _translate(self, exc: sqlite3.Error, action: str) -> SpoolError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        detail = str(exc)
        if name in _CORRUPT_ERRORS or "malformed" in detail or "not a database" in detail:
            return SpoolCorruptError(
                f"The spool {self._path} is corrupt or not a spool database ({detail}); "
                "move it aside to start with an empty spool."
            )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return SpoolUnavailableError(
                f"The spool {self._path} is locked by another process ({detail})."
            )
        if name.startswith("SQLITE_FULL"):
            if action == "write":
                self._full = True
            return SpoolDiskFull(
                f"Cannot {action} the spool {self._path}: the disk is full.",
                getattr(self, "_buffered_bytes", 0),
                self._max_bytes,
            )
        return SpoolUnavailableError(f"Cannot {action} the spool {self._path} ({detail}).")


def _checkpoint_from_row(row: tuple[object, ...]) -> Checkpoint:
    key, path, offset, fingerprint, updated_at = row
    assert isinstance(key, str)
    assert isinstance(path, str)
    assert isinstance(offset, int)
    assert fingerprint is None or isinstance(fingerprint, bytes)
    assert isinstance(updated_at, float | int)
    return Checkpoint(key, path, offset, fingerprint, float(updated_at))
