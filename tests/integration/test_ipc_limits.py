"""What a hostile or broken ipc peer can do: size limits on every receiving socket (a frame
over the limit disconnects its sender before it is read: the real main process's memory
stays flat and it keeps answering), the main process never sending a frame a viewer
would refuse, and the private runtime directory refused when someone else could replace
it (a directory above it that another user owns or can write)."""

from __future__ import annotations

import asyncio
import json
import os
import socket as stdlib_socket
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

import ipc.endpoints as endpoints_module
from harness.main_process_runner import MainProcessRunner
from ipc.commands import CommandTimeoutError, SyncCommandClient
from ipc.endpoints import (
    MAX_COMMAND_BYTES,
    MAX_PUBLISHED_BYTES,
    MAX_SUBSCRIPTION_BYTES,
    EndpointError,
    Endpoints,
    instance_key,
    prepare_runtime_dir,
    verify_private_chain,
)
from ipc.host import connect_client
from ipc.messages import (
    REPLY_DECODER,
    TOPIC_EVENT,
    TOPIC_LOGS,
    TOPIC_STATUS,
    Command,
    Failed,
    Login,
    LogLine,
    LogLines,
    Ok,
    Ping,
    Reply,
    ServerEvent,
    encode,
)
from ipc.publisher import MAX_LOG_LINE_CHARS, StatusPublisher
from ipc.sequence import pack_sequence
from ipc.subscriber import Subscriber
from tests.support.ipc_helpers import RecordingHandler, next_delivery, running_host, short_dir

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024
HOSTILE_FRAME = 200 * MIB
# What the main process may grow by while 200 MiB frames are thrown at it (its RSS is
# ~50 MiB; a frame read whole would add at least 200 MiB).
RSS_GROWTH_BOUND = 48 * MIB


def closed_port() -> int:
    with stdlib_socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak so far) of ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def wait_for_event(monitor: zmq.Socket[bytes], event: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ready = monitor.poll(int(remaining * 1000) + 1)
        if ready and recv_monitor_message(monitor)["event"] == event:
            return
    raise AssertionError(f"no monitor event {event} within {timeout} s")


class HostilePeer:
    """A peer speaking ZMTP 3.0 by hand on a Unix socket (NULL security, as ``ipc://``
    uses), so it can declare and stream a frame of any size without a libzmq of its own
    keeping a copy: ``send_huge_frame`` returns how many bytes went out before the other
    end closed the connection (all of them when it did not)."""

    def __init__(self, endpoint: str, socket_type: bytes) -> None:
        self._socket = stdlib_socket.socket(stdlib_socket.AF_UNIX)
        self._socket.settimeout(30)
        self._socket.connect(endpoint.removeprefix("ipc://"))
        greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0")
        self._socket.sendall(greeting + bytes(32))
        self._receive_exactly(64)  # the other end's greeting
        body = b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type)) + socket_type
        self._socket.sendall(bytes([0x04, len(body)]) + body)
        flags, size = self._receive_exactly(2)
        assert flags == 0x04, "the other end did not answer READY"
        self._receive_exactly(size)

    def _receive_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self._socket.recv(count - len(data))
            assert chunk, "connection closed during the handshake"
            data += chunk
        return data

    def send_huge_frame(self, size: int, prefix_frames: tuple[bytes, ...] = ()) -> int:
        for frame in prefix_frames:  # short frames, "more" flag set
            self._socket.sendall(bytes([0x01, len(frame)]) + frame)
        chunk = bytes(MIB)
        sent = 0
        try:
            self._socket.sendall(bytes([0x02]) + struct.pack(">Q", size))
            while sent < size:
                piece = chunk[: size - sent]
                self._socket.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
def main_process(tmp_path: Path) -> Iterator[MainProcessRunner]:
    # A server that is not there: the main process only has to answer on ipc.
    runner = MainProcessRunner(
        tmp_path / "client", "--server", f"http://127.0.0.1:{closed_port()}"
    ).start()
    try:
        yield runner
    finally:
        runner.ensure_stopped()


