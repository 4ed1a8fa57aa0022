"""The durable send buffer: every chunk waits here, on disk, until the server acks it.

Owns one SQLite file (``<data-dir>/spool.sqlite3``) holding:

- ``chunks``: the chunks not yet acknowledged, one row each, ``seq`` strictly increasing
  and never reused (AUTOINCREMENT remembers the largest seq ever handed out, even after
  every row is deleted), so ``chunkId = "<clientId>:<seq>"`` is stable across resends.
  A row points at its text in a segment file (``spool.segments.SegmentFiles``,
  ``<data-dir>/spool.sqlite3-segments/``); rows written before the segments (format 2)
  hold it themselves;
- ``dead_letter``: chunks the server rejected permanently (``too_large``, ``invalid``),
  kept for the user, counted in status;
- ``checkpoints`` and ``backlog_done``: where reading of each file resumes and which
  backlog files are done (``spool_file_state.SpoolFileState``);
- ``counters``: totals of chunks and bytes acknowledged, across restarts.

``Spool`` is the one interface its callers see. It keeps the chunks and dead letters
itself and hands the rest to five parts: ``spool.database.SpoolDatabase`` (the file, its
schema, transactions and errors), ``spool.segments.SegmentFiles`` (the chunks' texts),
``spool.file_state.SpoolFileState`` (checkpoints and backlog marks),
``spool.room.SpoolRoom`` (the counters, the byte bound, the disk) and
``spool.recent_chunks.RecentChunks`` (what this process appended, kept in memory until
acknowledged so that ``pending`` need not read it back).

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

Durability. A chunk's text is written to its segment and fdatasynced before the
transaction holding its row and checkpoint begins: a row that survives a power loss has
its text, and a text whose row was never committed is just unused bytes (the file is read
again from the older checkpoint). The journal is WAL with ``synchronous=NORMAL`` by
default: a commit reaches the operating system before ``append`` returns, so killing the
process (kill -9, a crash) at any instant loses no committed chunk. On power loss or an
OS crash, the last few commits may be rolled back (the database stays consistent, and a
chunk rolls back with its checkpoint, so the lines are read again). The one hazard would
be a chunk that was already sent and then rolled back: its seq would be handed out again
for different text. ``sync()`` closes that gap: it forces everything committed so far to
stable storage with one fsync, and is a no-op when nothing was appended since. The
connection does the same off the event loop (``durability_job``, run on a worker thread,
then ``made_durable``) and sends only what ``pending(durable_only=True)`` returns, so no
chunk is sent before it is durable, and reading and sending go on during the fsync.
Chunks an earlier run left are durable only after the first such fsync of this run (that
run may have been killed before its last commits reached the disk). ``durability="full"``
instead fsyncs every commit (slower, for users who prefer it).

Threads. A ``Spool`` is used from one thread, the main process's asyncio thread (every
call is a short local transaction); only a ``WalFlush`` and an append's fdatasync of its
texts run elsewhere, and they touch nothing but their own descriptors.
``append_many_durably`` (what the sources use) awaits that fdatasync on a worker thread,
so the loop goes on serving the connection meanwhile; ``append_many`` waits for it on
the calling thread.
sqlite3's ``check_same_thread`` stays on, so use from another thread raises instead of
corrupting state. ``stats()`` is O(1): counters live in memory, loaded once at open and
updated only after each transaction commits.

Must not: read log files, talk to the server, or decide when to send or retry.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from main_process.spool.database import (
    CHUNK_COLUMNS,
    SEGMENT_COLUMNS,
    SpoolCorruptError,
    SpoolDatabase,
    SpoolDiskFull,
    SpoolError,
    SpoolFull,
    SpoolUnavailableError,
    WalFlush,
    filesystem_size,
)
from main_process.spool.file_state import (
    BacklogFile,
    Checkpoint,
    ForgottenState,
    SpoolFileState,
)
from main_process.spool.recent_chunks import DEFAULT_MAX_BYTES as RECENT_MAX_BYTES
from main_process.spool.recent_chunks import RecentChunks
from main_process.spool.room import RESERVE_BYTES, SpoolRoom, SpoolStats
from main_process.spool.segments import (
    SegmentFiles,
    SegmentMissing,
    StagedTexts,
    roll_bytes_for,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "RESERVE_BYTES",
    "BacklogFile",
    "Checkpoint",
    "ChunkSource",
    "DeadLetter",
    "ForgottenState",
    "NewChunk",
    "Spool",
    "SpoolCorruptError",
    "SpoolDiskFull",
    "SpoolError",
    "SpoolFull",
    "SpoolStats",
    "SpoolUnavailableError",
    "SpooledChunk",
    "WalFlush",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# A write refused for want of room (EDQUOT: a quota; not an errno on every platform).
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_LAST_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ChunkSource:
    """The file a chunk was read from and the byte offset where the chunk starts."""

    path: str
    offset: int


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
class _StagedAppend:
    """An append whose texts are written to their segment and not yet committed."""

    chunks: Sequence[NewChunk]
    sizes: list[int]
    total: int
    texts: StagedTexts


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
        recent_max_bytes: int = RECENT_MAX_BYTES,
    ) -> None:
        """Open (or create) the spool at ``path``.

        ``verify`` runs SQLite's ``quick_check`` so damage is reported now, as a
        ``SpoolCorruptError``, rather than in the middle of delivery.
        ``recent_max_bytes`` bounds ``RecentChunks``.
        """
        self._path = Path(path)
        self.directory = self._path.parent
        """Where the spool lives (the data dir), also for scratch files of the sources."""
        self._client_id = client_id
        self._clock = clock
        self._every_commit_synced = durability == "full"
        self._room = SpoolRoom(self._path, max_bytes)
        self._database = SpoolDatabase(self._path, self._room, durability=durability, verify=verify)
        self._segments = SegmentFiles(
            self._path.with_name(self._path.name + "-segments"),
            roll_bytes=roll_bytes_for(filesystem_size(self.directory)),
        )
        try:
            self._room.load(self._database)
            # -1 for none: seqs start at 1, so then every chunk (none yet) is held.
            newest = self._database.read_one("SELECT COALESCE(MAX(seq), -1) FROM chunks")[0]
            self._open_segments()
        except BaseException:
            self._segments.close()
            self._database.close()
            raise
        self._newest_seq = int(newest)
        # An earlier run may have been killed before its last commits reached the disk:
        # they are made durable (one fsync) before any of them is sent.
        self._durable_seq = self._newest_seq if self._every_commit_synced else -1
        self._files = SpoolFileState(self._database, clock)
        # What this process appends is kept in memory until acknowledged, so sending it
        # does not read it back; the chunks of an earlier run are read from the file.
        self._recent = RecentChunks(complete_from=int(newest) + 1, max_bytes=recent_max_bytes)
        # Held through an ``append_many_durably``: one append's texts staged at a time.
        self._appending = asyncio.Lock()

    def _open_segments(self) -> None:
        rows = self._database.read_all(
            "SELECT segment, COUNT(*) FROM chunks WHERE segment IS NOT NULL GROUP BY segment"
        )
        try:
            self._segments.open({int(row[0]): int(row[1]) for row in rows})
        except SegmentMissing as exc:
            raise SpoolCorruptError(
                f"The spool {self._path} is damaged ({exc}); move it and "
                f"{self._segments.directory.name} aside to start with an empty spool."
            ) from None
        except OSError as exc:
            raise SpoolUnavailableError(
                f"Cannot open the spool's segments in {self._segments.directory}: "
                f"{exc.strerror or exc}."
            ) from exc

    def close(self) -> None:
        """Close the database (the WAL is checkpointed by SQLite). Idempotent."""
        self._recent.clear()
        self._segments.close()
        self._database.close()

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
        return self._room.max_bytes

    def stats(self) -> SpoolStats:
        return self._room.stats()

    @property
    def buffered_chunks(self) -> int:
        """Chunks not yet acknowledged (``stats().buffered_chunks``, without the copy)."""
        return self._room.buffered_chunks

    def chunk_id(self, seq: int) -> str:
        return f"{self._client_id}:{seq}"

    def has_room(self, byte_len: int) -> bool:
        """Whether a chunk of ``byte_len`` UTF-8 bytes can be appended now.

        A refusal marks the spool ``full`` in stats, as a refused ``append`` does.
        """
        if self._room.fits(byte_len, 1):
            return True
        self._room.full = True
        return False

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

        All or nothing: raises ``SpoolFull`` when they do not all fit. The texts are made
        durable on this thread; ``append_many_durably`` does that on a worker.
        """
        if self._appending.locked():
            raise RuntimeError("append_many while append_many_durably is under way")
        staged = self._stage(chunks)
        try:
            staged.texts.sync()
        except OSError as exc:
            self._abandon(staged)
            raise self._segment_failure(exc) from exc
        except BaseException:
            self._abandon(staged)
            raise
        return self._commit(staged, checkpoint, backlog_done)

    async def append_many_durably(
        self,
        chunks: Sequence[NewChunk],
        *,
        checkpoint: Checkpoint | None = None,
        backlog_done: BacklogFile | None = None,
    ) -> list[SpooledChunk]:
        """``append_many``, with the texts' fdatasync on a worker thread: the event loop
        serves the connection (acknowledgements, sends) while the disk works. Appends
        from several tasks (the file sources, standard input) are made one at a time."""
        async with self._appending:
            staged = self._stage(chunks)
            try:
                await asyncio.get_running_loop().run_in_executor(None, staged.texts.sync)
            except OSError as exc:
                self._abandon(staged)
                raise self._segment_failure(exc) from exc
            except BaseException:  # cancelled: the sync may still run, on its own copies
                self._abandon(staged)
                raise
            return self._commit(staged, checkpoint, backlog_done)

    def _stage(self, chunks: Sequence[NewChunk]) -> _StagedAppend:
        """Check the room and write the texts to their segment (not durable yet)."""
        texts = [chunk.text.encode("utf-8") for chunk in chunks]
        sizes = [len(text) for text in texts]
        total = sum(sizes)
        room = self._room
        if not room.fits(total, len(chunks)):
            room.full = True
            raise SpoolFull(total, room.buffered_bytes, room.max_bytes)
        try:
            staged_texts = self._segments.stage(texts)
        except OSError as exc:
            self._segments.settle()
            raise self._segment_failure(exc) from exc
        return _StagedAppend(chunks, sizes, total, staged_texts)

    def _abandon(self, staged: _StagedAppend) -> None:
        """The texts of ``staged`` will not be committed (nothing refers to them)."""
        staged.texts.discard()
        self._segments.settle()

    def _commit(
        self,
        staged: _StagedAppend,
        checkpoint: Checkpoint | None,
        backlog_done: BacklogFile | None,
    ) -> list[SpooledChunk]:
        """Commit the rows of durable texts, with the checkpoint and mark."""
        now = self._clock()
        # The texts are on stable storage before the rows pointing at them are committed
        # (``SegmentFiles`` rule 1), so a row that survives a power loss has its text.
        locations = staged.texts.locations
        stored: list[SpooledChunk] = []
        try:
            with self._database.write_transaction() as connection:
                for chunk, size, (segment, offset) in zip(
                    staged.chunks, staged.sizes, locations, strict=True
                ):
                    source = chunk.source
                    cursor = connection.execute(
                        "INSERT INTO chunks (text, source_path, source_offset, byte_len,"
                        f" created_at, {SEGMENT_COLUMNS}) VALUES ('', ?, ?, ?, ?, ?, ?)",
                        (
                            None if source is None else source.path,
                            None if source is None else source.offset,
                            size,
                            now,
                            segment,
                            offset,
                        ),
                    )
                    seq = cursor.lastrowid
                    assert seq is not None
                    stored.append(
                        SpooledChunk(seq, self.chunk_id(seq), chunk.text, source, size, now)
                    )
                if checkpoint is not None:
                    SpoolFileState.write_checkpoint(connection, checkpoint, now)
                if backlog_done is not None:
                    SpoolFileState.write_backlog_done(connection, backlog_done, now)
        except SpoolDiskFull:
            self._segments.settle()
            self._database.truncate_wal()
            raise
        except BaseException:
            self._segments.settle()
            raise
        self._segments.settle(segment for segment, _ in locations)
        self._room.appended(len(stored), staged.total)
        for spooled in stored:
            self._recent.appended(spooled)
        if stored:
            self._newest_seq = stored[-1].seq
            if self._every_commit_synced:
                self._durable_seq = self._newest_seq
        return stored

    def _segment_failure(self, exc: OSError) -> SpoolError:
        """What to raise for a segment write or sync that failed with ``exc``."""
        if exc.errno in _DISK_FULL_ERRNOS:
            self._room.full = True
            # Something else filled the disk past the margin; give the WAL's space back
            # so that acknowledgements can still drain the spool.
            self._database.truncate_wal()
            return SpoolDiskFull(
                f"Cannot write the spool {self._path}: the disk is full.",
                self._room.buffered_bytes,
                self._room.max_bytes,
            )
        return SpoolUnavailableError(
            f"Cannot write the spool's segment in {self._segments.directory}: "
            f"{exc.strerror or exc}."
        )

    def acknowledge(self, seq: int) -> bool:
        """Delete an acknowledged chunk and count it as sent.

        Returns False (and changes nothing) when the chunk is not in the spool, e.g. a
        duplicate ack after a resend.
        """
        return self.acknowledge_many((seq,)) == 1

    def acknowledge_many(self, seqs: Sequence[int]) -> int:
        """Delete several acknowledged chunks in one transaction (one commit instead of
        one each) and count them as sent; returns how many were in the spool."""
        if not seqs:
            return 0
        return self._room.draining(self._acknowledge_many, seqs)

    def _acknowledge_many(self, seqs: Sequence[int]) -> int:
        marks = ", ".join("?" * len(seqs))
        with self._database.write_transaction() as connection:
            # fetchall: the DELETE statement must be finished before COMMIT.
            rows = connection.execute(
                f"DELETE FROM chunks WHERE seq IN ({marks}) RETURNING seq, byte_len, segment",
                tuple(seqs),
            ).fetchall()
            if not rows:
                return 0
            connection.execute(
                "UPDATE counters SET sent_chunks = sent_chunks + ?,"
                " sent_bytes = sent_bytes + ? WHERE id = 1",
                (len(rows), sum(int(row[1]) for row in rows)),
            )
        for seq, byte_len, _ in rows:
            self._recent.removed(seq)
            self._room.acknowledged(int(byte_len))
        self._segments.release(int(row[2]) for row in rows if row[2] is not None)
        return len(rows)

    def dead_letter(self, seq: int, code: str, message: str = "") -> bool:
        """Move a permanently rejected chunk to the dead-letter table (one transaction).

        Returns False when the chunk is not in the spool.
        """
        return self._room.draining(self._dead_letter, seq, code, message)

    def _dead_letter(self, seq: int, code: str, message: str) -> bool:
        now = self._clock()
        with self._database.write_transaction() as connection:
            rows = connection.execute(
                f"DELETE FROM chunks WHERE seq = ? RETURNING {CHUNK_COLUMNS}, {SEGMENT_COLUMNS}",
                (seq,),
            ).fetchall()
            if not rows:
                return False
            row = rows[0]
            # A dead letter keeps its text in its row: it outlives any segment.
            connection.execute(
                f"INSERT INTO dead_letter ({CHUNK_COLUMNS}, code, message, dead_lettered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row[0], self._row_text(row), *row[2:6], code, message, now),
            )
            byte_len = int(row[4])
        self._recent.removed(seq)
        self._room.dead_letter_moved(byte_len)
        if row[6] is not None:
            self._segments.release((int(row[6]),))
        return True

    def sync(self) -> None:
        """Force every committed chunk to stable storage (survives power loss).

        One fsync of the WAL, and only when something was appended since the last call.
        Blocks the calling thread; ``durability_job`` does the same off the event loop.
        """
        if self._durable_seq >= self._newest_seq:
            return
        self._database.sync()
        self._durable_seq = self._newest_seq

    def durability_job(self) -> WalFlush | None:
        """A job that makes every chunk appended so far durable, to run on another
        thread (``WalFlush.run``) while this one goes on; hand it to ``made_durable``
        once it has run. None when they all are durable already."""
        if self._durable_seq >= self._newest_seq:
            return None
        return WalFlush(self._database.wal_path, self._newest_seq)

    def made_durable(self, job: WalFlush) -> None:
        """``job`` has run: the chunks it covers may be sent."""
        self._durable_seq = max(self._durable_seq, job.through_seq)

    # ------------------------------------------------------------------------ reading

    def pending(
        self, after_seq: int | None = None, limit: int = 64, *, durable_only: bool = False
    ) -> list[SpooledChunk]:
        """Up to ``limit`` chunks with ``seq > after_seq`` (all when None), in seq order;
        with ``durable_only``, only those known to survive a power loss (``sync``)."""
        after = -1 if after_seq is None else after_seq
        through = self._durable_seq if durable_only else _LAST_SEQ
        recent = self._recent.pending(after, limit)
        if recent is not None:
            if recent and recent[-1].seq > through:
                return [chunk for chunk in recent if chunk.seq <= through]
            return recent
        rows = self._database.read_all(
            f"SELECT {CHUNK_COLUMNS}, {SEGMENT_COLUMNS} FROM chunks"
            " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, through, limit),
        )
        return [
            SpooledChunk(
                row[0], self.chunk_id(row[0]), self._row_text(row), _source(row), row[4], row[5]
            )
            for row in rows
        ]

    def _row_text(self, row: Any) -> str:
        """The text of a row of ``CHUNK_COLUMNS, SEGMENT_COLUMNS``: in its segment, or
        (a row of an older spool) in the row."""
        if row[6] is None:
            return str(row[1])
        try:
            return self._segments.read(int(row[6]), int(row[7]), int(row[4])).decode("utf-8")
        except (SegmentMissing, UnicodeDecodeError) as exc:
            raise SpoolCorruptError(
                f"The spool {self._path} is damaged (chunk {row[0]}: {exc}); move it and "
                f"{self._segments.directory.name} aside to start with an empty spool."
            ) from None
        except OSError as exc:
            raise SpoolUnavailableError(
                f"Cannot read the spool's segment in {self._segments.directory}: "
                f"{exc.strerror or exc}."
            ) from exc

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead-lettered chunks, in seq order."""
        rows = self._database.read_all(
            f"SELECT {CHUNK_COLUMNS}, code, message, dead_lettered_at FROM dead_letter"
            " ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [
            DeadLetter(row[0], self.chunk_id(row[0]), row[1], _source(row), *row[4:9])
            for row in rows
        ]

    # ------------------------------------------------- file state (SpoolFileState)

    def set_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint on its own (a new file, a truncation, ``--from-end``)."""
        self._files.set_checkpoint(checkpoint)

    def delete_checkpoint(self, key: str) -> bool:
        """Forget a file's checkpoint (the file is gone for good)."""
        return self._files.delete_checkpoint(key)

    def mark_backlog_done(self, backlog_file: BacklogFile) -> None:
        """Record a backlog file as uploaded (for files that produced no chunk, e.g. empty;
        otherwise pass ``backlog_done`` to the append of its last chunk)."""
        self._files.mark_backlog_done(backlog_file)

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
        return self._files.forget_missing(present_keys, present_fingerprints, after_seconds)

    def state_counts(self) -> tuple[int, int]:
        """How many checkpoints and backlog marks the spool holds."""
        return self._files.state_counts()

    def get_checkpoint(self, key: str) -> Checkpoint | None:
        return self._files.get_checkpoint(key)

    def checkpoints(self, path: str | None = None) -> list[Checkpoint]:
        """Every checkpoint, or those of one log ``path`` (the lineage they continue)."""
        return self._files.checkpoints(path)

    def is_backlog_done(self, fingerprint: bytes) -> bool:
        return self._files.is_backlog_done(fingerprint)


def _source(row: Any) -> ChunkSource | None:
    """The source of a row of ``CHUNK_COLUMNS`` (path, offset); None for stdin's chunks."""
    return None if row[2] is None else ChunkSource(row[2], row[3])
