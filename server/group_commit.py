"""Group commit: chunks from every connection committed together, one transaction (one
fsync) for all that arrive while the previous commit is under way.

A durable commit costs a flush to disk (SQLite ``synchronous=FULL``, PostgreSQL's WAL
flush), and a disk does a few hundred of those a second: with a commit per chunk, that
is the server's ceiling however many clients it holds. :class:`GroupCommitter` keeps one
commit in flight; chunks that arrive meanwhile wait in a queue, and the next commit takes
all of them (at most ``max_batch``). Under load, batches grow by themselves; a lone
client waits for nothing but its own commit. ``wait`` (seconds, default 0) holds a batch
open a little longer to gather more, for disks whose flushes are very slow.

What it promises, per chunk: :meth:`GroupCommitter.store` returns only once the batch
holding it is committed, with that chunk's outcome (stored, duplicate, session ended); if
the commit fails, every chunk of the batch gets the exception (nothing of it was
stored), and the namespace answers each with an error the client sends again. Order per
connection is unchanged: a connection's events are handled one after another
(``async_handlers=False``), so its next chunk is queued only after this one's outcome.

``max_batch=1`` is a commit per chunk, as before group commit (the benchmark's baseline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from server.storage import IncomingChunk, PendingChunk, StoreOutcome

log = logging.getLogger("log_monitor_server.commit")

DEFAULT_MAX_BATCH = 1000

Commit = Callable[[Sequence[PendingChunk]], Awaitable[list[StoreOutcome]]]


@dataclass
class CommitCounters:
    commits: int = 0
    committed_chunks: int = 0
    failed_commits: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "commits": self.commits,
            "committed_chunks": self.committed_chunks,
            "failed_commits": self.failed_commits,
            "largest_batch": self.largest_batch,
        }


@dataclass
class _Waiting:
    pending: PendingChunk
    outcome: asyncio.Future[StoreOutcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitter:
    def __init__(self, commit: Commit, max_batch: int = DEFAULT_MAX_BATCH, wait: float = 0.0):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self.max_batch = max_batch
        self.wait = wait
        self.counters = CommitCounters()
        self._queue: list[_Waiting] = []
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    async def store(self, chunk: IncomingChunk, session_id: str | None = None) -> StoreOutcome:
        """Queue ``chunk`` and return its outcome once its batch is committed."""
        if self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = asyncio.ensure_future(self._commit_forever())
        assert self._arrived is not None
        waiting = _Waiting(PendingChunk(chunk, session_id))
        self._queue.append(waiting)
        self._arrived.set()
        return await waiting.outcome

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for waiting in self._queue:
            if not waiting.outcome.done():
                waiting.outcome.set_exception(ConnectionError("the server is stopping"))
        self._queue.clear()

    async def _commit_forever(self) -> None:
        assert self._arrived is not None
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            if self.wait > 0 and len(self._queue) < self.max_batch:
                await asyncio.sleep(self.wait)
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._commit([waiting.pending for waiting in batch])
        except asyncio.CancelledError:
            for waiting in batch:
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(ConnectionError("the server is stopping"))
            raise
        except Exception as exc:
            self.counters.failed_commits += 1
            log.warning(
                "a commit of %d chunk(s) failed; each is answered with an error: %s",
                len(batch),
                exc,
            )
            for waiting in batch:
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(exc)
            return
        self.counters.commits += 1
        self.counters.committed_chunks += len(batch)
        self.counters.largest_batch = max(self.counters.largest_batch, len(batch))
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if not waiting.outcome.done():
                waiting.outcome.set_result(outcome)
