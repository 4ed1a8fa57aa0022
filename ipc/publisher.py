"""The main process's side of the status broadcast: an XPUB with a Last Value Cache.

Owns: the XPUB socket, the per-topic sequence numbers, the cache of the last message of
every state topic (status, stats, each window), re-sending a cached message when someone
subscribes to its topic, and the snapshot of the cache that answers ``Snapshot``.

Frames: ``[topic, sequence, body]``. ``topic`` is a ``messages.topic_for`` name (SUB
filters on it), ``sequence`` is the 16-byte epoch + number frame of ``ipc/sequence.py``
(numbers count per topic), ``body`` is the msgpack encoding of the message.

Why XPUB with ``XPUB_VERBOSE``: a plain PUB cannot tell when someone subscribes, so a
viewer that starts late would wait for the next change to learn the present (zguide's
slow joiner). XPUB hands us every subscription message (VERBOSE: even a repeated one, as
when the second window subscribes to ``status``); we answer it by re-sending the cached
message with its original sequence number. XPUB cannot address one subscriber, so every
subscriber of that topic gets it again and drops it as a repeat by its number.

Why sends never block: libzmq's PUB/XPUB drops a message for a subscriber whose queue is
at the high-water mark instead of waiting (``XPUB_NODROP`` would make one stuck window
stall the main process, so it is not set). Sends also pass ``DONTWAIT``, so even an
option change elsewhere could only ever make a send fail with EAGAIN, which is counted,
never waited on. Dropped messages show up at the subscriber as a sequence gap, which it
repairs with a snapshot.

Why no message is over ``endpoints.MAX_PUBLISHED_BYTES``: that is the most a viewer's
socket takes (its libzmq drops the connection of a publisher that sends a larger frame and
does not reconnect after that protocol error, so every viewer would go deaf). A ``LogLines`` over it has its long lines cut
to ``MAX_LOG_LINE_CHARS`` (windows show 4,096) and, if still too large, keeps its newest
lines; any other message over it is not published (logged and counted: a server event
of that size, say). Subscription messages from peers are at most
``endpoints.MAX_SUBSCRIPTION_BYTES`` (a larger one disconnects the peer).

Every ``heartbeat_interval`` a ``Heartbeat`` carries each topic's latest number, so a
subscriber whose queue overflowed (losing the newest messages, with nothing after them
to reveal a gap) finds out and resyncs; its silence also means the main process is gone.

Why ``zmq.asyncio``: the main process is an asyncio program and the subscription
messages must be read while it runs. zmq.asyncio resolves a ``DONTWAIT`` send at once
(no await needed, so ``publish`` is a plain function) and reads subscriptions in a task
on the same loop. Not thread-safe: call ``publish`` from the loop's thread.

Must not: decide what the status is (the main process does), or accept a command type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, cast

import zmq
import zmq.asyncio

from ipc.endpoints import MAX_PUBLISHED_BYTES, MAX_SUBSCRIPTION_BYTES, CurveKeys, limit_inbound
from ipc.messages import (
    PUBLISHED_TYPES,
    TOPIC_HEARTBEAT,
    Heartbeat,
    LogLine,
    LogLines,
    Published,
    SnapshotEntry,
    SnapshotReply,
    encode,
    is_state_topic,
    topic_for,
)
from ipc.sequence import pack_sequence

logger = logging.getLogger(__name__)

_SUBSCRIBE = 1
_UNSUBSCRIBE = 0

MAX_LOG_LINE_CHARS: Final = 8192
"""A recent line is cut to this many characters when its ``LogLines`` would be too large."""
# What a LogLine costs in msgpack besides its two strings (map, keys, string headers).
_LOG_LINE_OVERHEAD = 32


@dataclass(slots=True)
class PublisherCounters:
    """What the publisher has done; all of it can be shown in logs and tests."""

    published: int = 0
    # A send refused with EAGAIN (the message was not queued anywhere).
    would_block: int = 0
    send_errors: int = 0
    subscriptions: int = 0
    unsubscriptions: int = 0
    cache_resends: int = 0
    malformed_control: int = 0
    # Messages over the size limit that could not be made to fit, so were not published.
    too_large: int = 0


@dataclass(frozen=True, slots=True)
class _Cached:
    seq: int
    message: Published
    frames: tuple[bytes, bytes, bytes]


def fit_log_lines(message: Published, limit: int) -> tuple[LogLines, bytes] | None:
    """``message`` made to encode in at most ``limit`` bytes, with its encoding, if it is
    a ``LogLines``: long lines cut to ``MAX_LOG_LINE_CHARS`` (with "…"), then the newest
    lines that fit. None for any other message."""
    if not isinstance(message, LogLines):
        return None
    budget = limit - 1024
    kept: list[LogLine] = []
    for line in reversed(message.lines):
        if len(line.text) > MAX_LOG_LINE_CHARS:
            line = LogLine(path=line.path, text=line.text[:MAX_LOG_LINE_CHARS] + "…")
        cost = (
            len(line.text.encode("utf-8", "surrogatepass"))
            + len(line.path.encode("utf-8", "surrogatepass"))
            + _LOG_LINE_OVERHEAD
        )
        if cost > budget:
            break
        budget -= cost
        kept.append(line)
    fitted = LogLines(lines=tuple(reversed(kept)))
    body = encode(fitted)
    return (fitted, body) if len(body) <= limit else None


class StatusPublisher:
    """Publishes ``Published`` messages on an XPUB socket with a Last Value Cache.

    ``await start()`` binds and starts reading subscriptions; ``publish()`` is
    synchronous and never blocks; ``await close()`` stops. Usable as an async context
    manager.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
        send_hwm: int = 1000,
        heartbeat_interval: float | None = 1.0,
        max_message_bytes: int = MAX_PUBLISHED_BYTES,
    ) -> None:
        self._bind_address = endpoint
        self._max_message_bytes = max_message_bytes
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat: asyncio.Task[None] | None = None
        self._context = context or zmq.asyncio.Context.instance()
        self._curve = curve
        self._send_hwm = send_hwm
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seq: dict[bytes, int] = {}
        self._cache: dict[bytes, _Cached] = {}
        # Random per process: subscribers tell a restarted main process from a repeat.
        self.epoch = secrets.randbits(63) + 1
        self.endpoint = endpoint
        self.counters = PublisherCounters()

    async def start(self) -> Self:
        socket = self._context.socket(zmq.XPUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, self._send_hwm)
        socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        limit_inbound(socket, MAX_SUBSCRIPTION_BYTES)
        if self._curve is not None:
            self._curve.configure_server(socket)
        try:
            socket.bind(self._bind_address)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._socket = socket
        self._reader = asyncio.create_task(self._read_subscriptions(), name="ipc-xpub-reader")
        if self._heartbeat_interval is not None:
            self._heartbeat = asyncio.create_task(
                self._beat(self._heartbeat_interval), name="ipc-xpub-heartbeat"
            )
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for task in (self._reader, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._heartbeat = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    # ------------------------------------------------------------------- publishing

    def publish(self, message: Published) -> int:
        """Send ``message`` to every subscriber of its topic; return its sequence number
        (0: it was too large to publish, see the module docstring).

        The message of a state topic becomes that topic's cached value first, so even a
        message nobody could receive right now reaches the next subscriber.
        """
        if not isinstance(message, PUBLISHED_TYPES):
            # A command (a Login above all) must never be broadcast.
            raise TypeError(f"{type(message).__name__} is not a published message type")
        topic = topic_for(message)
        body = encode(message)
        if len(body) > self._max_message_bytes:
            fitted = fit_log_lines(message, self._max_message_bytes)
            if fitted is None:
                self.counters.too_large += 1
                logger.warning(
                    "ipc publisher: a %s message of %d bytes is over the %d-byte limit; "
                    "not published",
                    type(message).__name__,
                    len(body),
                    self._max_message_bytes,
                )
                return 0
            message, body = fitted
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        frames = (topic, pack_sequence(self.epoch, seq), body)
        if is_state_topic(topic):
            if getattr(message, "closed", False):
                # A closed window's last word is sent, not remembered.
                self._cache.pop(topic, None)
            else:
                self._cache[topic] = _Cached(seq, message, frames)
        self._send(frames)
        self.counters.published += 1
        return seq

    def _send(self, frames: tuple[bytes, bytes, bytes]) -> None:
        if self._socket is None:
            raise RuntimeError("StatusPublisher.start() has not been awaited")
        sent = cast(
            "asyncio.Future[object]",
            self._socket.send_multipart(frames, flags=zmq.DONTWAIT, copy=True),
        )
        # zmq.asyncio resolves a DONTWAIT send immediately; read the outcome now so no
        # failed future is left for the loop to complain about.
        if sent.done():
            error = sent.exception()
            if isinstance(error, zmq.Again):
                self.counters.would_block += 1
            elif error is not None:
                self.counters.send_errors += 1
                logger.warning("ipc publish failed: %s", error)
        else:  # pragma: no cover - pyzmq always short-circuits DONTWAIT sends
            sent.cancel()
            self.counters.would_block += 1

    def heartbeat(self) -> int:
        """Publish a ``Heartbeat`` now (the heartbeat task calls this every interval)."""
        interval_ms = int((self._heartbeat_interval or 0) * 1000)
        # State topics only while cached: a closed window's topic has no value to resync to.
        seqs = {
            topic.decode("ascii"): seq
            for topic, seq in self._seq.items()
            if topic != TOPIC_HEARTBEAT and (not is_state_topic(topic) or topic in self._cache)
        }
        return self.publish(Heartbeat(seqs=seqs, interval_ms=interval_ms))

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.heartbeat()
            except Exception:  # a heartbeat must not end the task
                logger.exception("ipc publisher: heartbeat failed")

    # ------------------------------------------------------------------- the cache

    def cached(self, topic: bytes) -> Published | None:
        """The cached message of a state topic, if any."""
        entry = self._cache.get(topic)
        return None if entry is None else entry.message

    def snapshot(self) -> SnapshotReply:
        """Every cached state topic with its sequence number (the answer to Snapshot)."""
        return SnapshotReply(
            epoch=self.epoch,
            entries=tuple(
                SnapshotEntry(topic=topic.decode("ascii"), seq=entry.seq, message=entry.message)
                for topic, entry in self._cache.items()
            ),
        )

    async def _read_subscriptions(self) -> None:
        assert self._socket is not None
        socket = self._socket
        while True:
            try:
                frames = await socket.recv_multipart()
            except asyncio.CancelledError:
                raise
            except zmq.ZMQError as error:
                if error.errno == zmq.ENOTSOCK:
                    return
                logger.warning("ipc publisher: reading a subscription failed: %s", error)
                continue
            try:
                self._on_control(frames)
            except Exception:  # a peer's bytes must never end the reader
                self.counters.malformed_control += 1
                logger.exception("ipc publisher: subscription message not understood")

    def _on_control(self, frames: list[bytes]) -> None:
        if len(frames) != 1 or not frames[0] or frames[0][0] not in (_SUBSCRIBE, _UNSUBSCRIBE):
            self.counters.malformed_control += 1
            return
        control = frames[0]
        if control[0] == _UNSUBSCRIBE:
            self.counters.unsubscriptions += 1
            return
        self.counters.subscriptions += 1
        prefix = control[1:]
        for topic, entry in list(self._cache.items()):
            if topic.startswith(prefix):
                self._send(entry.frames)
                self.counters.cache_resends += 1
