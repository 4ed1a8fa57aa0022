"""Where reading of each followed file resumes, kept in the spool's database.

Owns two tables of the spool file:

- ``checkpoints``: per source file (key, e.g. ``"dev:ino"``), the path, the byte offset
  where the last committed chunk ended and the file's fingerprint;
- ``backlog_done``: fingerprints of backlog files uploaded completely.

Rules it keeps:

1. A checkpoint or backlog mark that a chunk advances is written inside the chunk's own
   transaction (``write_checkpoint``/``write_backlog_done`` take that transaction's
   connection), so after a crash both exist or neither.
2. The state stays bounded: a checkpoint or mark whose file is gone is noted missing, and
   deleted once missing longer than the caller says (``forget_missing``); one present
   again is no longer missing.

Must not: touch the ``chunks`` table or the counters (``spool``/``spool.room`` do), or
read log files.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from main_process.spool.database import SpoolDatabase


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


_CHECKPOINT_COLUMNS = "key, path, offset, fingerprint, updated_at"


class SpoolFileState:
    """The checkpoints and backlog marks of the spool's database; see the module docstring."""

    def __init__(self, database: SpoolDatabase, clock: Callable[[], float]) -> None:
        self._database = database
        self._clock = clock

    # ------------------------------------------------------------------ writing

    def set_checkpoint(self, checkpoint: Checkpoint) -> None:
        with self._database.write_transaction() as connection:
            self.write_checkpoint(connection, checkpoint, self._clock())

    def delete_checkpoint(self, key: str) -> bool:
        with self._database.write_transaction() as connection:
            cursor = connection.execute("DELETE FROM checkpoints WHERE key = ?", (key,))
        return cursor.rowcount > 0

    def mark_backlog_done(self, backlog_file: BacklogFile) -> None:
        with self._database.write_transaction() as connection:
            self.write_backlog_done(connection, backlog_file, self._clock())

    def forget_missing(
        self,
        present_keys: set[str],
        present_fingerprints: set[bytes],
        after_seconds: float,
    ) -> ForgottenState:
        now = self._clock()
        with self._database.write_transaction() as connection:
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

    @staticmethod
    def write_checkpoint(
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
    def write_backlog_done(
        connection: sqlite3.Connection, backlog_file: BacklogFile, now: float
    ) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO backlog_done (fingerprint, path, size, finished_at)"
            " VALUES (?, ?, ?, ?)",
            (backlog_file.fingerprint, backlog_file.path, backlog_file.size, now),
        )

    # ------------------------------------------------------------------ reading

    def state_counts(self) -> tuple[int, int]:
        checkpoints = self._database.read_one("SELECT count(*) FROM checkpoints")
        marks = self._database.read_one("SELECT count(*) FROM backlog_done")
        return int(checkpoints[0]), int(marks[0])

    def get_checkpoint(self, key: str) -> Checkpoint | None:
        row = self._database.read_one(
            f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE key = ?", (key,)
        )
        return None if row is None else _checkpoint_from_row(row)

    def checkpoints(self, path: str | None = None) -> list[Checkpoint]:
        select = f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints"
        if path is None:
            rows = self._database.read_all(f"{select} ORDER BY key")
        else:
            rows = self._database.read_all(f"{select} WHERE path = ? ORDER BY key", (path,))
        return [_checkpoint_from_row(row) for row in rows]

    def is_backlog_done(self, fingerprint: bytes) -> bool:
        row = self._database.read_one(
            "SELECT 1 FROM backlog_done WHERE fingerprint = ?", (fingerprint,)
        )
        return row is not None


def _checkpoint_from_row(row: tuple[object, ...]) -> Checkpoint:
    key, path, offset, fingerprint, updated_at = row
    assert isinstance(key, str)
    assert isinstance(path, str)
    assert isinstance(offset, int)
    assert fingerprint is None or isinstance(fingerprint, bytes)
    assert isinstance(updated_at, float | int)
    return Checkpoint(key, path, offset, fingerprint, float(updated_at))
