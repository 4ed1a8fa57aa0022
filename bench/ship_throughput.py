"""Ship throughput: chunks from the spool to acknowledged at the reference server.

For each chunk size and window, the same chunks go to the same real server (its own
process, on loopback) four ways, in the same run:

- **ours**: ``ServerConnection`` draining a real SQLite spool (append done beforehand);
- **original**: the Electron client's strategy: one chunk, wait for its ack, wait 50 ms,
  next chunk (shown once per chunk size: it has no window);
- **node**: npm ``socket.io-client`` 4.8 with ``emitWithAck``, the same window
  (``bench/node/ship.js``; skipped with a note when ``node`` is missing).

Reported: MB/s and CPU seconds of the *client* process per GB shipped (the server's CPU
is the same for all and not counted), medians of several runs.

    python -m bench.ship_throughput [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.protocol_client import authenticated_guest
from harness.server_process import REPOSITORY, ServerProcess
from main_process.connection.server_connection import ServerConnection
from main_process.connection.state import ConnectionConfig
from main_process.credentials import TokenStore
from main_process.spool.chunks import Spool

KIB = 1024
LINE = "2026-11-25 12:00:00.000 [INFO] player joined the session id=42 region=eu\n"


def chunk_text(size: int) -> str:
    return (LINE * (size // len(LINE) + 1))[:size]


@dataclass
class Result:
    seconds: float
    cpu_seconds: float
    total_bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / self.seconds / 1e6

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_seconds / (self.total_bytes / 1e9)


class DrainingSpool(Spool):
    """A spool that says when its last chunk was acknowledged (ends the timing)."""

    drained: asyncio.Event

    def acknowledge_many(self, seqs: Sequence[int]) -> int:
        done = super().acknowledge_many(seqs)
        if self.stats().buffered_chunks == 0:
            self.drained.set()
        return done


async def ship_ours(url: str, work: Path, size: int, count: int, window: int) -> Result:
    data = Path(tempfile.mkdtemp(dir=work))
    client_id = f"bench-{data.name}"
    spool = DrainingSpool(data / "spool.sqlite3", client_id, max_bytes=4 * 1024 * 1024 * 1024)
    spool.drained = asyncio.Event()
    text = chunk_text(size)
    for _ in range(count):
        spool.append(text)
    connection = ServerConnection(
        url,
        client_id=client_id,
        chunk_store=spool,
        token_store=TokenStore(data / "tokens.json"),
        config=ConnectionConfig(window=window),
    )
    await connection.start()
    await connection.connect_to_server()
    await connection.wait_for_status(lambda s: s.state == "connected", 30)
    # Timing starts once authenticated, as for the peers: the handshake is not shipping.
    cpu0, t0 = time.process_time(), time.perf_counter()
    await connection.flush_log_buffer()
    await spool.drained.wait()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await connection.close()
    spool.close()
    return Result(seconds, cpu, size * count)


async def ship_original(url: str, size: int, count: int) -> Result:
    client = await authenticated_guest(url)
    text = chunk_text(size)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for seq in range(1, count + 1):
        ack = await asyncio.wait_for(
            await client.send("submit_log_chunk", client.chunk(text, seq)), 60
        )
        if not ack.get("ok"):
            raise RuntimeError(f"rejected: {ack}")
        await asyncio.sleep(0.05)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await client.close()
    return Result(seconds, cpu, size * count)


def ship_node(url: str, size: int, count: int, window: int) -> Result | None:
    node = shutil.which("node")
    script = REPOSITORY / "bench" / "node" / "ship.js"
    if node is None or not (script.parent / "node_modules").exists():
        return None
    out = subprocess.run(
        [node, str(script), url, str(size), str(count), str(window)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return Result(float(data["seconds"]), float(data["cpuSeconds"]), int(data["bytes"]))


def median_result(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.seconds for r in results),
        statistics.median(r.cpu_seconds for r in results),
        results[0].total_bytes,
    )


def ensure_node_modules() -> None:
    folder = REPOSITORY / "bench" / "node"
    if shutil.which("npm") and not (folder / "node_modules").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, check=False, capture_output=True
        )


async def main_async(quick: bool) -> None:
    ensure_node_modules()
    runs = 3 if quick else 5
    volume = (16 if quick else 64) * 1024 * 1024
    windows = (1, 8, 32)
    rows: list[str] = []
    ratios: list[tuple[str, float, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = ServerProcess(work / "server").start()
        try:
            for size in (64 * KIB, 512 * KIB):
                count = volume // size
                original = median_result(
                    [
                        await ship_original(server.url, size, max(10, count // 8))
                        for _ in range(runs)
                    ]
                )
                rows.append(
                    f"| {size // KIB} KiB | 1 (+50 ms) | original strategy | {original.mb_per_s:,.1f} | {original.cpu_per_gb:,.1f} |"
                )
                for window in windows:
                    ours = median_result(
                        [
                            await ship_ours(server.url, work, size, count, window)
                            for _ in range(runs)
                        ]
                    )
                    node_runs = [ship_node(server.url, size, count, window) for _ in range(runs)]
                    node = median_result([r for r in node_runs if r]) if all(node_runs) else None
                    rows.append(
                        f"| {size // KIB} KiB | {window} | **ours** | {ours.mb_per_s:,.1f} | {ours.cpu_per_gb:,.1f} |"
                    )
                    if node is not None:
                        rows.append(
                            f"| {size // KIB} KiB | {window} | node socket.io-client | {node.mb_per_s:,.1f} | {node.cpu_per_gb:,.1f} |"
                        )
                    ratios.append(
                        (
                            f"{size // KIB} KiB, window {window}",
                            ours.mb_per_s / original.mb_per_s,
                            ours.mb_per_s / node.mb_per_s if node else None,
                        )
                    )
        finally:
            server.stop()
    print(
        f"Ship throughput, spool → acknowledged, {volume // (1024 * 1024)} MiB per run, median of {runs} runs\n"
    )
    print("| chunk | window | client | MB/s | client CPU s/GB |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| case | ours ÷ original | ours ÷ node |")
    print("|---|---|---|")
    for case, vs_original, vs_node in ratios:
        node_text = f"{vs_node:.2f}x" if vs_node is not None else "n/a (node missing)"
        print(f"| {case} | {vs_original:.1f}x | {node_text} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Ship throughput: ours vs the original strategy vs Node."
    )
    parser.add_argument("--quick", action="store_true", help="less data, fewer runs")
    asyncio.run(main_async(parser.parse_args().quick))


if __name__ == "__main__":
    main()
