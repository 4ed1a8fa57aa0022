"""Memory of the main process with an empty spool and with a large backlog waiting in it.

The spool is on disk, so the main process's resident memory must stay flat however much
waits to be sent. The peer, measured in the same run, is the original client's design:
the same chunks held in an in-memory buffer (a Python list of the chunk strings, which is
what its ``logBuffer`` array amounted to).

The main process runs headless against a server address where nothing listens, so the
backlog stays in the spool while it is measured (it keeps trying to reconnect, as a
client offline for a while would).

    python -m bench.main_memory [--quick]     # 1 GiB waiting; quick: fewer samples
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.main_process_runner import MainProcessRunner
from main_process.credentials import load_or_create_client_id
from main_process.spool.chunks import Spool

MIB = 1024 * 1024
CHUNK = 512 * 1024
LINE = "2026-11-25 12:00:00.000 [INFO] player joined the session id=42 region=eu\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill_spool(data: Path, total: int) -> None:
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    client_id = load_or_create_client_id(data)
    text = (LINE * (CHUNK // len(LINE) + 1))[:CHUNK]
    with Spool(data / "spool.sqlite3", client_id, max_bytes=total + 64 * MIB) as spool:
        for _ in range(total // CHUNK):
            spool.append(text)


def measure_main(data: Path, spool_mb: int, samples: int) -> tuple[float, int]:
    runner = MainProcessRunner(
        data, "--server", f"http://127.0.0.1:{closed_port()}", "--spool-max-mb", str(spool_mb)
    )
    runner.start()
    try:
        status = runner.status() or {}
        assert runner.process is not None
        pid = runner.process.pid
        values = []
        for _ in range(samples):
            # Sampling over a few seconds spans several reconnect attempts and status
            # publications: the figure is the process at work, not just after start.
            time.sleep(0.5)
            values.append(rss_mib(pid))
        return statistics.median(values), int(status.get("bufferedBytes", 0))
    finally:
        runner.stop()


IN_MEMORY_PEER = """
import sys, time
chunk = ({line!r} * ({chunk} // {linelen} + 1))[:{chunk}]
buffer = []
for i in range({count}):
    # Distinct strings, as distinct log text would be.
    buffer.append(chunk[:-8] + f"{{i:08d}}")
print("ready", flush=True)
sys.stdin.readline()
"""


def measure_in_memory_peer(total: int) -> float:
    code = IN_MEMORY_PEER.format(line=LINE, chunk=CHUNK, linelen=len(LINE), count=total // CHUNK)
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        return rss_mib(process.pid)
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Main process memory: empty spool vs a large backlog."
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    total = 1024 * MIB
    samples = 6 if args.quick else 12
    with tempfile.TemporaryDirectory() as tmp:
        empty_rss, _ = measure_main(Path(tmp) / "empty", 2 * total // MIB, samples)
        full_dir = Path(tmp) / "full"
        fill_spool(full_dir, total)
        full_rss, waiting = measure_main(full_dir, 2 * total // MIB, samples)
    peer_rss = measure_in_memory_peer(total)
    growth = full_rss - empty_rss
    print(
        f"Main process resident memory (median of {samples} samples), backlog {total // MIB} MiB\n"
    )
    print("| process | waiting to send | RSS MiB |")
    print("|---|---|---|")
    print(f"| main process, empty spool | 0 | {empty_rss:,.0f} |")
    print(f"| main process, spool on disk | {waiting / MIB:,.0f} MiB | {full_rss:,.0f} |")
    print(
        f"| peer: in-memory buffer (the original's design) | {total // MIB:,} MiB | {peer_rss:,.0f} |"
    )
    met = growth < 32
    print(
        f"\nTarget: memory flat with the backlog (growth under 32 MiB): growth {growth:+.0f} MiB, "
        f"**{'met' if met else 'not met'}**."
    )


if __name__ == "__main__":
    main()
