"""Reading followed files in worker threads, so that a stalled file never stalls the loop.

Owns: the worker threads, and the reads that did not return within ``_READ_WAIT`` (a
stalled network file system): their follower is left alone (not read again, committed or
closed) until they return, which wakes the loop; one that has not returned after
``stall_after`` seconds is reported once, and cleared when it returns.

Must not: decide what to read or what a result means (``lineage_reader`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from main_process.sources.file_follower import FileFollower, Truncation
from main_process.sources.file_identity import FileKey
from main_process.sources.source_registry import TroubleLog

logger = logging.getLogger("main_process.sources")

# A round waits this long for a read before going on without it (a healthy disk answers
# in microseconds; the event loop serves the connection meanwhile), and several can hang
# at once.
_READ_WAIT = 0.02
_READ_WORKERS = 8

ReadResult = tuple[int, Truncation | None]


@dataclass(slots=True)
class _ReadInFlight:
    """A read of one follower running in a worker thread for longer than ``_READ_WAIT``."""

    future: Future[ReadResult]
    started: float
    reported: bool = False


class ReadWorkers:
    """``FileFollower.read`` in worker threads; see the module docstring."""

    def __init__(self, troubles: TroubleLog, stall_after: float) -> None:
        self._troubles = troubles
        self._stall_after = stall_after
        self._reads: dict[FileKey, _ReadInFlight] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def start(self, wake: asyncio.Event) -> None:
        """Start the threads; a late read that returns sets ``wake``."""
        self._loop = asyncio.get_running_loop()
        self._wake = wake
        self._executor = ThreadPoolExecutor(
            max_workers=_READ_WORKERS, thread_name_prefix="log-read"
        )

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._reads.clear()

    def busy(self, key: FileKey) -> bool:
        """Whether a read of the file ``key`` has not returned yet."""
        return key in self._reads

    async def read(
        self,
        follower: FileFollower,
        budget: int,
        now: float,
        limit: int | None,
        *,
        send_now: bool = False,
    ) -> ReadResult | None:
        """``follower.read`` in a worker thread: its result, or None while it has not
        returned. The caller waits for it up to ``_READ_WAIT`` (the event loop serves
        the connection meanwhile); a read that takes longer is left to finish on its
        own, the round goes on with every other file, and after ``stall_after`` seconds
        the stall is reported."""
        assert self._executor is not None
        assert self._loop is not None
        job = self._reads.get(follower.key)
        if job is None:
            future = self._executor.submit(follower.read, budget, now, limit, send_now=send_now)
            # Busy from now on: should the round be cancelled during the wait below, the
            # follower is not closed under its read.
            job = self._reads[follower.key] = _ReadInFlight(future, now)
            returned = self._loop.create_future()
            future.add_done_callback(lambda _: self._settle_soon(returned))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(returned, _READ_WAIT)
            if not future.done():
                future.add_done_callback(self._returned)
                return None
        elif not job.future.done():
            waited = now - job.started
            if not job.reported and waited >= self._stall_after:
                job.reported = True
                self._troubles.report(
                    follower.path,
                    f"Reading {follower.path} has not returned for {waited:.0f} s (a stalled "
                    "network file system?); the other files go on, and it resumes by itself.",
                )
            return None
        del self._reads[follower.key]
        if job.reported:
            self._troubles.clear(follower.path)
            logger.info("reading %s returned after %.1f s", follower.path, now - job.started)
        return job.future.result()

    def _settle_soon(self, returned: asyncio.Future[None]) -> None:
        """A read returned (in its worker thread): end the wait for it, if still waiting."""
        self._on_loop(lambda: _settle(returned))

    def _returned(self, future: Future[Any]) -> None:
        """A late read returned (in its worker thread): wake the loop to use it."""
        wake = self._wake
        if wake is not None:
            self._on_loop(wake.set)

    def _on_loop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop soon (from a worker thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)


def _settle(returned: asyncio.Future[None]) -> None:
    if not returned.done():  # (cancelled by the wait's deadline)
        returned.set_result(None)
