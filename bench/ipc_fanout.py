"""Fan-out of status messages from one XPUB to 1, 4 and 16 subscriber processes.

For each subscriber count, the same sockets and the same subscriber processes carry the
same ``Status`` messages with three body codecs in turn: msgspec msgpack (what ``ipc/``
uses: typed, validated decode to a ``Status``), stdlib ``json`` (decode to an unvalidated
dict) and stdlib ``pickle`` (decode to a ``Status``, unvalidated and unsafe across a trust
boundary). Frames are ipc's ``[topic, sequence, body]`` plus one 8-byte send timestamp
(CLOCK_MONOTONIC, comparable across processes on one machine).

* Latency: messages paced one per interval; each subscriber records receive-and-decode
  time minus send time. p50/p99 over every delivery, and p99 of "the last of the N
  subscribers has it".
* Throughput: a burst sent as fast as the publisher can encode and send (HWM unlimited,
  so nothing is dropped); messages per second until every subscriber has decoded all.

Prints a markdown table. ``--quick`` for a short run.

    python -m bench.ipc_fanout [--quick]
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import zmq

from ipc.messages import ENCODER, PUBLISHED_DECODER, Status
from ipc.sequence import pack_sequence, unpack_sequence

REPOSITORY = Path(__file__).resolve().parent.parent
TOPIC = b"status"
CONTROL = b"control"
CODECS = ("msgspec", "json", "pickle")


def encoder_for(codec: str) -> Callable[[Status], bytes]:
    if codec == "msgspec":
        return ENCODER.encode
    if codec == "json":
        return lambda status: json.dumps(msgspec.to_builtins(status)).encode()
    return lambda status: pickle.dumps(status, protocol=pickle.HIGHEST_PROTOCOL)


def decoder_for(codec: str) -> Callable[[bytes], Any]:
    if codec == "msgspec":
        return PUBLISHED_DECODER.decode
    if codec == "json":
        return json.loads
    return pickle.loads


def sample_status(attempt: int) -> Status:
    return Status(
        state="disconnected",
        authenticated=False,
        identity="guest",
        attempt=attempt,
        next_retry_ms=4000,
        server="ws://127.0.0.1:5324",
        client_id="6f1c2a9e-0d1b-4c55-9a53-2f0c8e7d4b11",
        buffered_chunks=12,
        buffered_bytes=345_678,
        sent_chunks=9_876,
        sent_bytes=123_456_789,
        last_error="connect_error: Connection refused",
        windows=2,
    )


# ----------------------------------------------------------------------------- subscriber


def run_subscriber(publisher: str, reports: str) -> None:
    """A subscriber process: decode every message, report per phase over PUSH."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, TOPIC)
    sub.setsockopt(zmq.SUBSCRIBE, CONTROL)
    sub.connect(publisher)
    push = context.socket(zmq.PUSH)
    push.connect(reports)
    decode = decoder_for("msgspec")
    latencies: list[int] = []
    received = 0
    first = last = 0
    last_seq = 0
    while True:
        frames = sub.recv_multipart()
        if frames[0] == CONTROL:
            command = json.loads(frames[1])
            if command["do"] == "quit":
                break
            if command["do"] == "codec":
                decode = decoder_for(command["codec"])
                latencies, received, first, last = [], 0, 0, 0
                continue
            report = {"latencies": latencies, "received": received, "first": first, "last": last}
            push.send(json.dumps(report).encode())
            latencies, received, first, last = [], 0, 0, 0
            continue
        decode(frames[2])
        now = time.monotonic_ns()
        sequence = unpack_sequence(frames[1])
        if sequence is None or sequence[1] <= last_seq:
            continue
        last_seq = sequence[1]
        latencies.append(now - int.from_bytes(frames[3], "big"))
        received += 1
        first = first or now
        last = now
    sub.close(linger=0)
    push.close(linger=0)
    context.term()


# ----------------------------------------------------------------------------- publisher


