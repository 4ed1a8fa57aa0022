"""A viewer's side of the status broadcast: SUB socket, repeats, gaps, resync.

Owns: checking each received ``[topic, sequence, body]`` message (a malformed one is
dropped and counted, never raised), dropping repeats and noticing gaps by sequence
number (``ipc/sequence.py``), and resynchronising after a gap with a ``Snapshot``
request on the command channel (zguide's Clone pattern: the snapshot carries the cached
value and sequence number of every state topic, and entries newer than what was
delivered are delivered).

Two drivers share that logic (``_SubscriberCore``):

* ``Subscriber``: asyncio, ``async for delivery in subscriber``. The snapshot request
  runs as a task while the iterator keeps reading, so a resync never stalls updates.
* ``SubscriberThread``: a background thread calling ``callback(delivery)``, for a
  pywebview window whose main thread belongs to the GUI loop. It polls its SUB socket,
  its own DEALER (the snapshot reply) and a wake-up socket pair (``stop()``) together,
  so stopping is immediate and needs no timeout polling.

Every socket here takes frames of at most ``endpoints.MAX_PUBLISHED_BYTES``: libzmq drops
the connection of a peer that sends a larger one, without reading it, and does not
reconnect after that protocol error (the viewer then hears no heartbeat and treats the main
process as gone). The main process never sends a larger one.

Must not: decide what a viewer shows, or send any command but ``Snapshot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket as stdlib_socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, cast

import zmq
import zmq.asyncio

from ipc.commands import CommandClient
from ipc.endpoints import MAX_PUBLISHED_BYTES, CurveKeys, limit_inbound
from ipc.messages import (
    ALL_TOPICS,
    DECODE_ERRORS,
    PUBLISHED_DECODER,
    REPLY_DECODER,
    TOPIC_HEARTBEAT,
    Heartbeat,
    Published,
    Reply,
    Snapshot,
    SnapshotReply,
    encode,
    is_state_topic,
    topic_for,
)
from ipc.sequence import SequenceTracker, unpack_sequence

logger = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_TIMEOUT: Final = 2.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message for the viewer, in order, never a repeat."""

    topic: str
    seq: int
    message: Published
    from_snapshot: bool = False


@dataclass(slots=True)
class SubscriberCounters:
    # Multipart messages read from the SUB socket (well-formed or not).
    received: int = 0
    malformed: int = 0
    resyncs: int = 0
    resync_failures: int = 0
    callback_errors: int = 0


def _socket_topics(topics: Iterable[bytes]) -> tuple[bytes, ...]:
    wanted = tuple(topics)
    # Heartbeats are always read (gap detection), delivered only when asked for.
    return (
        wanted if any(TOPIC_HEARTBEAT.startswith(t) for t in wanted) else (*wanted, TOPIC_HEARTBEAT)
    )


class _SubscriberCore:
    """Frame checking, sequence tracking and snapshot application; no I/O."""

    def __init__(self, topics: Iterable[bytes]) -> None:
        self.topics = tuple(topics)
        self.deliver_heartbeats = any(TOPIC_HEARTBEAT.startswith(t) for t in self.topics)
        self.tracker = SequenceTracker()
        self.counters = SubscriberCounters()
        # time.monotonic() of the last well-formed message (heartbeats included): a
        # viewer can tell that its main process is gone when this grows old.
        self.last_heard: float | None = None

    def _subscribed(self, topic: bytes) -> bool:
        return any(topic.startswith(prefix) for prefix in self.topics)

    def on_frames(self, frames: list[bytes]) -> Delivery | None:
        self.counters.received += 1
        if len(frames) != 3:
            self.counters.malformed += 1
            return None
        topic, sequence_frame, body = frames
        sequence = unpack_sequence(sequence_frame)
        if sequence is None or sequence[1] < 1:
            self.counters.malformed += 1
            return None
        try:
            message = PUBLISHED_DECODER.decode(body)
        except DECODE_ERRORS:
            self.counters.malformed += 1
            return None
        # A valid body on the wrong topic is as malformed as bad bytes: it would poison
        # the sequence numbers of the topic it claims.
        if topic_for(message) != topic:
            self.counters.malformed += 1
            return None
        epoch, seq = sequence
        self.last_heard = time.monotonic()
        if not self.tracker.accept(topic, epoch, seq):
            return None
        if isinstance(message, Heartbeat):
            for name, published in message.seqs.items():
                named = name.encode("ascii", "replace")
                if self._subscribed(named):
                    self.tracker.note_published(named, published, state=is_state_topic(named))
            if not self.deliver_heartbeats:
                return None
        return Delivery(topic.decode("ascii"), seq, message)

    def on_snapshot(self, reply: Reply) -> list[Delivery]:
        if not isinstance(reply, SnapshotReply):
            self.counters.resync_failures += 1
            logger.warning("ipc subscriber: Snapshot answered with %r", reply)
            return []
        self.tracker.begin_snapshot(reply.epoch)
        deliveries = []
        for entry in reply.entries:
            topic = entry.topic.encode("ascii", "replace")
            if topic_for(entry.message) != topic:
                continue
            if self.tracker.accept_snapshot_entry(topic, entry.seq):
                deliveries.append(Delivery(entry.topic, entry.seq, entry.message, True))
        return deliveries


