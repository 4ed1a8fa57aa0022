"""Streams that are not files: standard input (``SOURCE -``) and the demo generator.

A :class:`TextFeed` reads bytes from an async iterator, cuts them into line chunks with
:class:`LineChunker` (same limits and lingers as file sources), appends each chunk to the
spool and tells the connection. A stream has no checkpoint to resume from: what was read
is in the spool, what was not is still in the pipe. When the spool is full the feed
stops reading, so the writer on the other end of the pipe is slowed down instead of any
line being dropped.

Batching is the file sources' too: lines are cut into a chunk at once while
``delivery_room()`` says a chunk would be sent at once (nothing waits for an
acknowledgement), else they group until ``notify_delivery_room()`` (an acknowledgement)
or the linger.

Backpressure is the same as the file sources' (``line_source.LineSource``): the feed
pauses when the spool refuses a chunk (``paused_reason`` says why) and tries again when
``notify_room()`` says acknowledgements freed room, or after ``full_retry_interval`` (the
spool can also be full because the disk is, which no acknowledgement may end).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from main_process.sources.line_chunker import LineChunker, TextChunk
from main_process.sources.line_source import spool_full_reason
from main_process.spool.chunks import ChunkSource, NewChunk, Spool, SpoolFull

log = logging.getLogger("log_monitor.text_feed")

STDIN_NAME = "<stdin>"


class TextFeed:
    def __init__(
        self,
        name: str,
        stream: AsyncIterator[bytes],
        spool: Spool,
        *,
        on_appended: Callable[[str, str], None],
        delivery_room: Callable[[], bool] = lambda: False,
        max_chunk_bytes: int,
        linger: float,
        full_retry_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._stream = stream
        self._spool = spool
        self._on_appended = on_appended
        self._room_freed = asyncio.Event()
        self._full_retry_interval = full_retry_interval
        self._delivery_room = delivery_room
        self._delivery_freed = asyncio.Event()
        self._chunker = LineChunker(max_chunk_bytes=max_chunk_bytes, linger=linger)
        self._clock = clock
        self.paused_reason: str | None = None
        """Why reading is paused (one sentence), or None while reading."""
        self.finished = False

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None

    def notify_room(self) -> None:
        """Call (on the loop thread) after acknowledgements freed spool room."""
        self._room_freed.set()

    def notify_delivery_room(self) -> None:
        """Call (on the loop thread) when an acknowledgement left room to send: lines
        that wait are cut at once."""
        self._delivery_freed.set()

    @property
    def holds_lines(self) -> bool:
        """Whether complete lines wait to be cut (for room to send, or the linger)."""
        return self._chunker.holds_lines

    @property
    def invalid_bytes_replaced(self) -> int:
        return self._chunker.invalid_bytes_replaced

    async def run(self) -> None:
        offset = 0
        iterator = aiter(self._stream)
        pending_read: asyncio.Task[bytes] | None = None
        room: asyncio.Task[bool] | None = None
        try:
            while True:
                if pending_read is None:
                    pending_read = asyncio.ensure_future(anext(iterator))
                waiting_for: set[asyncio.Future[Any]] = {pending_read}
                if self._chunker.holds_lines:
                    # Lines wait for room to send: an acknowledgement may bring it.
                    if room is None:
                        room = asyncio.ensure_future(self._delivery_freed.wait())
                    waiting_for.add(room)
                deadline = self._chunker.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                done, _ = await asyncio.wait(
                    waiting_for, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if room is not None and room in done:
                    room = None
                    self._delivery_freed.clear()
                    if self._delivery_room():
                        await self._store(self._chunker.flush_lines())
                if pending_read not in done:
                    await self._store(self._chunker.poll(self._clock()))
                    continue
                finished_read, pending_read = pending_read, None
                try:
                    data = finished_read.result()
                except StopAsyncIteration:
                    break
                chunks = self._chunker.feed(
                    data, offset, self._clock(), send_now=self._delivery_room()
                )
                await self._store(chunks)
                offset += len(data)
            await self._store(self._chunker.flush())
            self.finished = True
            log.info("%s ended; %d bytes read", self.name, offset)
        finally:
            for task in (pending_read, room):
                if task is not None:
                    task.cancel()

    async def _store(self, chunks: list[TextChunk]) -> None:
        for chunk in chunks:
            while True:
                try:
                    await self._spool.append_many_durably(
                        [NewChunk(chunk.text, ChunkSource(self.name, chunk.start_offset))]
                    )
                    break
                except SpoolFull as exc:
                    # Backpressure: stop reading until acknowledgements free room.
                    self.paused_reason = spool_full_reason(exc)
                    self._room_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._room_freed.wait(), self._full_retry_interval)
            self.paused_reason = None
            self._on_appended(self.name, chunk.text)


async def read_stdin(read_size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """Standard input as an async stream of byte blocks (a pipe, a file or a terminal)."""
    loop = asyncio.get_running_loop()
    # Small and bounded: when the spool is full and the feed stops taking blocks, the
    # reader thread stops reading and the writer on the other end of the pipe waits.
    blocks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
    # os.read on the descriptor, not sys.stdin.buffer: a daemon thread blocked inside the
    # buffered reader holds its lock, and the interpreter aborts at exit on that lock.
    descriptor = sys.stdin.fileno()

    def read_blocks() -> None:
        # A daemon thread, not the loop's executor: a read blocked on a quiet pipe must
        # not hold up the process's exit, and the executor is joined at shutdown.
        try:
            while True:
                data = os.read(descriptor, read_size)
                asyncio.run_coroutine_threadsafe(blocks.put(data), loop).result()
                if not data:
                    return
        except (OSError, ValueError, RuntimeError, concurrent.futures.CancelledError):
            return  # stdin closed under us, or the loop is gone: nothing left to feed

    threading.Thread(target=read_blocks, name="stdin-reader", daemon=True).start()
    while data := await blocks.get():
        yield data


_PLAYERS = ("Aurora", "Brakk", "Cinder", "Dusk", "Ember", "Fable", "Grim", "Halcyon")
_ZONES = ("Frostmarch", "Sunken Docks", "Ashen Vale", "Crystal Spire", "Old Quarry")
_EVENTS = (
    "[Combat] {p} hits Training Dummy for {n} damage.",
    "[Combat] {p} casts Flame Lance on Ash Wolf ({n} damage, critical).",
    "[Loot] {p} receives item: Worn Leather Boots x1.",
    "[Zone] {p} entered {z}.",
    "[Chat] {p}: anyone up for the {z} run?",
    "[Net] latency {n} ms, packet loss 0.0%",
    "[Quest] {p} completed 'Lost in {z}' (+{n} xp).",
    "[Warn] Texture streaming budget exceeded by {n} KB.",
)


async def write_demo_log(path: Path, lines_per_second: float = 4.0) -> None:
    """Append generated game-log lines to ``path`` forever (``log-monitor run --demo``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab", buffering=0) as log_file:
        async for block in demo_game_log(lines_per_second):
            log_file.write(block)


async def demo_game_log(
    lines_per_second: float = 4.0, seed: int | None = None
) -> AsyncIterator[bytes]:
    """Endless realistic game-log lines, for ``make run`` with no source given."""
    rng = random.Random(seed)
    interval = 1.0 / lines_per_second
    while True:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        template = rng.choice(_EVENTS)
        text = template.format(p=rng.choice(_PLAYERS), z=rng.choice(_ZONES), n=rng.randint(1, 999))
        yield f"{stamp} {text}\n".encode()
        await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
