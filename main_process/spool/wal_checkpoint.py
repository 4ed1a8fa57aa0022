"""Copying the spool's write-ahead log into its database file, off the event loop.

Owns ``WalCheckpointer``: a thread with its own SQLite connection to the spool that runs
SQLite's PASSIVE checkpoint each time about ``every_bytes`` have been committed to the
WAL since the last one. SQLite's own automatic checkpoint runs inside the commit that
crosses its threshold, on the event loop's thread: copying 16 MiB of pages and two
fsyncs, during which no chunk is sent and no acknowledgement read (about a sixth of the
main process's time while a large backlog ships). A PASSIVE checkpoint never blocks the
writer; SQLite makes concurrent checkpointing safe (one checkpointer at a time, frames
copied only up to what every reader has seen), and it syncs as the connection's
``synchronous`` says, which is the spool's own.

The log is rewritten from its start only when a writer finds every frame copied; under a
steady stream of commits a passive checkpoint seldom ends in such a gap, and the file
would keep growing. So when it has grown past ``limit_bytes`` the writer's thread runs
one RESTART checkpoint itself (``committed`` says when, ``lock`` keeps the thread out
meanwhile): it copies only what the thread has not copied yet, and the next commit
starts the log over.

Must not: decide what is written, or let a failed checkpoint stop the spool (it is
logged; the next one copies the same frames, and a full disk is the writer's business).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

logger = logging.getLogger("main_process.spool")


class WalCheckpointer:
    """A thread that checkpoints the spool's WAL; see the module docstring."""

    def __init__(self, path: Path, *, synchronous: str, every_bytes: int, limit_bytes: int) -> None:
        self._path = path
        self._wal_path = Path(f"{path}-wal")
        self._synchronous = synchronous
        self._every_bytes = every_bytes
        self._limit_bytes = limit_bytes
        self._written = 0
        self._wanted = threading.Event()
        # Held by the thread during a checkpoint, and by the writer for one of its own:
        # SQLite refuses a second checkpointer at once (SQLITE_BUSY, no busy handler).
        self.lock = threading.Lock()
        self._stopping = False
        self.passes = 0
        """Checkpoints run by the thread (for tests)."""
        self._thread = threading.Thread(target=self._run, name="spool-checkpoint", daemon=True)
        self._thread.start()

    def committed(self, wal_bytes: int) -> bool:
        """A transaction put about ``wal_bytes`` in the log. True when the log has grown
        past its limit: the caller runs a RESTART checkpoint on its own connection."""
        self._written += wal_bytes
        if self._written >= self._every_bytes:
            self._written = 0
            self._wanted.set()
        try:
            # The file only grows while the log is not started over (a stat: ~2 µs).
            return self._wal_path.stat().st_size > self._limit_bytes
        except OSError:
            return False

    def close(self) -> None:
        """Stop the thread and close its connection (before the writer's, so that the
        writer's close, the last, checkpoints everything and removes the log)."""
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            # The writer created the file and set WAL mode, which is persistent.
            connection = sqlite3.connect(self._path, isolation_level=None, timeout=0)
        except sqlite3.Error as exc:
            logger.warning("the spool's checkpoints stay on the writer's thread: %s", exc)
            return
        try:
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                try:
                    with self.lock:
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.passes += 1
                except sqlite3.Error as exc:
                    logger.warning("could not checkpoint the spool's WAL: %s", exc)
        except sqlite3.Error as exc:
            logger.warning("the spool's checkpoint thread stopped: %s", exc)
        finally:
            connection.close()
