"""The chunks this process appended and the server has not acknowledged yet, in memory.

Owns ``RecentChunks``: a bounded copy of what ``Spool.append_many`` committed, so that
sending a chunk moments after reading it from a file does not read its 512 KiB back out
of SQLite. The database stays the truth; this copy only answers ``Spool.pending`` when
it can answer exactly as the database would:

- a chunk is added only after the transaction that stored it committed, and removed
  once the transaction that deleted it (acknowledgement, dead letter) committed, so every
  chunk held is in the database with the same seq and text;
- ``complete_from``: every chunk in the database with a seq at or above it is held. It
  starts above the largest seq in the database at open (the chunks of an earlier run are
  only ever read from the database), and moves up past any chunk that did not fit, so
  a question about seqs below it goes to the database.

Bounded by ``max_bytes`` of text and ``max_chunks``; a chunk that does not fit is simply
not held (and read back from the database when its turn comes).

Must not: touch the database; decide anything about sending.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from main_process.spool.chunks import SpooledChunk

# Enough for the chunks in flight and those queued behind them (8 of 512 KiB in flight
# by default), not so much that a backlog the server is slow to take grows the process.
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CHUNKS = 1024


class RecentChunks:
    """Chunks appended by this process and not yet removed; see the module docstring."""

    def __init__(
        self,
        complete_from: int,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_chunks: int = DEFAULT_MAX_CHUNKS,
    ) -> None:
        self._chunks: dict[int, SpooledChunk] = {}  # in seq order: seqs only grow
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_chunks = max_chunks
        self.complete_from = complete_from
        """Every chunk in the database with a seq at or above this one is held."""

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def appended(self, chunk: SpooledChunk) -> None:
        """A chunk was committed to the database (seqs arrive in increasing order)."""
        if self._bytes + chunk.byte_len > self._max_bytes or len(self._chunks) >= self._max_chunks:
            # Not held: from now on only the chunks after it are all here.
            self.complete_from = chunk.seq + 1
            return
        self._chunks[chunk.seq] = chunk
        self._bytes += chunk.byte_len

    def removed(self, seq: int) -> None:
        """A chunk's deletion from the database was committed."""
        chunk = self._chunks.pop(seq, None)
        if chunk is not None:
            self._bytes -= chunk.byte_len

    def pending(self, after_seq: int, limit: int) -> list[SpooledChunk] | None:
        """Up to ``limit`` chunks with ``seq > after_seq`` in seq order, exactly as the
        database holds them (a negative ``limit``, like SQLite's, is no limit); None when
        only the database can say."""
        if after_seq + 1 < self.complete_from:
            return None
        found: list[SpooledChunk] = []
        if limit == 0:
            return found
        for seq, chunk in self._chunks.items():
            if seq > after_seq:
                found.append(chunk)
                if len(found) == limit:
                    break
        return found

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0
