"""Our whole pipeline against the stack's ceiling: file append → stored, beside bare senders.

Two servers, both started here on 127.0.0.1 with a free port and up for the whole run,
the runs going round them in turn:

- **reference server**: ours (``python -m server serve``, its own process);
- **Node.js socket.io server**: ``bench/node/server.js`` (npm ``socket.io`` 4.8): just
  enough of the wire protocol for the senders below, counting the bytes it would store.

Against each, 512 KiB chunks with 8 acknowledgements in flight, four senders:

- **Node peer**: ``bench/node/ship.js`` (npm ``socket.io-client`` 4.8, ``emitWithAck``),
  timed and its CPU counted (``process.cpuUsage``) from the first send to the last ack;
- **bare python-socketio**: ``bench/bare_sender.py`` (a ``socketio.AsyncClient`` and
  nothing else), its own process, timed and counted the same way;
- **ours, warm**: the real main process (``log-monitor run FILE --headless --server
  URL``, fresh data dir) once connected and a warm-up line is stored; this process then
  appends N MB of 100-byte lines as fast as it can (64 KiB writes on line boundaries),
  timed from the first write until the server's ``bytes_stored`` has grown by every
  byte written (polled every 10 ms); CPU is the main process's user + system time
  (``/proc/<pid>/stat``) over the same interval;
- **cold**: a file of M MB written first, then the main process started on it with a
  fresh data dir, timed from its spawn to every byte stored (CPU: everything the process
  used since its spawn); the Node peer cold is ``node ship.js`` for the same bytes,
  timed from its spawn to its exit, handshake included (CPU: its rusage as a child).

MB/s and client CPU seconds per GB (the server's CPU is not counted), medians of the
runs; ratios are ours (or a peer) ÷ the Node peer and ÷ bare python-socketio on the same
server. The machine's cores are shared by the writer, the client and the server.

    python -m bench.pipeline_ceiling [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import IO

from bench.e2e_pipeline import (
    LINE_BYTES,
    NODE_FOLDER,
    Contender,
    CountingServer,
    Ours,
    Server,
    Workspace,
    make_line,
    ours,
    verdict,
)
from bench.ship_throughput import Result, median_result, ship_node
from harness.main_process_runner import MainProcessRunner
from harness.processes import cpu_seconds
from harness.server_process import REPOSITORY
from harness.waiting import wait_until

CHUNK_BYTES = 512 * 1024
WINDOW = 8
MB = 1_000_000
# 64 KiB writes that end on a line, as a buffered writer of whole lines makes them.
WRITE_BYTES = 64 * 1024 // LINE_BYTES * LINE_BYTES
STORE_TIMEOUT_S = 600.0
TARGET_VS_NODE = 1.0
TARGET_VS_BARE = 0.9
TARGET_CPU_PER_GB = 5.0
TARGET_COLD_VS_NODE = 0.8

NODE_PEER = "Node socket.io-client peer"
BARE = "bare python-socketio"
OURS_WARM = "**ours**, warm (append → stored)"
NODE_COLD = "Node peer, cold (spawn → exit)"
OURS_COLD = "**ours**, cold (spawn → stored)"


class NodeServer(CountingServer):
    """``bench/node/server.js`` in its own process, counting what it stored as the
    reference server does (the same ``/api/stats``)."""

    def __init__(self, log_path: Path) -> None:
        node = shutil.which("node")
        assert node is not None
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.node = subprocess.Popen(
            [node, str(NODE_FOLDER / "server.js")],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        stdout = self.node.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], 30)
        line = stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"the Node.js server did not start: {log_path.read_text()[-2000:]}")
        port = int(json.loads(line)["port"])
        super().__init__(f"ws://127.0.0.1:{port}")

    def stop(self) -> None:
        if self.node.poll() is None:
            os.kill(self.node.pid, signal.SIGTERM)
            try:
                self.node.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.node.pid, signal.SIGKILL)
                self.node.wait(10)
        self._log.close()


def ensure_node_server() -> None:
    """Install bench/node's packages when socket.io (the server) is missing; fail in one
    sentence when Node.js is."""
    if shutil.which("node") is None:
        raise SystemExit("pipeline_ceiling: needs Node.js (node) for its peers and server.")
    if not (NODE_FOLDER / "node_modules" / "socket.io").exists() and shutil.which("npm"):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_FOLDER,
            check=False,
            capture_output=True,
        )
    if not (NODE_FOLDER / "node_modules" / "socket.io").exists():
        raise SystemExit("pipeline_ceiling: npm could not install bench/node's packages.")


def chunk_count(total_bytes: int) -> int:
    """The number of 512 KiB chunks that carry ``total_bytes`` (rounded up)."""
    return -(-total_bytes // CHUNK_BYTES)


def node_warm(server: CountingServer, total_bytes: int) -> Result:
    result = ship_node(server.url, CHUNK_BYTES, chunk_count(total_bytes), WINDOW)
    assert result is not None  # ensure_node_server() checked node and its packages
    return result


def bare_warm(server: CountingServer, total_bytes: int) -> Result:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bare_sender",
            server.url,
            str(CHUNK_BYTES),
            str(chunk_count(total_bytes)),
            str(WINDOW),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=STORE_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bare sender failed: {out.stderr.strip()[-2000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return Result(float(data["seconds"]), float(data["cpuSeconds"]), int(data["bytes"]))


def write_in_blocks(out: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    for offset in range(0, len(data), WRITE_BYTES):
        out.write(view[offset : offset + WRITE_BYTES])


def ours_warm(
    server: CountingServer, space: Workspace, contender: Contender, data: bytes
) -> Result:
    pipeline, file = space.start(server, contender)
    try:
        assert isinstance(pipeline, Ours)
        assert pipeline.runner.process is not None
        pid = pipeline.runner.process.pid
        target = server.bytes_stored() + len(data)
        cpu_start, started = cpu_seconds(pid), time.perf_counter()
        with open(file, "ab", buffering=0) as out:
            write_in_blocks(out, data)
        server.wait_for_bytes(target, STORE_TIMEOUT_S, f"ours to store {len(data)} bytes")
        seconds, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_start
    finally:
        pipeline.stop()
    return Result(seconds, cpu, len(data))


def ours_cold(server: CountingServer, work: Path, data: bytes) -> Result:
    work.mkdir()
    file = work / "backlog.log"
    file.write_bytes(data)
    target = server.bytes_stored() + len(data)
    runner = MainProcessRunner(work / "data", "--server", server.url, str(file))
    started = time.perf_counter()
    runner.start(wait=False)
    process = runner.process
    assert process is not None
    stored: list[float] = []

    def all_stored() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"main process exited with {process.returncode}")
        if server.bytes_stored() >= target:
            stored.append(time.perf_counter())
            return True
        return False

    try:
        wait_until(all_stored, STORE_TIMEOUT_S, f"ours to store a {len(data)}-byte file", 0.01)
        # Everything the process used since its spawn: start-up is part of a cold start.
        cpu = cpu_seconds(process.pid)
    except RuntimeError as error:
        raise RuntimeError(f"{error}: {runner.log_text()[-2000:]}") from None
    finally:
        runner.stop()
    return Result(stored[0] - started, cpu, len(data))


def node_cold(server: CountingServer, total_bytes: int) -> Result:
    node = shutil.which("node")
    assert node is not None
    count = chunk_count(total_bytes)
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        [node, str(NODE_FOLDER / "ship.js"), server.url, str(CHUNK_BYTES), str(count), str(WINDOW)],
        capture_output=True,
        text=True,
        timeout=STORE_TIMEOUT_S,
        check=False,
    )
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"node peer failed: {out.stderr.strip()[-2000:]}")
    cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    return Result(seconds, cpu, count * CHUNK_BYTES)


@dataclass(frozen=True)
class ServerRuns:
    """The median result of each sender against one server."""

    server: str
    results: dict[str, Result]


def senders_on(
    server: CountingServer, work: Path, warm_data: bytes, cold_data: bytes
) -> dict[str, Callable[[int], Result]]:
    """Each sender's run against ``server`` (the argument is the run's number)."""
    space = Workspace(work / "warm")
    space.root.mkdir(parents=True)
    contender = Contender("ours", ours())
    return {
        NODE_PEER: lambda _: node_warm(server, len(warm_data)),
        BARE: lambda _: bare_warm(server, len(warm_data)),
        OURS_WARM: lambda _: ours_warm(server, space, contender, warm_data),
        NODE_COLD: lambda _: node_cold(server, len(cold_data)),
        OURS_COLD: lambda run: ours_cold(server, work / f"cold{run}", cold_data),
    }


def measure(
    servers: list[tuple[str, CountingServer]],
    work: Path,
    warm_data: bytes,
    cold_data: bytes,
    runs: int,
) -> list[ServerRuns]:
    senders = {
        name: senders_on(server, work / f"server{index}", warm_data, cold_data)
        for index, (name, server) in enumerate(servers)
    }
    samples: dict[str, dict[str, list[Result]]] = {
        name: {sender: [] for sender in on} for name, on in senders.items()
    }
    # Interleaved, servers as well as senders, so that drift in the machine spreads over
    # every sender on both servers alike. Measured one server after the other, our client
    # on the second server ran about 20 % slower than on the first (twice the page faults,
    # twice the system time), while the Node peer hardly changed: a run pays for the state
    # the runs before it left the machine in.
    for run in range(runs):
        for name, on_server in senders.items():
            for sender, send in on_server.items():
                plain = sender.replace("**", "")
                # What earlier runs wrote is on the disk before this one starts, so that
                # no run's fsyncs wait on another's writeback.
                os.sync()
                result = send(run)
                samples[name][sender].append(result)
                print(
                    f"pipeline_ceiling: {name}: {plain}, run {run + 1}: "
                    f"{result.mb_per_s:.1f} MB/s, {result.cpu_per_gb:.1f} CPU s/GB",
                    file=sys.stderr,
                )
    return [
        ServerRuns(name, {sender: median_result(r) for sender, r in by_sender.items()})
        for name, by_sender in samples.items()
    ]


def ratio(value: float, peer: float) -> str:
    return f"{value / peer:.2f}x"


def print_tables(measured: list[ServerRuns], warm_mb: float, cold_mb: float, runs: int) -> None:
    print(
        f"File append → stored, our client beside the bare senders of the same stack: "
        f"{CHUNK_BYTES // 1024} KiB chunks, {WINDOW} in flight; warm {warm_mb:.0f} MB, "
        f"cold {cold_mb:.0f} MB; median of {runs} run(s); client CPU only; "
        f"{os.cpu_count()} cores shared by writer, client and server\n"
    )
    print("| server | sender | MB/s | CPU s/GB | ratio to Node peer | ratio to bare python |")
    print("|---|---|---|---|---|---|")
    for runs_on in measured:
        results = runs_on.results
        node, bare, node_start = results[NODE_PEER], results[BARE], results[NODE_COLD]
        for sender, result in results.items():
            cold = sender in (NODE_COLD, OURS_COLD)
            peer = node_start if cold else node
            vs_bare = "-" if cold else ratio(result.mb_per_s, bare.mb_per_s)
            print(
                f"| {runs_on.server} | {sender} | {result.mb_per_s:,.1f} | "
                f"{result.cpu_per_gb:,.1f} | {ratio(result.mb_per_s, peer.mb_per_s)} | {vs_bare} |"
            )
    print("\nCold rows compare with the Node peer cold (spawn and handshake included).\n")
    print("| target | " + " | ".join(r.server for r in measured) + " |")
    print("|---|" + "---|" * len(measured))
    targets: list[tuple[str, Callable[[dict[str, Result]], tuple[str, bool]]]] = [
        (
            f"warm ≥ {TARGET_VS_NODE:.1f}x the Node peer",
            lambda r: fraction(r[OURS_WARM], r[NODE_PEER], TARGET_VS_NODE),
        ),
        (
            f"warm ≥ {TARGET_VS_BARE:.1f}x bare python-socketio",
            lambda r: fraction(r[OURS_WARM], r[BARE], TARGET_VS_BARE),
        ),
        (
            f"client ≤ {TARGET_CPU_PER_GB:.0f} CPU s/GB (warm)",
            lambda r: (
                f"{r[OURS_WARM].cpu_per_gb:.1f}",
                r[OURS_WARM].cpu_per_gb <= TARGET_CPU_PER_GB,
            ),
        ),
        (
            f"cold {cold_mb:.0f} MB ≥ {TARGET_COLD_VS_NODE:.1f}x the Node peer",
            lambda r: fraction(r[OURS_COLD], r[NODE_COLD], TARGET_COLD_VS_NODE),
        ),
    ]
    for label, judge in targets:
        cells = []
        for runs_on in measured:
            figure, met = judge(runs_on.results)
            cells.append(f"{figure} {verdict(met)}")
        print(f"| {label} | " + " | ".join(cells) + " |")


def fraction(ours_result: Result, peer: Result, target: float) -> tuple[str, bool]:
    share = ours_result.mb_per_s / peer.mb_per_s
    return f"{share:.2f}x", share >= target


def main_run(quick: bool) -> None:
    ensure_node_server()
    warm_mb, cold_mb, runs = (50, 25, 1) if quick else (200, 100, 3)
    # An installed package is byte-compiled; a checkout run with PYTHONDONTWRITEBYTECODE
    # would compile every module at every cold start.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "main_process", "ipc"],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    )
    stamp = time.time_ns()
    warm_data = b"".join(make_line(seq, stamp) for seq in range(warm_mb * MB // LINE_BYTES))
    cold_data = warm_data[: cold_mb * MB]
    with TemporaryDirectory(prefix="pipeline-ceiling-") as tmp:
        work = Path(tmp)
        servers: list[tuple[str, CountingServer]] = []
        try:
            servers.append(("reference server", Server(work / "reference-server")))
            servers.append(("Node.js socket.io server", NodeServer(work / "node-server.log")))
            measured = measure(servers, work, warm_data, cold_data, runs)
        finally:
            for _, server in servers:
                server.stop()
    print_tables(measured, warm_mb, cold_mb, runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="File append → stored: ours vs the Node peer and bare python-socketio, "
        "on our reference server and on a Node.js socket.io server."
    )
    parser.add_argument("--quick", action="store_true", help="50 MB warm, 25 MB cold, one run")
    main_run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
