"""Publisher and subscribers over real ZeroMQ sockets: the Last Value Cache, repeats,
gaps and resync, a stuck subscriber, a restarted publisher, and that a Login is never
echoed to anyone listening."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import zmq
import zmq.asyncio

from ipc.commands import CommandClient, CommandServer
from ipc.messages import (
    Command,
    Failed,
    Login,
    Ok,
    Reply,
    Snapshot,
    SnapshotEntry,
    SnapshotReply,
    Stats,
    Status,
    WindowState,
    encode,
)
from ipc.publisher import StatusPublisher
from ipc.sequence import pack_sequence
from ipc.subscriber import Delivery, Subscriber, SubscriberThread
from tests.support.ipc_helpers import deliveries_until, next_delivery, running_host, short_dir

pytestmark = pytest.mark.timeout(60)


def status(attempt: int, **fields: object) -> Status:
    return Status(state="disconnected", attempt=attempt, **fields)  # type: ignore[arg-type]


async def test_late_joiner_gets_the_current_status_within_50ms() -> None:
    async with running_host() as host:
        for attempt in range(1, 6):
            host.publisher.publish(status(attempt))
        started = time.perf_counter()
        subscriber = Subscriber(host.endpoints.publisher, host.endpoints.commands)
        try:
            first = await next_delivery(subscriber, timeout=2.0)
            elapsed = time.perf_counter() - started
        finally:
            await subscriber.close()
    assert isinstance(first.message, Status)
    assert (first.message.attempt, first.seq) == (5, 5)
    assert not first.from_snapshot, "the Last Value Cache, not a snapshot, brought it"
    assert elapsed < 0.050, f"late joiner waited {elapsed * 1000:.1f} ms"


async def test_cache_resend_for_a_newcomer_is_a_repeat_for_the_others() -> None:
    async with running_host() as host:
        host.publisher.publish(status(1))
        first = Subscriber(host.endpoints.publisher)
        second = Subscriber(host.endpoints.publisher)
        try:
            assert (await next_delivery(first)).seq == 1
            assert (await next_delivery(second)).seq == 1  # resent to `first` too
            host.publisher.publish(status(2))
            after = await next_delivery(first)
            assert (after.seq, after.message) == (2, status(2))
            assert first.tracker.counters.repeats == 1
            assert host.publisher.counters.cache_resends == 2
        finally:
            await first.close()
            await second.close()


async def test_each_window_state_is_cached_until_the_window_closes() -> None:
    async with running_host() as host:
        host.publisher.publish(WindowState(host=101, window=1, ready=True, title="status"))
        host.publisher.publish(WindowState(host=101, window=2, ready=False))
        host.publisher.publish(WindowState(host=101, window=2, ready=True, title="logs"))
        host.publisher.publish(WindowState(host=101, window=3, ready=True))
        host.publisher.publish(WindowState(host=101, window=3, closed=True))
        host.publisher.publish(Stats(files_done=1))
        subscriber = Subscriber(host.endpoints.publisher, topics=[b"window."])
        try:
            seen = {(await next_delivery(subscriber)).topic for _ in range(2)}
            assert seen == {"window.101.1", "window.101.2"}
            host.publisher.publish(WindowState(host=101, window=1, title="login"))
            latest = await next_delivery(subscriber)
            assert latest.message == WindowState(host=101, window=1, title="login")
        finally:
            await subscriber.close()
        assert {entry.topic for entry in host.publisher.snapshot().entries} == {
            "window.101.1",
            "window.101.2",
            "stats",
        }


async def test_thread_subscriber_delivers_in_order_to_its_callback() -> None:
    async with running_host() as host:
        host.publisher.publish(status(0))
        received: queue.Queue[Delivery] = queue.Queue()
        thread = SubscriberThread(host.endpoints.publisher, host.endpoints.commands, received.put)
        thread.start()
        try:
            assert (await asyncio.to_thread(received.get, timeout=5)).message == status(0)
            for attempt in range(1, 101):
                host.publisher.publish(status(attempt))
            got = [(await asyncio.to_thread(received.get, timeout=5)) for _ in range(100)]
        finally:
            await asyncio.to_thread(thread.stop)
        assert [d.message.attempt for d in got if isinstance(d.message, Status)] == list(
            range(1, 101)
        )
        assert not thread._thread.is_alive()


async def test_a_stuck_subscriber_does_not_slow_the_publisher() -> None:
    count = 200_000
    async with running_host(heartbeat_interval=0.1) as host:
        host.publisher.publish(status(0))
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        stuck = context.socket(zmq.SUB)
        stuck.setsockopt(zmq.RCVHWM, 10)
        stuck.setsockopt(zmq.SUBSCRIBE, b"status")
        stuck.connect(host.endpoints.publisher)
        live = Subscriber(host.endpoints.publisher, host.endpoints.commands, [b"status"])
        try:
            assert (await next_delivery(live)).seq == 1
            assert await asyncio.to_thread(stuck.poll, 5000), "stuck subscriber never joined"
            stuck.recv_multipart()  # joined; from now on it never reads again

            slowest = 0.0
            started = time.perf_counter()
            for attempt in range(1, count + 1):
                before = time.perf_counter()
                host.publisher.publish(status(attempt))
                slowest = max(slowest, time.perf_counter() - before)
            elapsed = time.perf_counter() - started

            # The live subscriber lost most of the burst (the publisher never waits), and
            # the burst's end with it; the heartbeat shows it is behind, a snapshot
            # brings the present.
            received = await deliveries_until(
                live, lambda d: isinstance(d.message, Status) and d.message.attempt == count
            )
        finally:
            stuck.close(linger=0)
            await live.close()
    assert host.publisher.counters.would_block == 0
    assert slowest < 0.05, f"one publish took {slowest * 1000:.1f} ms"
    assert elapsed < 20.0, f"{count} publishes took {elapsed:.1f} s"
    assert live.counters.resyncs >= 1
    assert received[-1].from_snapshot
    assert len(received) < count, "nothing was dropped, so nothing was shown"
    print(
        f"\n{count} publishes with a stuck subscriber: {elapsed:.2f} s, slowest {slowest * 1e6:.0f} us"
    )


# ------------------------------------------------------------------------ gap → resync


@asynccontextmanager
async def scripted_publisher(
    snapshot: SnapshotReply,
) -> AsyncIterator[tuple[zmq.asyncio.Socket, str, str]]:
    """A bare XPUB the test writes frames to, and a command server answering Snapshot
    with ``snapshot``: full control over sequence numbers."""
    context = zmq.asyncio.Context.instance()

    async def handler(command: Command) -> Reply:
        if isinstance(command, Snapshot):
            return snapshot
        return Failed(code="unexpected", message=repr(command))

    with short_dir() as root:
        xpub = context.socket(zmq.XPUB)
        xpub.setsockopt(zmq.LINGER, 0)
        xpub.bind(f"ipc://{root}/pub.sock")
        async with CommandServer(f"ipc://{root}/cmd.sock", handler) as server:
            try:
                yield xpub, f"ipc://{root}/pub.sock", server.endpoint
            finally:
                xpub.close(linger=0)


async def wait_subscribed(xpub: zmq.asyncio.Socket, topic: bytes) -> None:
    async with asyncio.timeout(5):
        while (await xpub.recv()) != b"\x01" + topic:
            pass


@pytest.mark.parametrize("driver", ["asyncio", "thread"])
async def test_gap_is_repaired_by_a_snapshot(driver: str) -> None:
    epoch = 42
    snapshot = SnapshotReply(
        epoch=epoch,
        entries=(
            SnapshotEntry(topic="status", seq=9, message=status(9)),
            SnapshotEntry(topic="stats", seq=4, message=Stats(files_done=4)),
        ),
    )

    def frames(seq: int) -> list[bytes]:
        return [b"status", pack_sequence(epoch, seq), encode(status(seq))]

    async with scripted_publisher(snapshot) as (xpub, pub_endpoint, cmd_endpoint):
        topics = [b"status", b"stats"]
        received: queue.Queue[Delivery] = queue.Queue()
        if driver == "asyncio":
            subscriber = Subscriber(pub_endpoint, cmd_endpoint, topics)

            async def take() -> Delivery:
                return await next_delivery(subscriber)
        else:
            thread = SubscriberThread(pub_endpoint, cmd_endpoint, received.put, topics).start()

            async def take() -> Delivery:
                return await asyncio.to_thread(received.get, timeout=5)

        try:
            await wait_subscribed(xpub, b"stats")
            for seq in (1, 2, 5):  # 3 and 4 lost
                await xpub.send_multipart(frames(seq))
            got = [await take() for _ in range(5)]
            # Queued before the snapshot arrived: older than what it delivered.
            await xpub.send_multipart(frames(8))
            await xpub.send_multipart(frames(10))
            got.append(await take())
        finally:
            if driver == "asyncio":
                await subscriber.close()
                tracker, counters = subscriber.tracker, subscriber.counters
            else:
                await asyncio.to_thread(thread.stop)
                tracker, counters = thread.tracker, thread.counters

    assert [(d.topic, d.seq, d.from_snapshot) for d in got] == [
        ("status", 1, False),
        ("status", 2, False),
        ("status", 5, False),
        ("status", 9, True),
        ("stats", 4, True),
        ("status", 10, False),
    ]
    assert (tracker.counters.gaps, tracker.counters.lost, tracker.counters.repeats) == (1, 2, 1)
    assert (counters.resyncs, counters.resync_failures, counters.malformed) == (1, 0, 0)


async def test_a_restarted_publisher_is_followed_not_ignored() -> None:
    with short_dir() as root:
        endpoint = f"ipc://{root}/pub.sock"
        first = await StatusPublisher(endpoint).start()
        for attempt in range(1, 51):
            first.publish(status(attempt))
        subscriber = Subscriber(endpoint)
        try:
            assert (await next_delivery(subscriber)).seq == 50
            await first.close()
            second = await StatusPublisher(endpoint).start()
            second.publish(status(1000))
            try:
                # The new process numbers from 1 again; its epoch tells it is new.
                again = await next_delivery(subscriber, timeout=10)
            finally:
                await second.close()
        finally:
            await subscriber.close()
    assert (again.seq, again.message) == (1, status(1000))
    assert subscriber.tracker.counters.restarts == 1


# ------------------------------------------------------------------------ no echo


async def test_a_crafted_login_is_never_echoed_to_any_subscriber() -> None:
    password = "correct horse battery staple 7f3a"
    raw_frames: list[list[bytes]] = []

    async def careless_handler(command: Command) -> Reply:
        # The kind of code that leaks: it puts the command into status and into the
        # error of an exception. Login's repr hides the password, so neither can.
        host.publisher.publish(Status(state="error", last_error=f"handled {command!r}"))
        host.publisher.publish(WindowState(host=1, window=1, title=str(command)))
        if isinstance(command, Login):
            raise ValueError(f"login refused for {command}")
        return Ok()

    async with running_host(careless_handler) as host:
        context = zmq.asyncio.Context.instance()
        listener = context.socket(zmq.SUB)
        listener.setsockopt(zmq.SUBSCRIBE, b"")  # every topic, heartbeats included
        listener.connect(host.endpoints.publisher)
        typed = Subscriber(host.endpoints.publisher, host.endpoints.commands)
        client = CommandClient(host.endpoints.commands)
        try:
            host.publisher.publish(status(0))
            assert (await next_delivery(typed)).message == status(0)
            async with asyncio.timeout(5):
                raw_frames.append(await listener.recv_multipart())

            reply = await client.request(Login(identifier="ann", password=password))
            assert isinstance(reply, Failed)
            assert reply.code == "internal"
            assert password not in reply.message
            with pytest.raises(TypeError):
                host.publisher.publish(Login(identifier="ann", password=password))  # type: ignore[arg-type]
            host.publisher.heartbeat()
            host.publisher.publish(status(99))

            # Everything published up to the marker, read by a raw listener.
            async with asyncio.timeout(5):
                while True:
                    raw_frames.append(await listener.recv_multipart())
                    if raw_frames[-1][2] == encode(status(99)):
                        break
            typed_seen = await deliveries_until(typed, lambda d: d.message == status(99))
        finally:
            listener.close(linger=0)
            await typed.close()
            await client.close()

    assert any(b"Login(identifier='ann', password=<hidden>)" in f[2] for f in raw_frames), (
        "the careless handler's status did not arrive, so the test proved nothing"
    )
    needle = password.encode()
    assert not any(needle in frame for frames in raw_frames for frame in frames)
    assert not any(password in repr(d.message) for d in typed_seen)
