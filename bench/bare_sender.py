"""The bare python-socketio sender: what the stack does with nothing of ours in the way.

A ``socketio.AsyncClient`` (through the tests' bare protocol client, which adds nothing
but an ack future per emit) runs the guest handshake, then sends COUNT chunks of
CHUNK_BYTES with WINDOW acknowledgements in flight, exactly as ``bench/node/ship.js``
does: no spool, no files; nothing of the product runs while it sends. Run as its own
process so its CPU is its own:

    python -m bench.bare_sender URL CHUNK_BYTES COUNT WINDOW

Prints one JSON line like ship.js: ``{"chunks", "bytes", "seconds", "cpuSeconds"}``,
timed from the first send (after the handshake) to the last acknowledgement; CPU is this
process's user + system time over the same interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any

import socketio

from bench.ship_throughput import chunk_text
from harness.protocol_client import authenticated_guest

ACK_TIMEOUT_S = 60.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def send_all(url: str, chunk_bytes: int, count: int, window: int) -> dict[str, Any]:
    client = await authenticated_guest(url)
    text = chunk_text(chunk_bytes)
    in_flight: set[asyncio.Future[Any]] = set()
    cpu_start, started = cpu_seconds(), time.perf_counter()
    for seq in range(1, count + 1):
        while len(in_flight) >= window:
            done, in_flight = await asyncio.wait(
                in_flight, timeout=ACK_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise TimeoutError(f"no acknowledgement within {ACK_TIMEOUT_S:.0f} s")
            check_acks(done)
        in_flight.add(await client.send("submit_log_chunk", client.chunk(text, seq)))
    if in_flight:
        done, pending = await asyncio.wait(in_flight, timeout=ACK_TIMEOUT_S)
        if pending:
            raise TimeoutError(f"no acknowledgement within {ACK_TIMEOUT_S:.0f} s")
        check_acks(done)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_start
    await client.close()
    return {
        "chunks": count,
        "bytes": count * len(text.encode()),
        "seconds": seconds,
        "cpuSeconds": cpu,
    }


def check_acks(done: set[asyncio.Future[Any]]) -> None:
    for future in done:
        reply = future.result()
        if not isinstance(reply, dict) or "error" in reply:
            raise RuntimeError(f"chunk rejected: {reply!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Bare python-socketio sender (benchmark peer).")
    parser.add_argument("url")
    parser.add_argument("chunk_bytes", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("window", type=int)
    args = parser.parse_args()
    try:
        result = asyncio.run(send_all(args.url, args.chunk_bytes, args.count, args.window))
    except (OSError, TimeoutError, RuntimeError, socketio.exceptions.SocketIOError) as error:
        # One line for the benchmark's report, as ship.js does, not a traceback.
        print(f"bare sender: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