class FanOut:
    def __init__(self, subscribers: int, root: Path) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.xpub = self.context.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.SNDHWM, 0)
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.xpub.bind(f"ipc://{root}/pub.sock")
        self.pull = self.context.socket(zmq.PULL)
        self.pull.bind(f"ipc://{root}/reports.sock")
        self.count = subscribers
        self.seq = 0
        self.children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.ipc_fanout",
                    "--subscriber",
                    f"ipc://{root}/pub.sock",
                    f"ipc://{root}/reports.sock",
                ],
                cwd=REPOSITORY,
            )
            for _ in range(subscribers)
        ]
        # Both topics of every subscriber: then nothing sent later is missed.
        joined = 0
        while joined < 2 * subscribers:
            if not self.xpub.poll(30_000):
                raise RuntimeError("subscriber processes did not join within 30 s")
            if self.xpub.recv()[0] == 1:
                joined += 1

    def control(self, **command: Any) -> None:
        self.xpub.send_multipart([CONTROL, json.dumps(command).encode()])

    def send(self, body: bytes) -> None:
        self.seq += 1
        self.xpub.send_multipart(
            [TOPIC, pack_sequence(1, self.seq), body, time.monotonic_ns().to_bytes(8, "big")]
        )

    def collect(self) -> list[dict[str, Any]]:
        self.control(do="report")
        reports = []
        for _ in range(self.count):
            if not self.pull.poll(60_000):
                raise RuntimeError("a subscriber did not report within 60 s")
            reports.append(json.loads(self.pull.recv()))
        return reports

    def latency(self, codec: str, messages: int, interval: float) -> tuple[float, float, float]:
        encode = encoder_for(codec)
        self.control(do="codec", codec=codec)
        for attempt in range(messages):
            self.send(encode(sample_status(attempt)))
            time.sleep(interval)
        reports = self.collect()
        every = sorted(x for r in reports for x in r["latencies"])
        # The time until the slowest subscriber had message i.
        slowest = sorted(
            max(values) for values in zip(*(r["latencies"] for r in reports), strict=False)
        )
        return (
            percentile(every, 50) / 1000,
            percentile(every, 99) / 1000,
            percentile(slowest, 99) / 1000,
        )

    def throughput(self, codec: str, messages: int) -> tuple[float, float]:
        encode = encoder_for(codec)
        self.control(do="codec", codec=codec)
        started = time.monotonic_ns()
        for attempt in range(messages):
            self.send(encode(sample_status(attempt)))
        sent = time.monotonic_ns()
        reports = self.collect()
        if any(r["received"] != messages for r in reports):
            raise RuntimeError("a subscriber lost messages with an unlimited HWM")
        finished = max(r["last"] for r in reports)
        return messages / ((sent - started) / 1e9), messages / ((finished - started) / 1e9)

    def close(self) -> None:
        self.control(do="quit")
        for child in self.children:
            child.wait(timeout=30)
        self.xpub.close(linger=0)
        self.pull.close(linger=0)
        self.context.term()


def percentile(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    return float(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages")
    parser.add_argument("--subscriber", nargs=2, metavar=("PUB", "REPORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subscriber:
        run_subscriber(*args.subscriber)
        return
    paced, burst, interval = (300, 3000, 0.002) if args.quick else (2000, 20000, 0.001)
    sizes = {codec: len(encoder_for(codec)(sample_status(1))) for codec in CODECS}
    rows = []
    for subscribers in (1, 4, 16):
        with tempfile.TemporaryDirectory(prefix="lmb") as root:
            fanout = FanOut(subscribers, Path(root))
            try:
                for codec in CODECS:
                    p50, p99, p99_all = fanout.latency(codec, paced, interval)
                    send_rate, delivered_rate = fanout.throughput(codec, burst)
                    rows.append(
                        f"| {subscribers} | {codec} | {sizes[codec]} | {p50:.0f} | {p99:.0f} "
                        f"| {p99_all:.0f} | {send_rate:,.0f} | {delivered_rate:,.0f} |"
                    )
            finally:
                fanout.close()
    print(
        f"\nStatus fan-out over ipc:// ({paced} paced messages every {interval * 1000:g} ms "
        f"for latency, bursts of {burst} for throughput; "
        f"{sys.platform}, Python {sys.version.split()[0]})\n"
    )
    print(
        "| subscribers | body | bytes | p50 µs | p99 µs | p99 µs, last of N | "
        "publish msg/s | delivered to all msg/s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
