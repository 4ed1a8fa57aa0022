"""Garbage in: 10,000 random multipart messages at the command server and 10,000 into a
subscriber. Neither stops, every message is accounted for in the counters, and a valid
request or message still works afterwards. Also: a handler that raises."""

from __future__ import annotations

import asyncio
import random

import msgspec
import pytest
import zmq
import zmq.asyncio

from ipc.commands import MAX_REQUEST_ID, CommandClient, CommandServer
from ipc.messages import (
    DECODE_ERRORS,
    Command,
    Failed,
    GetStatus,
    Login,
    Ok,
    OpenWindow,
    Ping,
    Reply,
    Status,
    encode,
)
from ipc.sequence import pack_sequence
from ipc.subscriber import Subscriber
from tests.support.ipc_helpers import next_delivery, short_dir

pytestmark = pytest.mark.timeout(60)

COUNT = 10_000


def random_body(rng: random.Random) -> bytes:
    """Bytes that are sometimes valid msgpack, sometimes almost a message."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 40))
    if kind == 1:
        valid = bytearray(encode(Login(identifier="a", password="b")))
        valid[rng.randrange(len(valid))] = rng.randrange(256)
        return bytes(valid)
    if kind == 2:
        return msgspec.msgpack.encode({"type": rng.choice(["login", "connect", "ok", "nope"])})
    if kind == 3:
        return msgspec.msgpack.encode(
            {"type": "login", "identifier": rng.choice([1, None, [], "x"]), "password": 2.5}
        )
    if kind == 4:
        return msgspec.msgpack.encode(rng.choice([[], 1, "status", {"type": 7}, None]))
    return encode(Status(state="connected"))  # a published type is not a command


def random_request(rng: random.Random) -> list[bytes]:
    frame_count = rng.choice([1, 1, 2, 2, 2, 2, 3, 4])
    frames = [rng.randbytes(rng.choice([0, 1, 8, 8, 8, 65, 70]))]
    frames += [random_body(rng) for _ in range(frame_count - 1)]
    return frames


def expected_outcome(frames: list[bytes]) -> str:
    if len(frames) < 2 or not 0 < len(frames[0]) <= MAX_REQUEST_ID:
        return "dropped"
    return "invalid"


async def test_random_frames_at_the_command_server() -> None:
    rng = random.Random(20261125)
    requests = [random_request(rng) for _ in range(COUNT)]
    # A random body that happens to decode as a command would be answered by the
    # handler; count it so the expectation stays exact.
    expected = {"dropped": 0, "invalid": 0, "handled": 0}
    for frames in requests:
        outcome = expected_outcome(frames)
        if outcome == "invalid" and len(frames) == 2:
            try:
                msgspec.msgpack.Decoder(Command).decode(frames[1])
                outcome = "handled"
            except DECODE_ERRORS:
                pass
        expected[outcome] += 1
    assert expected["dropped"] > 1000
    assert expected["invalid"] > 1000

    handled: list[Command] = []

    async def handler(command: Command) -> Reply:
        handled.append(command)
        return Ok()

    context = zmq.asyncio.Context.instance()
    with short_dir() as root:
        async with CommandServer(f"ipc://{root}/cmd.sock", handler) as server:
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.setsockopt(zmq.RCVHWM, 0)
            dealer.connect(server.endpoint)
            replies: list[list[bytes]] = []
            answerable = expected["invalid"] + expected["handled"]

            async def read_replies() -> None:
                while len(replies) < answerable:
                    replies.append(await dealer.recv_multipart())

            reader = asyncio.create_task(read_replies())
            for frames in requests:
                await dealer.send_multipart(frames)
            async with asyncio.timeout(30):
                await reader
            client = CommandClient(server.endpoint)
            try:
                after = await client.request(OpenWindow(), timeout=5)
                ping = await client.request(Ping(), timeout=5)
            finally:
                await client.close()
                dealer.close(linger=0)
            counters = server.counters

    assert after == Ok()
    assert ping == Ok()
    assert counters.received == COUNT + 2
    assert counters.dropped == expected["dropped"]
    assert counters.invalid == expected["invalid"]
    decoded = [msgspec.msgpack.decode(reply[1], type=Failed | Ok) for reply in replies]
    invalid = [r for r in decoded if isinstance(r, Failed)]
    assert len(invalid) == expected["invalid"]
    assert all(r.code == "invalid" and r.message for r in invalid)
    assert len(handled) == expected["handled"] + 1


async def test_an_invalid_request_gets_msgspecs_error_text() -> None:
    context = zmq.asyncio.Context.instance()

    async def handler(command: Command) -> Reply:
        return Ok()

    with short_dir() as root:
        async with CommandServer(f"ipc://{root}/cmd.sock", handler) as server:
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(server.endpoint)
            body = msgspec.msgpack.encode({"type": "login", "identifier": 5, "password": "x"})
            await dealer.send_multipart([b"r1", body])
            await dealer.send_multipart([b"r2", msgspec.msgpack.encode({"type": "format_disk"})])
            async with asyncio.timeout(5):
                first = await dealer.recv_multipart()
                second = await dealer.recv_multipart()
            dealer.close(linger=0)
    assert first[0] == b"r1"
    assert msgspec.msgpack.decode(first[1], type=Failed) == Failed(
        code="invalid", message="Expected `str`, got `int` - at `$.identifier`"
    )
    assert second[0] == b"r2"
    assert "format_disk" in msgspec.msgpack.decode(second[1], type=Failed).message


async def test_a_handler_that_raises_gets_internal_and_the_server_goes_on() -> None:
    async def handler(command: Command) -> Reply:
        if isinstance(command, OpenWindow):
            raise RuntimeError("no display")
        return Ok(data={"fine": True})

    with short_dir() as root:
        async with CommandServer(f"ipc://{root}/cmd.sock", handler) as server:
            client = CommandClient(server.endpoint)
            try:
                broken = await client.request(OpenWindow(), timeout=5)
                fine = await client.request(GetStatus(), timeout=5)
            finally:
                await client.close()
    assert broken == Failed(code="internal", message="RuntimeError: no display")
    assert fine == Ok(data={"fine": True})
    assert server.counters.handler_errors == 1


async def test_client_times_out_clearly_when_nobody_answers() -> None:
    with short_dir() as root:
        client = CommandClient(f"ipc://{root}/nobody.sock")
        try:
            with pytest.raises(TimeoutError, match=r"No reply to Ping .* within 0\.2 s"):
                await client.request(Ping(), timeout=0.2)
        finally:
            await client.close()


def random_publication(rng: random.Random, epoch: int) -> list[bytes]:
    topic = rng.choice([b"status", b"stats", b"statusjunk", b"window.", b"window.x", b"logs"])
    frame_count = rng.choice([1, 2, 3, 3, 3, 4])
    frames = [topic]
    if frame_count >= 2:
        frames.append(
            rng.choice(
                [pack_sequence(epoch, rng.randrange(1, 1000)), rng.randbytes(16), b"", b"\x00"]
            )
        )
    frames += [random_body(rng) for _ in range(frame_count - 2)]
    return frames


async def test_random_frames_into_a_subscriber() -> None:
    rng = random.Random(7)
    epoch = 1234
    publications = [random_publication(rng, epoch) for _ in range(COUNT)]
    context = zmq.asyncio.Context.instance()
    with short_dir() as root:
        xpub = context.socket(zmq.XPUB)
        xpub.setsockopt(zmq.LINGER, 0)
        xpub.setsockopt(zmq.SNDHWM, 0)
        xpub.bind(f"ipc://{root}/pub.sock")
        subscriber = Subscriber(
            f"ipc://{root}/pub.sock",
            topics=[b"status", b"stats", b"window.", b"logs"],
            receive_hwm=0,
        )
        try:
            async with asyncio.timeout(5):
                while (await xpub.recv()) != b"\x01logs":
                    pass
            for frames in publications:
                await xpub.send_multipart(frames)
            marker = Status(state="connected", last_error="after the garbage")
            await xpub.send_multipart([b"status", pack_sequence(epoch, 10**9), encode(marker)])
            # One queue, in order: the marker arrives after every garbage message.
            delivery = await next_delivery(subscriber, timeout=30)
            while delivery.message != marker:
                delivery = await next_delivery(subscriber, timeout=30)
        finally:
            await subscriber.close()
            xpub.close(linger=0)
    # The generator sometimes makes a real Status on the status topic with a sequence
    # frame that is valid (if random): those must be taken, everything else dropped.
    valid = sum(
        1
        for frames in publications
        if len(frames) == 3
        and frames[0] == b"status"
        and len(frames[1]) == 16
        and int.from_bytes(frames[1][8:]) >= 1
        and frames[2] == encode(Status(state="connected"))
    )
    assert valid > 0
    counters, sequence = subscriber.counters, subscriber.tracker.counters
    assert counters.received == COUNT + 1
    assert counters.malformed == COUNT - valid
    assert sequence.delivered + sequence.repeats == valid + 1
