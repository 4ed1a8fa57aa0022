"""The spool's SQLite file: opening it, its schema, its transactions and its errors.

Owns the one ``sqlite3.Connection`` of ``<data-dir>/spool.sqlite3``: the pragmas it runs
under (WAL, ``synchronous``, page size, checkpoint sizes, ``secure_delete``), the schema
and its migrations (created or brought up to date in one transaction), the check that an
existing file is a spool at all, the explicit write transactions every change goes
through, the fsync of ``sync()`` (and ``WalFlush``, the same from another thread), and
the translation of ``sqlite3`` errors into the spool's one-sentence errors.

Rules it keeps:

1. A damaged or unreadable file raises ``SpoolCorruptError`` or ``SpoolUnavailableError``
   with a one-sentence message. Nothing is deleted, moved or recreated.
2. Mistakes of the calling code (wrong thread, closed spool, a constraint violated by a
   bad argument) are re-raised as they are, not dressed up as a problem with the file.
3. A full disk is ``SpoolDiskFull``, which for producers is the backpressure of a full
   spool; a write refused for it marks the spool full (``SpoolRoom.full``).

Must not: know what a chunk, a checkpoint or a counter means (``spool``,
``spool.file_state`` and ``spool.room`` do); decide anything about room or delivery.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from main_process.spool.room import SpoolRoom

logger = logging.getLogger("main_process.spool")

_SCHEMA_VERSION = 3
# Version 2: ``missing_since`` on checkpoints and backlog marks (``forget_missing``).
# Version 3: a chunk's text in a segment file (``spool.segments``); rows of version 2
# keep theirs in ``text``.
_MIGRATIONS = {
    1: "ALTER TABLE checkpoints ADD COLUMN missing_since REAL;"
    " ALTER TABLE backlog_done ADD COLUMN missing_since REAL;",
    2: "ALTER TABLE chunks ADD COLUMN segment INTEGER;"
    " ALTER TABLE chunks ADD COLUMN segment_offset INTEGER;",
}
# Spools of format 2 hold 512 KiB texts in their rows, mostly on overflow pages, where
# bigger pages mean fewer page headers and pointers (rows of format 3 are small). Only
# effective when the file is created.
PAGE_SIZE = 16384
# Checkpoint the WAL into the database every ~16 MiB instead of every ~4 MiB: fewer,
# larger copies, and chunks acknowledged before a checkpoint are never copied at all.
_WAL_AUTOCHECKPOINT_PAGES = 1024
# After a checkpoint the WAL file is truncated back to this size instead of staying at
# its high-water mark.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
_BUSY_TIMEOUT_SECONDS = 5.0
SMALL_FILESYSTEM = 1024 * 1024 * 1024


def filesystem_size(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).total
    except OSError:
        return SMALL_FILESYSTEM


_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    source_path TEXT,
    source_offset INTEGER,
    byte_len INTEGER NOT NULL,
    created_at REAL NOT NULL,
    segment INTEGER,
    segment_offset INTEGER
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

# A chunk as ``dead_letter`` holds it, and as ``chunks`` does before the text's segment.
CHUNK_COLUMNS = "seq, text, source_path, source_offset, byte_len, created_at"
# ``text`` is empty when ``segment`` is set: the text is ``byte_len`` bytes at
# ``segment_offset`` of that segment file (``spool.segments``).
SEGMENT_COLUMNS = "segment, segment_offset"

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


flush_data = getattr(os, "fdatasync", os.fsync)
"""fdatasync where there is one (not on macOS or Windows, where fsync is what SQLite
uses): the spool's WAL (``WalFlush``) and its segment files are made durable with it."""