def test_oversize_frames_disconnect_the_peer_and_leave_the_main_process_small_and_answering(
    main_process: MainProcessRunner,
) -> None:
    assert main_process.process is not None
    pid = main_process.process.pid
    endpoints = Endpoints.discover(main_process.data_dir)
    peak_before = memory_kib(pid, "VmHWM")
    # The command channel: [request id, a 200 MiB body]; the publisher's subscription
    # side: a 200 MiB "subscription". Twice each.
    attacks = [
        (endpoints.commands, b"DEALER", (b"request",)),
        (endpoints.publisher, b"XSUB", ()),
    ] * 2
    for endpoint, socket_type, prefix in attacks:
        peer = HostilePeer(endpoint, socket_type)
        try:
            sent = peer.send_huge_frame(HOSTILE_FRAME, prefix)
        finally:
            peer.close()
        assert sent < HOSTILE_FRAME, f"{socket_type.decode()}: the whole frame was taken"
    # Still answering, at once.
    with SyncCommandClient(endpoints.commands) as client:
        started = time.monotonic()
        assert isinstance(client.request(Ping(), timeout=5), Ok)
        assert time.monotonic() - started < 2
    assert main_process.status() is not None
    peak_growth = (memory_kib(pid, "VmHWM") - peak_before) * 1024
    assert peak_growth < RSS_GROWTH_BOUND, f"peak RSS grew by {peak_growth / MIB:.0f} MiB"


async def test_a_frame_of_exactly_the_command_limit_is_read_and_one_byte_more_is_not() -> None:
    """The bound is inclusive, and the largest legitimate commands are far below it."""
    assert len(encode(Login(identifier="x" * 4096, password="p" * 4096))) < MAX_COMMAND_BYTES
    async with running_host() as host:
        context = zmq.asyncio.Context.instance()
        at_limit = context.socket(zmq.DEALER)
        over = context.socket(zmq.DEALER)
        try:
            for sock in (at_limit, over):
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(host.endpoints.commands)
            # [request id, body]: the body frame is what is limited.
            await at_limit.send_multipart([b"r", b"\x00" * MAX_COMMAND_BYTES])
            reply = await asyncio.wait_for(at_limit.recv_multipart(), 10)
            answer = REPLY_DECODER.decode(reply[1])
            assert isinstance(answer, Failed)
            assert answer.code == "invalid"
            await over.send_multipart([b"r", b"\x00" * (MAX_COMMAND_BYTES + 1)])
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(over.recv_multipart(), 1.0)
            assert host.commands.counters.received == 1, "the oversize frame was read"
        finally:
            at_limit.close(linger=0)
            over.close(linger=0)


async def test_a_subscriber_disconnects_from_a_publisher_sending_an_oversize_frame() -> None:
    """The viewer side: an XPUB (standing in for a hostile or broken main process) sends a
    frame over ``MAX_PUBLISHED_BYTES``; the subscriber's socket drops the connection
    before reading it (libzmq does not reconnect after such a protocol error: the viewer
    then hears no heartbeat and treats the main process as gone)."""
    with short_dir() as root:
        endpoint = f"ipc://{root}/pub.sock"
        context = zmq.asyncio.Context.instance()
        xpub = context.socket(zmq.XPUB)
        xpub.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        xpub.bind(endpoint)
        subscriber = Subscriber(endpoint, None, (TOPIC_STATUS,))
        receiving = asyncio.ensure_future(next_delivery(subscriber, 30))
        try:
            subscription = await asyncio.wait_for(xpub.recv(), 10)
            assert subscription.startswith(b"\x01")
            await xpub.send_multipart(
                [TOPIC_STATUS, pack_sequence(1, 1), bytes(MAX_PUBLISHED_BYTES + 1)]
            )
            # The connection is gone: the XPUB hears the subscriptions end.
            unsubscribed: set[bytes] = set()
            async with asyncio.timeout(20):
                while b"\x00" + TOPIC_STATUS not in unsubscribed:
                    unsubscribed.add(await xpub.recv())
            assert subscriber.counters.received == 0
            assert not receiving.done()
        finally:
            receiving.cancel()
            await subscriber.close()
            xpub.close(linger=0)