def _make_sub_socket(
    socket: zmq.Socket[Any],
    endpoint: str,
    topics: Iterable[bytes],
    curve: CurveKeys | None,
    receive_hwm: int,
) -> None:
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVHWM, receive_hwm)
    limit_inbound(socket, MAX_PUBLISHED_BYTES)
    if curve is not None:
        curve.configure_client(socket)
    for topic in _socket_topics(topics):
        socket.setsockopt(zmq.SUBSCRIBE, topic)
    socket.connect(endpoint)


class Subscriber:
    """asyncio subscriber: ``async for delivery in subscriber: ...``.

    ``commands_endpoint`` is where ``Snapshot`` is sent after a gap; without it gaps
    are only counted.
    """

    def __init__(
        self,
        publisher_endpoint: str,
        commands_endpoint: str | None = None,
        topics: Iterable[bytes] = ALL_TOPICS,
        *,
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeys | None = None,
        receive_hwm: int = 1000,
        snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
    ) -> None:
        topics = tuple(topics)
        self._context = context or zmq.asyncio.Context.instance()
        self._socket: zmq.asyncio.Socket = self._context.socket(zmq.SUB)
        _make_sub_socket(self._socket, publisher_endpoint, topics, curve, receive_hwm)
        self._client = (
            None
            if commands_endpoint is None
            else CommandClient(commands_endpoint, context=self._context, curve=curve)
        )
        self._snapshot_timeout = snapshot_timeout
        self._core = _SubscriberCore(topics)
        self._ready: deque[Delivery] = deque()
        self._receive: asyncio.Future[list[bytes]] | None = None
        self._snapshot: asyncio.Task[Reply] | None = None

    @property
    def counters(self) -> SubscriberCounters:
        return self._core.counters

    @property
    def tracker(self) -> SequenceTracker:
        return self._core.tracker

    @property
    def last_heard(self) -> float | None:
        """``time.monotonic()`` of the last well-formed message, heartbeats included."""
        return self._core.last_heard

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        while not self._ready:
            if self._receive is None:
                self._receive = cast("asyncio.Future[list[bytes]]", self._socket.recv_multipart())
            waiting: set[asyncio.Future[list[bytes]] | asyncio.Task[Reply]] = {self._receive}
            if self._snapshot is not None:
                waiting.add(self._snapshot)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if self._snapshot is not None and self._snapshot in done:
                self._finish_snapshot(self._snapshot)
                self._snapshot = None
            if self._receive in done:
                receive, self._receive = self._receive, None
                try:
                    frames = receive.result()
                except zmq.ZMQError as error:
                    if error.errno == zmq.ENOTSOCK:
                        raise StopAsyncIteration from None
                    logger.warning("ipc subscriber: receive failed: %s", error)
                    continue
                delivery = self._core.on_frames(frames)
                if delivery is not None:
                    self._ready.append(delivery)
                self._maybe_resync()
        return self._ready.popleft()

    def _maybe_resync(self) -> None:
        if self._client is None or self._snapshot is not None:
            return
        if self._core.tracker.take_resync():
            self._core.counters.resyncs += 1
            self._snapshot = asyncio.create_task(
                self._client.request(Snapshot(), timeout=self._snapshot_timeout)
            )

    def _finish_snapshot(self, task: asyncio.Task[Reply]) -> None:
        try:
            reply = task.result()
        except Exception as error:
            self._core.counters.resync_failures += 1
            logger.warning("ipc subscriber: resync failed: %s", error)
            return
        self._ready.extend(self._core.on_snapshot(reply))

    async def close(self) -> None:
        if self._receive is not None:
            self._receive.cancel()
            self._receive = None
        if self._snapshot is not None:
            self._snapshot.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._snapshot
            self._snapshot = None
        if self._client is not None:
            await self._client.close()
        self._socket.close(linger=0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class SubscriberThread:
    """A background thread delivering to ``callback(delivery)`` (called on that thread).

    ``start()`` returns once the sockets are connected; ``stop()`` wakes the thread and
    joins it. A callback that raises is logged and counted; the thread goes on.
    """

    def __init__(
        self,
        publisher_endpoint: str,
        commands_endpoint: str | None,
        callback: Callable[[Delivery], None],
        topics: Iterable[bytes] = ALL_TOPICS,
        *,
        curve: CurveKeys | None = None,
        receive_hwm: int = 1000,
        snapshot_timeout: float = DEFAULT_SNAPSHOT_TIMEOUT,
        name: str = "ipc-subscriber",
    ) -> None:
        self._publisher_endpoint = publisher_endpoint
        self._commands_endpoint = commands_endpoint
        self._callback = callback
        self._topics = tuple(topics)
        self._curve = curve
        self._receive_hwm = receive_hwm
        self._snapshot_timeout = snapshot_timeout
        self._core = _SubscriberCore(self._topics)
        self._wake_reader, self._wake_writer = stdlib_socket.socketpair()
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def counters(self) -> SubscriberCounters:
        return self._core.counters

    @property
    def tracker(self) -> SequenceTracker:
        return self._core.tracker

    @property
    def last_heard(self) -> float | None:
        """``time.monotonic()`` of the last well-formed message, heartbeats included."""
        return self._core.last_heard

    def start(self) -> Self:
        self._thread.start()
        self._started.wait()
        if self._startup_error is not None:
            raise self._startup_error
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._wake_writer.close()
        self._wake_reader.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _deliver(self, delivery: Delivery) -> None:
        try:
            self._callback(delivery)
        except Exception:
            self._core.counters.callback_errors += 1
            logger.exception("ipc subscriber callback failed")

    def _run(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sockets: list[zmq.Socket[bytes]] = []
        try:
            sub = context.socket(zmq.SUB)
            sockets.append(sub)
            _make_sub_socket(
                sub, self._publisher_endpoint, self._topics, self._curve, self._receive_hwm
            )
            dealer: zmq.Socket[bytes] | None = None
            if self._commands_endpoint is not None:
                dealer = context.socket(zmq.DEALER)
                sockets.append(dealer)
                dealer.setsockopt(zmq.LINGER, 0)
                limit_inbound(dealer, MAX_PUBLISHED_BYTES)
                if self._curve is not None:
                    self._curve.configure_client(dealer)
                dealer.connect(self._commands_endpoint)
        except BaseException as error:
            self._startup_error = error
            self._started.set()
            for socket in sockets:
                socket.close(linger=0)
            context.term()
            return
        self._started.set()
        try:
            self._loop(sub, dealer)
        except Exception:
            logger.exception("ipc subscriber thread stopped by an error")
        finally:
            for socket in sockets:
                socket.close(linger=0)
            context.term()

    def _loop(self, sub: zmq.Socket[bytes], dealer: zmq.Socket[bytes] | None) -> None:
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(self._wake_reader, zmq.POLLIN)
        if dealer is not None:
            poller.register(dealer, zmq.POLLIN)
        request_ids = iter(range(1, 2**63))
        pending: bytes | None = None
        deadline = 0.0
        while True:
            timeout_ms = (
                None if pending is None else max(0, int((deadline - time.monotonic()) * 1000) + 1)
            )
            events = dict(poller.poll(timeout_ms))
            if self._wake_reader.fileno() in events or self._wake_reader in events:
                return
            if sub in events:
                # Drain what is there, but not forever: a snapshot reply must get a turn.
                for _ in range(1000):
                    try:
                        frames = sub.recv_multipart(zmq.DONTWAIT)
                    except zmq.Again:
                        break
                    delivery = self._core.on_frames(frames)
                    if delivery is not None:
                        self._deliver(delivery)
            if dealer is not None and dealer in events:
                while True:
                    try:
                        frames = dealer.recv_multipart(zmq.DONTWAIT)
                    except zmq.Again:
                        break
                    if pending is None or len(frames) != 2 or frames[0] != pending:
                        continue
                    pending = None
                    try:
                        reply = REPLY_DECODER.decode(frames[1])
                    except DECODE_ERRORS:
                        self._core.counters.resync_failures += 1
                        continue
                    for delivery in self._core.on_snapshot(reply):
                        self._deliver(delivery)
            if pending is not None and time.monotonic() >= deadline:
                pending = None
                self._core.counters.resync_failures += 1
                logger.warning("ipc subscriber: Snapshot not answered in time")
            if dealer is not None and pending is None and self._core.tracker.take_resync():
                pending = next(request_ids).to_bytes(8, "big")
                deadline = time.monotonic() + self._snapshot_timeout
                self._core.counters.resyncs += 1
                try:
                    dealer.send_multipart((pending, encode(Snapshot())), zmq.DONTWAIT)
                except zmq.Again:
                    pending = None
                    self._core.counters.resync_failures += 1