@dataclass(frozen=True, slots=True)
class WalFlush:
    """Makes every transaction committed before it was made durable, from any thread:
    one fdatasync of the WAL file through a descriptor of its own. That is the fsync a
    commit under ``synchronous=FULL`` does; commits already copied into the database by
    a checkpoint were made durable by that checkpoint (``synchronous=NORMAL`` syncs the
    database file after each one). ``through_seq`` is the newest chunk it covers."""

    wal_path: Path
    through_seq: int

    def run(self) -> None:
        """Raises ``OSError`` when the WAL cannot be opened (then ``sync()`` instead)."""
        fd = os.open(self.wal_path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            flush_data(fd)
        finally:
            os.close(fd)


class SpoolDatabase:
    """The spool's SQLite connection, opened, checked and migrated; see the module docstring."""

    def __init__(
        self, path: Path, room: SpoolRoom, *, durability: str = "normal", verify: bool = True
    ) -> None:
        """Open (or create) the file. ``room`` is told when a write finds the disk full,
        and says how full the spool was for the error."""
        self.path = path
        self._room = room
        self.connection = self._open(durability, verify)

    def _open(self, durability: str, verify: bool) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolUnavailableError(
                f"Cannot create the directory of the spool {self.path}: {exc.strerror or exc}."
            ) from exc
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
            connection = sqlite3.connect(
                self.path, isolation_level=None, timeout=_BUSY_TIMEOUT_SECONDS
            )
        except sqlite3.Error as exc:
            raise self.translate(exc, "open") from exc
        try:
            connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SpoolUnavailableError(
                    f"The spool {self.path} cannot use write-ahead logging "
                    f"(journal mode {mode}); is it on a network file system?"
                )
            synchronous = "FULL" if durability == "full" else "NORMAL"
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            # On a small file system a 16 MiB WAL would itself be what fills the disk.
            small = filesystem_size(self.path.parent) < SMALL_FILESYSTEM
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
                    f"The spool {self.path} was written by a newer version of "
                    f"log-monitor (format {version}); upgrade, or move the file away."
                )
            if verify:
                problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise SpoolCorruptError(
                        f"The spool {self.path} is corrupt ({problems[0]}); "
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
            raise self.translate(exc, "open") from exc
        except BaseException:
            connection.close()
            raise
        return connection

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        """A file that has our table names but other columns is not a spool we can use."""
        columns = [row[1] for row in connection.execute("PRAGMA table_info(chunks)")]
        expected = [name.strip() for name in f"{CHUNK_COLUMNS}, {SEGMENT_COLUMNS}".split(",")]
        if columns != expected:
            raise SpoolCorruptError(
                f"The file {self.path} is not a log-monitor spool (unexpected chunks table)."
            )

    def close(self) -> None:
        """Close the database (the WAL is checkpointed by SQLite). Idempotent."""
        self.connection.close()

    # ------------------------------------------------------------------ reading

    def read_all(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of one query, a failure said as a spool error."""
        try:
            return self.connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise self.translate(exc, "read") from exc

    def read_one(self, sql: str, parameters: tuple[Any, ...] = ()) -> Any:
        """The first row of one query (None when there is none)."""
        try:
            return self.connection.execute(sql, parameters).fetchone()
        except sqlite3.Error as exc:
            raise self.translate(exc, "read") from exc

    # ------------------------------------------------------------------ writing

    @contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self.connection
        try:
            connection.execute("BEGIN IMMEDIATE")
        except _CALLER_ERRORS:
            raise
        except sqlite3.Error as exc:
            raise self.translate(exc, "write") from exc
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                connection.rollback()
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, _CALLER_ERRORS):
                raise self.translate(exc, "write") from exc
            raise

    @property
    def wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def sync(self) -> None:
        """Force every committed transaction to stable storage with one fsync."""
        try:
            connection = self.connection
            connection.execute("PRAGMA synchronous = FULL")
            try:
                # A commit under synchronous=FULL fsyncs the WAL file, which holds every
                # earlier commit too. The transaction itself writes nothing new.
                with self.write_transaction() as transaction:
                    transaction.execute("UPDATE counters SET id = id WHERE id = 1")
            finally:
                connection.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise self.translate(exc, "write") from exc

    def truncate_wal(self) -> None:
        """Give the WAL's disk back: its frames are copied into pages the database has."""
        try:
            self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            logger.warning("could not checkpoint the spool's WAL on a full disk: %s", exc)

    # ------------------------------------------------------------------- errors

    def translate(self, exc: sqlite3.Error, action: str) -> SpoolError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        detail = str(exc)
        if name in _CORRUPT_ERRORS or "malformed" in detail or "not a database" in detail:
            return SpoolCorruptError(
                f"The spool {self.path} is corrupt or not a spool database ({detail}); "
                "move it aside to start with an empty spool."
            )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return SpoolUnavailableError(
                f"The spool {self.path} is locked by another process ({detail})."
            )
        if name.startswith("SQLITE_FULL"):
            if action == "write":
                self._room.full = True
            return SpoolDiskFull(
                f"Cannot {action} the spool {self.path}: the disk is full.",
                self._room.buffered_bytes,
                self._room.max_bytes,
            )
        return SpoolUnavailableError(f"Cannot {action} the spool {self.path} ({detail}).")