def test_a_command_client_does_not_read_an_oversize_reply() -> None:
    with short_dir() as root:
        endpoint = f"ipc://{root}/cmd.sock"
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(endpoint)
        try:
            with SyncCommandClient(endpoint) as client:
                # The reply is sent from a thread while the client waits for it.
                def answer_too_much() -> None:
                    identity, request_id, _ = router.recv_multipart()
                    router.send_multipart(
                        [identity, request_id, b"\x00" * (MAX_PUBLISHED_BYTES + 1)]
                    )

                thread = threading.Thread(target=answer_too_much, daemon=True)
                thread.start()
                with pytest.raises(CommandTimeoutError):
                    client.request(Ping(), timeout=2)
                thread.join(10)
        finally:
            router.close(linger=0)
            context.term()


async def test_the_publisher_never_sends_a_frame_a_viewer_would_refuse() -> None:
    """Recent lines over the limit are cut and the newest kept; any other message over
    it is not published, and subscribers see no gap and stay connected."""
    limit = 256 * 1024
    with short_dir() as root:
        publisher = StatusPublisher(
            f"ipc://{root}/pub.sock", max_message_bytes=limit, heartbeat_interval=None
        )
        await publisher.start()
        subscriber = Subscriber(publisher.endpoint, None, (TOPIC_LOGS, TOPIC_EVENT))
        try:
            # Wait until the subscription is in place: publish until one arrives.
            async with asyncio.timeout(10):
                while True:
                    publisher.publish(LogLines(lines=(LogLine(path="/p", text="hello"),)))
                    try:
                        first = await asyncio.wait_for(anext(subscriber), 0.2)
                        break
                    except TimeoutError:
                        continue
            assert isinstance(first.message, LogLines)
            long_lines = tuple(
                LogLine(path="/var/log/app.log", text=f"{n:04d}" + "x" * 20_000) for n in range(100)
            )
            seq = publisher.publish(LogLines(lines=long_lines))
            assert seq > 0
            cut = await next_delivery(subscriber)
            assert isinstance(cut.message, LogLines)
            lines = cut.message.lines
            assert 0 < len(lines) < 100
            assert lines[-1].text.startswith("0099"), "the newest lines are kept"
            assert all(len(line.text) == MAX_LOG_LINE_CHARS + 1 for line in lines)
            assert all(line.text.endswith("…") for line in lines)
            assert len(encode(cut.message)) <= limit
            # A server event too large to publish is dropped, not sent.
            assert publisher.publish(ServerEvent(payload={"blob": "y" * limit})) == 0
            assert publisher.counters.too_large == 1
            publisher.publish(ServerEvent(payload={"small": 1}))
            after = await next_delivery(subscriber)
            assert isinstance(after.message, ServerEvent)
            assert after.message.payload == {"small": 1}
            assert subscriber.counters.malformed == 0
            assert not subscriber.tracker.take_resync(), "a gap was seen"
        finally:
            await subscriber.close()
            await publisher.close()


