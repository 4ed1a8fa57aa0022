"""How fast the reference server stores chunks: acknowledged chunks per second and MB/s.

Starts the real server on loopback (its own process), runs the guest flow with a bare
python-socketio client, then sends N chunks of each size with a window of 1 and of 8
acknowledgements in flight, and prints a markdown table with the median of several runs.
The window-1 row is the peer: what a client that waits for every ack gets.

    python -m bench.server_ingest [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.protocol_client import ProtocolClient, authenticated_guest
from harness.server_process import ServerProcess

KIB = 1024


async def send_window(
    client: ProtocolClient, texts: list[str], first_seq: int, window: int
) -> float:
    in_flight: set[asyncio.Future[Any]] = set()
    started = time.perf_counter()
    for offset, text in enumerate(texts):
        if len(in_flight) >= window:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for ack in done:
                reply = ack.result()
                if not isinstance(reply, dict) or reply.get("ok") is not True:
                    raise RuntimeError(f"chunk refused: {reply!r}")
        in_flight.add(await client.send("submit_log_chunk", client.chunk(text, first_seq + offset)))
    if in_flight:
        await asyncio.wait(in_flight)
    return time.perf_counter() - started


def make_text(size: int) -> str:
    line = "2026-11-25 12:00:00.000 [INFO] player joined the session id=42 region=eu\n"
    return (line * (size // len(line) + 1))[:size]


async def measure(url: str, size: int, count: int, window: int, runs: int) -> tuple[float, float]:
    client = await authenticated_guest(url)
    text = make_text(size)
    seq = 1
    rates = []
    for _ in range(runs):
        elapsed = await send_window(client, [text] * count, seq, window)
        seq += count
        rates.append(count / elapsed)
    await client.close()
    median = statistics.median(rates)
    return median, median * size / 1e6


async def main_async(quick: bool) -> None:
    runs = 3 if quick else 5
    cases = [(64 * KIB, 200 if quick else 1000), (512 * KIB, 40 if quick else 200)]
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "server").start()
        try:
            print(f"Reference server ingest, median of {runs} runs (synchronous=FULL commits)\n")
            print("| chunk | window | chunks/s | MB/s |")
            print("|---|---|---|---|")
            for size, count in cases:
                for window in (1, 8):
                    rate, mbps = await measure(server.url, size, count, window, runs)
                    print(f"| {size // KIB} KiB | {window} | {rate:,.0f} | {mbps:,.1f} |")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer chunks and runs")
    args = parser.parse_args()
    asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    main()
