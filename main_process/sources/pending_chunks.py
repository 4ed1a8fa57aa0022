"""The chunks a follower cut and the spool has not taken yet, in order.

Owns: the queue of pending chunks, each with the checkpoint it advances; committing them
(``commit_all``: every pending chunk of one file in ONE ``Spool.append_many_durably``,
with the last one's checkpoint and a finished backlog file's mark, so a burst costs one
commit, one fsync, rather than one a chunk; ``commit_one``: the oldest alone, chunk and
checkpoint together, what a spool too full for them all still takes); handing chunks
over to the follower that continues the same content (``copytruncate``); the committed
offset.

Must not: cut chunks (``FileFollower`` does, with ``LineChunker``) or retry: a chunk the
spool refuses (``SpoolFull``) stays first in the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from main_process.spool.chunks import (
    BacklogFile,
    Checkpoint,
    ChunkSource,
    NewChunk,
    Spool,
    SpoolFull,
)


@dataclass(frozen=True, slots=True)
class PendingChunk:
    """A chunk cut from the file and not yet in the spool, with the checkpoint it advances."""

    text: str
    source: ChunkSource
    checkpoint: Checkpoint
    raw_length: int
    backlog_done: BacklogFile | None = None


@dataclass(slots=True)
class CommitTotals:
    """What a series of commits put in the spool."""

    chunks: int = 0
    raw_bytes: int = 0
    text_bytes: int = 0
    texts: list[tuple[str, str]] = field(default_factory=list)
    """(path, text) of every chunk appended, in order (references, no copies)."""

    def add(self, chunk: PendingChunk, text_bytes: int) -> None:
        self.chunks += 1
        self.raw_bytes += chunk.raw_length
        self.text_bytes += text_bytes
        self.texts.append((chunk.source.path, chunk.text))


class PendingChunks:
    """One follower's chunks not yet in the spool; see the module docstring."""

    def __init__(self, committed_offset: int) -> None:
        self._chunks: deque[PendingChunk] = deque()
        self._backlog_mark: BacklogFile | None = None
        self.committed_offset = committed_offset
        """Where a restart would resume: the end of the last chunk in the spool."""

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, index: int) -> PendingChunk:
        return self._chunks[index]

    def __iter__(self) -> Iterator[PendingChunk]:
        return iter(self._chunks)

    def append(self, chunk: PendingChunk) -> None:
        self._chunks.append(chunk)

    def take_all(self) -> list[PendingChunk]:
        """Remove and return every pending chunk."""
        chunks = list(self._chunks)
        self._chunks.clear()
        return chunks

    def put_first(self, chunks: list[PendingChunk]) -> None:
        """Commit ``chunks`` before anything pending now."""
        self._chunks.extendleft(reversed(chunks))

    def mark_backlog_done(self, mark: BacklogFile) -> None:
        """Commit ``mark`` with the last pending chunk, or alone if there is none."""
        if self._chunks:
            last = self._chunks.pop()
            self._chunks.append(
                PendingChunk(last.text, last.source, last.checkpoint, last.raw_length, mark)
            )
        else:
            self._backlog_mark = mark

    async def commit_all(self, spool: Spool, totals: CommitTotals) -> None:
        """Append every pending chunk (adding to ``totals``): all in one transaction when
        they are one file's and the spool takes them all, else one by one as far as the
        spool takes them. Raises ``SpoolFull`` when it refuses the oldest: the rest stays
        pending. The event loop serves others while the spool makes the texts durable;
        nothing else changes this queue meanwhile (the sources' round awaits it)."""
        chunks = list(self._chunks)
        if (
            len(chunks) > 1
            and len({chunk.checkpoint.key for chunk in chunks}) == 1
            and all(chunk.backlog_done is None for chunk in chunks[:-1])
        ):
            last = chunks[-1]
            try:
                stored = await spool.append_many_durably(
                    [NewChunk(chunk.text, chunk.source) for chunk in chunks],
                    checkpoint=last.checkpoint,
                    backlog_done=last.backlog_done,
                )
            except SpoolFull:
                pass  # not room for them all: as many as fit, one by one, below
            else:
                self._chunks.clear()
                self.committed_offset = last.checkpoint.offset
                for chunk, spooled in zip(chunks, stored, strict=True):
                    totals.add(chunk, spooled.byte_len)
        while await self.commit_one(spool, totals):
            pass

    async def commit_one(self, spool: Spool, totals: CommitTotals) -> bool:
        """Append the oldest pending chunk (adding to ``totals``); False when none was
        pending. Raises ``SpoolFull`` when the spool refuses it: it stays pending."""
        if not self._chunks:
            if self._backlog_mark is not None:
                spool.mark_backlog_done(self._backlog_mark)
                self._backlog_mark = None
            return False
        chunk = self._chunks[0]
        [stored] = await spool.append_many_durably(
            [NewChunk(chunk.text, chunk.source)],
            checkpoint=chunk.checkpoint,
            backlog_done=chunk.backlog_done,
        )
        self._chunks.popleft()
        self.committed_offset = chunk.checkpoint.offset
        totals.add(chunk, stored.byte_len)
        return True