async def test_replies_and_requests_over_the_limits_become_failed_too_large() -> None:
    big = "z" * (MAX_PUBLISHED_BYTES + 1)

    async def handler(command: Command) -> Reply:
        return Ok(data={"blob": big})

    recording = RecordingHandler()
    async with running_host(handler) as host:
        client = connect_client(host.data_dir, runtime_base=host.endpoints.runtime_dir.parent)
        try:
            reply = await client.request(Ping(), timeout=5)
            assert isinstance(reply, Ok)
            reply = await client.request(Login(identifier="a", password="b"), timeout=10)
            assert isinstance(reply, Failed)
            assert reply.code == "too_large"
            assert host.commands.counters.too_large == 1
        finally:
            await client.close()
    async with running_host(recording) as host:
        client = connect_client(host.data_dir, runtime_base=host.endpoints.runtime_dir.parent)
        try:
            oversize = Login(identifier="a", password="p" * MAX_COMMAND_BYTES)
            reply = await client.request(oversize, timeout=5)
            assert isinstance(reply, Failed)
            assert reply.code == "too_large"
            assert "Login request" in reply.message
            # Not sent: the client is still connected and nothing reached the handler.
            assert isinstance(await client.request(Ping(), timeout=5), Ok)
            assert recording.commands == []
        finally:
            await client.close()


def test_subscription_limit_fits_every_topic() -> None:
    longest = b"window." + str(2**22).encode() + b"." + str(2**31).encode()
    assert 1 + len(longest) < MAX_SUBSCRIPTION_BYTES


# --------------------------------------------------------------------- the runtime dir


def one_sentence(message: str) -> None:
    assert "\n" not in message
    assert message.endswith(".")


def test_a_runtime_dir_under_a_directory_others_can_write_is_refused() -> None:
    with short_dir() as root:
        shared = root / "shared"
        shared.mkdir()
        shared.chmod(0o777)  # world-writable, not sticky: anyone can rename entries
        with pytest.raises(EndpointError) as refused:
            prepare_runtime_dir(root / "data", base=shared / "run")
        message = str(refused.value)
        one_sentence(message)
        assert f"{shared} can be written by other users and is not sticky" in message
        # Sticky (like /tmp): others cannot rename what is ours, so it is accepted.
        shared.chmod(0o1777)
        chosen = prepare_runtime_dir(root / "data", base=shared / "run")
        assert stat.S_IMODE(os.lstat(chosen).st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's directory")
def test_a_runtime_dir_under_another_users_directory_is_refused() -> None:
    with short_dir() as root:
        theirs = root / "theirs"
        theirs.mkdir(mode=0o755)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(EndpointError) as refused:
            prepare_runtime_dir(root / "data", base=theirs)
        message = str(refused.value)
        one_sentence(message)
        assert f"{theirs} belongs to another user (uid 65534)" in message


def test_an_unsafe_platform_runtime_dir_falls_back_to_the_private_temp_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """platformdirs vets ``$XDG_RUNTIME_DIR`` itself on Linux, not everywhere (macOS's
    is a cache directory; older releases did not): a platform directory that others can
    write is passed over for the private temp dir, whatever platformdirs says."""
    with short_dir() as root:
        shared = root / "platform"
        shared.mkdir()
        shared.chmod(0o777)
        monkeypatch.setattr(endpoints_module, "_platform_runtime_base", lambda: shared)
        chosen = prepare_runtime_dir(root / "data")
        assert chosen.parent.name == f"lm-{os.getuid()}"
        verify_private_chain(chosen)


def test_a_viewer_does_not_use_endpoints_in_a_directory_others_could_replace() -> None:
    """Someone who can write a directory above the runtime dir plants ``endpoints.json``
    pointing at their own socket: a viewer (which would send it a password) refuses."""
    with short_dir() as root:
        shared = root / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        planted = shared / "run" / instance_key(root / "data")
        planted.mkdir(parents=True, mode=0o700)
        (planted / "endpoints.json").write_text(
            json.dumps(
                {
                    "transport": "ipc",
                    "publisher": f"ipc://{root}/theirs-pub.sock",
                    "commands": f"ipc://{root}/theirs-cmd.sock",
                    "pid": 1,
                }
            )
        )
        with pytest.raises(EndpointError) as refused:
            Endpoints.discover(root / "data", base=shared / "run")
        one_sentence(str(refused.value))
        assert "not sticky" in str(refused.value)
