"""One reading round of the file sources: read every lineage and the backlog file,
commit their chunks, and pause while the spool is full.

Owns: reading each lineage oldest generation first, up to ``live_budget`` bytes per file,
by ``rotation_policy``'s order rule (a truncated file's previous content is finished from
its copy first, ``generation_recovery``); then the active backlog file, up to
``backlog_budget`` (live files come first in every round and the backlog gets a bounded
slice, so a big backlog never delays a live line by more than one slice); committing
every chunk with the checkpoint it advances; closing detached files once idle; the
counters of what was appended; and backpressure: ``paused_reason`` is set when the spool
refuses a chunk (nothing more is read: the files are the buffer) and cleared, with
``on_pause_changed``, once the chunks left waiting are committed.

A round is a coroutine that awaits at two kinds of points only: a file read (in a worker,
``read_workers``) and the fdatasync of the texts of an append (in a worker,
``Spool.append_many_durably``). The event loop serves the connection and the windows
meanwhile, so a slow disk slows the shipping, never the rest of the process; nothing else
changes the followers while a round is suspended (the watcher's callbacks only set flags
for the next round).

Must not: decide which files are followed (``file_discovery``), sleep (``SourceSet`` sleeps
until ``next_deadline``), or call the file reads on the loop thread (``read_workers``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from main_process.sources.backlog_queue import BacklogQueue
from main_process.sources.file_follower import FileFollower, FollowerRole
from main_process.sources.generation_recovery import GenerationRecovery
from main_process.sources.line_source import spool_full_reason
from main_process.sources.pending_chunks import CommitTotals
from main_process.sources.read_workers import ReadWorkers
from main_process.sources.rotation_policy import caught_up, detached_close_due, lineage_reads
from main_process.sources.source_registry import FollowerRegistry, TroubleLog
from main_process.spool.chunks import BacklogFile, Spool, SpoolFull


class LineageReader:
    """Reads and commits; see the module docstring."""

    def __init__(
        self,
        spool: Spool,
        registry: FollowerRegistry,
        reads: ReadWorkers,
        recovery: GenerationRecovery,
        backlog: BacklogQueue,
        troubles: TroubleLog,
        *,
        live_budget: int,
        backlog_budget: int,
        detached_idle_close: float,
        full_retry_interval: float,
        marks_read_generations: bool,
        delivery_room: Callable[[], bool],
        on_chunk: Callable[[str, str], None],
        on_pause_changed: Callable[[str | None], None],
        start_backlog_file: Callable[..., FileFollower],
    ) -> None:
        self._spool = spool
        self._registry = registry
        self._reads = reads
        self._recovery = recovery
        self._backlog = backlog
        self._troubles = troubles
        self._live_budget = live_budget
        self._backlog_budget = backlog_budget
        self._detached_idle_close = detached_idle_close
        self._full_retry_interval = full_retry_interval
        self._marks_read_generations = marks_read_generations
        """Backlog patterns are set: a generation read to its end is marked uploaded."""
        self._delivery_room = delivery_room
        self._on_chunk = on_chunk
        self._on_pause_changed = on_pause_changed
        self._start_backlog_file = start_backlog_file
        self.paused_reason: str | None = None
        """Why reading is paused (one sentence), or None while reading."""
        self.chunks_appended = 0
        self.bytes_appended = 0

    async def read_round(self, now: float) -> bool:
        """Commit what waits, then read every file once; True when some file has more
        bytes right now (and reading is not paused)."""
        more = False
        self._recovery.retry_held(now)
        if await self._commit_waiting():
            for lineage, members in list(self._registry.lineages.items()):
                if self._recovery.is_held(lineage):
                    continue
                more = await self._pump_lineage(list(members), now) or more
                if self.paused_reason is not None:
                    break
            if self.paused_reason is None:
                more = await self._pump_backlog(now) or more
            if self.paused_reason is None:
                await self._close_idle_detached(now)
        return more and self.paused_reason is None

    def next_deadline(self, now: float, deadline: float) -> float:
        """The earliest of ``deadline`` and what the files wait for: a chunker deadline
        (linger, idle partial line), an idle detached file's close, a held lineage's next
        look and, while paused, the next try to commit."""
        for follower in self._registry.open_followers():
            if self._reads.busy(follower.key):
                continue  # its read wakes the loop when it returns
            chunk_deadline = follower.next_deadline()
            if chunk_deadline is not None:
                deadline = min(deadline, chunk_deadline)
            if follower.role is FollowerRole.DETACHED:
                deadline = min(deadline, follower.idle_since(now) + self._detached_idle_close)
        if self.paused_reason is not None:
            deadline = min(deadline, now + self._full_retry_interval)
        held = self._recovery.next_try()
        return deadline if held is None else min(deadline, held)

    async def _pump_lineage(self, members: list[FileFollower], now: float) -> bool:
        """Read and commit one lineage's generations, oldest first (``rotation_policy``);
        True when some file has more bytes right now."""
        if len(members) == 1:
            more, _ = await self._pump_live(members[0], now, None, partial_line=False)
            return more
        # Sizes newest first: each older generation is read up to a size taken after
        # every byte its newer ones held was written.
        newest_size = 0
        with contextlib.suppress(OSError):
            newest_size = members[-1].current_size()
        older_sizes: list[int | None] = [None] * (len(members) - 1)
        for index in range(len(members) - 2, -1, -1):
            with contextlib.suppress(OSError):
                older_sizes[index] = members[index].current_size()
        more = False
        for follower, plan in zip(members, lineage_reads(older_sizes, newest_size), strict=True):
            read_more, done = await self._pump_live(
                follower, now, plan.limit, partial_line=plan.partial_line
            )
            more = more or read_more
            if not done:
                # Newer generations wait for this one.
                return more
        return more

    async def _pump_live(
        self, follower: FileFollower, now: float, limit: int | None, *, partial_line: bool
    ) -> tuple[bool, bool]:
        """Read and commit one file of a lineage; with ``limit`` (an older generation)
        read up to it and cut every complete line at once. Returns (more bytes right now,
        caught up and committed)."""
        try:
            result = await self._reads.read(
                follower, self._live_budget, now, limit, send_now=self._delivery_room()
            )
        except OSError as exc:
            self._troubles.report(
                follower.path, f"Reading {follower.path} failed: {exc.strerror or exc}."
            )
            self._registry.remove_member(follower)
            self._registry.forget(follower)
            return False, True
        if result is None:
            return False, False  # the read has not returned: newer generations wait
        count, truncation = result
        if truncation is not None:
            self._recovery.after_truncation(follower, truncation, now)
            await self.commit(follower)
            # The previous content's rest (if a copy holds it) comes first: next round.
            return True, False
        reached = caught_up(follower.read_offset, limit)
        if limit is not None and reached:
            follower.flush_lines(partial_line=partial_line)
        committed = await self.commit(follower)
        return count >= self._live_budget, reached and committed

    async def _pump_backlog(self, now: float) -> bool:
        follower = self._registry.backlog_active
        if follower is None:
            follower = self._backlog.open_next(self._start_backlog_file)
            if follower is None:
                return False
        if not follower.finished:
            try:
                result = await self._reads.read(follower, self._backlog_budget, now, None)
                if result is None:
                    return False
                count, _ = result
                if count < self._backlog_budget and follower.at_end():
                    follower.finish(
                        BacklogFile(follower.content_key(), follower.path, follower.read_offset)
                    )
            except OSError as exc:
                self._troubles.report(
                    follower.path, f"Reading {follower.path} failed: {exc.strerror or exc}."
                )
                self._backlog.dropped()
                self._registry.forget(follower)
                return True
        if not await self.commit(follower):
            return False
        if follower.finished:
            self._backlog.finished(follower)
            self._registry.forget(follower)
        return True

    async def _commit_waiting(self) -> bool:
        """Commit chunks left over from a full spool; True when none is left."""
        for follower in self._registry.open_followers():
            if self._reads.busy(follower.key):
                continue
            if follower.pending and not await self.commit(follower):
                return False
        self._set_paused(None)
        return True

    async def commit(self, follower: FileFollower) -> bool:
        """Append ``follower``'s pending chunks; False when the spool refused one (then
        reading pauses)."""
        totals = CommitTotals()
        try:
            await follower.pending.commit_all(self._spool, totals)
            committed = True
        except SpoolFull as exc:
            self._set_paused(spool_full_reason(exc))
            committed = False
        for path, text in totals.texts:
            self._on_chunk(path, text)
        self.chunks_appended += totals.chunks
        self.bytes_appended += totals.text_bytes
        return committed

    def _set_paused(self, reason: str | None) -> None:
        if reason == self.paused_reason:
            return
        self.paused_reason = reason
        self._on_pause_changed(reason)

    async def _close_idle_detached(self, now: float) -> None:
        for follower in [f for members in self._registry.lineages.values() for f in members]:
            if follower.role is not FollowerRole.DETACHED or self._reads.busy(follower.key):
                continue
            if not follower.at_end() or self._recovery.is_held(follower.lineage):
                continue
            if not detached_close_due(
                now,
                follower.idle_since(now),
                self._detached_idle_close,
                holds_a_deleted_name=follower.holds_a_deleted_name(),
            ):
                continue
            follower.finish()
            if not await self.commit(follower):
                return
            if self._marks_read_generations:
                # Read to its end: a backlog pattern that matches this generation later
                # (compressed, renamed) must not upload it again.
                self._spool.mark_backlog_done(
                    BacklogFile(follower.content_key(), follower.path, follower.read_offset)
                )
            if follower.is_unlinked():
                # Deleted for good: its inode may be reused, its checkpoint is garbage.
                self._spool.delete_checkpoint(follower.key_text)
            self._registry.remove_member(follower)
            self._registry.forget(follower)
