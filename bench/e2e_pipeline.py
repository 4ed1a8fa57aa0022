"""End to end: a line appended to a followed file → stored and acknowledged at the server.

Two pipelines follow a fresh file each and ship to the same real reference server (its
own process, on loopback), one after the other, in the same run:

- **ours**: the real main process, ``log-monitor run FILE --headless --server URL`` with
  its defaults (inotify, adaptive batching: lines are cut at once while nothing waits for
  an acknowledgement and grouped while something does, up to the 50 ms linger;
  512 KiB chunks, SQLite spool, 8 chunks in flight);
- **original-shaped (Node.js)**: ``bench/node/pipeline.js``: npm ``chokidar`` with
  ``awaitWriteFinish: {stabilityThreshold: 500}``, reading from the last size to the new
  size on each change, and npm ``socket.io-client`` sending a queue of ≤ 512 KiB chunks
  one at a time (emit, wait for the ack, wait 50 ms, next), as the Electron client did.

Every run starts a new pipeline on a new empty file and waits until a warm-up line has
reached the server, so start-up and the handshake are not measured. Then:

1. **Throughput**: this process appends N lines of 100 bytes as fast as it can (a
   buffered writer, 64 KiB writes); timed from the first write to the moment the server's
   ``GET /api/stats`` ``bytes_stored`` has grown by every byte written (polled every
   10 ms). MB/s, median of several runs, for two burst sizes: a short one,
   where each pipeline's fixed tail weighs (at most our 50 ms linger on the last chunk,
   the original's 500 ms quiet period), and a long one (the sustained rate, which the
   throughput target is judged on).
2. **Latency at a steady 1,000 lines/s**: one unbuffered ``write`` per line, paced on an
   absolute schedule; each line carries ``ts=<time.time_ns()>`` taken just before its
   write. After the run the server's ``dump --json`` gives, per chunk, ``receivedAt``
   (epoch ms, same machine clock, truncated to the ms); a line's latency is the
   ``receivedAt`` of the chunk holding its newline minus its ``ts``. p50, p99 (median of
   the runs) and max (over all runs). Every line must arrive exactly once, in order, or
   the run fails. For ours, ``sentAt`` (the client's send time) splits each line's
   latency into "in the client" (``sentAt - ts``) and "wire + server"
   (``receivedAt - sentAt``).

One diagnostic latency row runs ours with 4 KiB chunks (``chunk_kib``, a setting), which
fill in ~40 ms at this rate.

    python -m bench.e2e_pipeline [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import IO, Protocol

from harness.main_process_runner import MainProcessRunner
from harness.server_process import REPOSITORY, ServerProcess, server_cli
from harness.waiting import wait_until

NODE_FOLDER = REPOSITORY / "bench" / "node"
LINE_BYTES = 100
RATE = 1000  # lines per second for the latency runs
LINE_PATTERN = re.compile(r"seq=(\d+) ts=(\d+)")
THROUGHPUT_TARGET = 10.0  # times the original-shaped pipeline
P99_TARGET_MS = 15.0


def make_line(seq: int, ts_ns: int) -> bytes:
    """One realistic log line of exactly ``LINE_BYTES`` bytes, newline included."""
    head = (
        f"2026-11-25 12:{seq // 60000 % 60:02d}:{seq // 1000 % 60:02d}.{seq % 1000:03d} "
        f"[INFO] net: player joined seq={seq} ts={ts_ns}"
    )
    return (head + " " + "x" * max(0, LINE_BYTES - len(head) - 2) + "\n").encode()


class CountingServer:
    """A server on ``url`` that counts the bytes it stored (``GET /api/stats``): the
    reference server, or the Node.js one of ``bench/pipeline_ceiling.py``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._stats_url = url.replace("ws://", "http://", 1) + "/api/stats"

    def bytes_stored(self) -> int:
        with urllib.request.urlopen(self._stats_url, timeout=10) as reply:
            return int(json.loads(reply.read())["bytes_stored"])

    def wait_for_bytes(self, target: int, timeout: float, what: str) -> None:
        wait_until(lambda: self.bytes_stored() >= target, timeout, what, interval=0.01)

    def stop(self) -> None:
        raise NotImplementedError


class Server(CountingServer):
    """The reference server plus its HTTP counters."""

    def __init__(self, data_dir: Path) -> None:
        self.process = ServerProcess(data_dir).start()
        super().__init__(self.process.url)

    def chunks(self, client_id: str) -> list[dict[str, object]]:
        out = server_cli(self.process.data_dir, "dump", "--client-id", client_id, "--json")
        if out.returncode != 0:
            raise RuntimeError(f"dump failed: {out.stderr.decode(errors='replace')}")
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return sorted(records, key=lambda record: int(record["seq"]))

    def stop(self) -> None:
        self.process.stop()


class Pipeline(Protocol):
    client_id: str

    def stop(self) -> None: ...


class Ours:
    def __init__(
        self, server: CountingServer, data_dir: Path, log_file: Path, config: Path | None
    ) -> None:
        args = ["--server", server.url, *(["--config", str(config)] if config else [])]
        self.runner = MainProcessRunner(data_dir, *args, str(log_file)).start()
        status = self.runner.wait_for_status(
            lambda s: s.get("state") == "connected", 30, "the main process to connect"
        )
        self.client_id = str(status["clientId"])

    def stop(self) -> None:
        self.runner.stop()


class NodePipeline:
    def __init__(self, server: CountingServer, log_file: Path, log_path: Path) -> None:
        node = shutil.which("node")
        assert node is not None
        self._stderr = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [node, str(NODE_FOLDER / "pipeline.js"), server.url, str(log_file)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], 30)
        line = stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"node pipeline did not start: {log_path.read_text()[-2000:]}")
        self.client_id = str(json.loads(line)["clientId"])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._stderr.close()


@dataclass(frozen=True)
class Contender:
    name: str
    start: Callable[[CountingServer, Path, Path], Pipeline]  # (server, work dir, file) → pipeline


def ours(config: Path | None = None) -> Callable[[CountingServer, Path, Path], Pipeline]:
    return lambda server, work, file: Ours(server, work / f"{file.stem}-client", file, config)


def node_pipeline(server: CountingServer, work: Path, file: Path) -> Pipeline:
    return NodePipeline(server, file, work / f"{file.stem}-node.log")


class Workspace:
    """Hands out a fresh followed file per run and warms the pipeline up on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def start(self, server: CountingServer, contender: Contender) -> tuple[Pipeline, Path]:
        self._count += 1
        file = self.root / f"run{self._count}.log"
        file.write_bytes(b"")
        pipeline = contender.start(server, self.root, file)
        try:
            warm = b"warm-up line, not measured\n"
            target = server.bytes_stored() + len(warm)
            with open(file, "ab") as out:
                out.write(warm)
            server.wait_for_bytes(target, 30, f"{contender.name}'s warm-up line")
        except BaseException:
            pipeline.stop()
            raise
        return pipeline, file


@dataclass(frozen=True)
class Throughput:
    seconds: float
    total_bytes: int
    lines: int

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / self.seconds / 1e6


def throughput_run(
    server: CountingServer, space: Workspace, contender: Contender, lines: Sequence[bytes]
) -> Throughput:
    pipeline, file = space.start(server, contender)
    try:
        total = sum(len(line) for line in lines)
        target = server.bytes_stored() + total
        started = time.perf_counter()
        with open(file, "ab", buffering=64 * 1024) as out:
            for line in lines:
                out.write(line)
        server.wait_for_bytes(target, 600, f"{contender.name} to store {total} bytes")
        return Throughput(time.perf_counter() - started, total, len(lines))
    finally:
        pipeline.stop()


@dataclass
class Latency:
    latencies_ms: list[float]
    in_client_ms: list[float] = field(default_factory=list)
    wire_ms: list[float] = field(default_factory=list)


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def write_paced(out: IO[bytes], rate: int, count: int) -> int:
    """Write ``count`` lines at ``rate`` lines/s on an absolute schedule; return bytes."""
    total = 0
    started = time.perf_counter()
    seq = 0
    while seq < count:
        due = min(count, int((time.perf_counter() - started) * rate) + 1)
        while seq < due:
            line = make_line(seq, time.time_ns())
            out.write(line)
            total += len(line)
            seq += 1
        time.sleep(max(0.0, started + seq / rate - time.perf_counter()))
    return total


def latency_run(server: Server, space: Workspace, contender: Contender, seconds: int) -> Latency:
    pipeline, file = space.start(server, contender)
    try:
        count = RATE * seconds
        base = server.bytes_stored()
        with open(file, "ab", buffering=0) as out:
            total = write_paced(out, RATE, count)
        server.wait_for_bytes(base + total, 120, f"{contender.name} to store the paced lines")
        chunks = server.chunks(pipeline.client_id)
    finally:
        pipeline.stop()
    result = Latency([])
    expected = 0
    carry = ""
    for chunk in chunks:
        received = float(chunk["receivedAt"])  # type: ignore[arg-type]
        sent_at = chunk.get("sentAt")
        text = carry + str(chunk["chunk"])
        *complete, carry = text.split("\n")
        for line in complete:
            match = LINE_PATTERN.search(line)
            if match is None:
                continue  # the warm-up line
            seq, ts_ms = int(match[1]), int(match[2]) / 1e6
            if seq != expected:
                raise RuntimeError(f"{contender.name}: line {seq} arrived where {expected} was due")
            expected += 1
            result.latencies_ms.append(received - ts_ms)
            if isinstance(sent_at, int | float):
                result.in_client_ms.append(float(sent_at) - ts_ms)
                result.wire_ms.append(received - float(sent_at))
    if expected != count:
        raise RuntimeError(f"{contender.name}: {expected} of {count} lines arrived")
    return result


def summary(runs: Sequence[Latency]) -> tuple[float, float, float]:
    """(p50, p99) as medians over runs, and the max over all runs."""
    return (
        statistics.median(percentile(r.latencies_ms, 50) for r in runs),
        statistics.median(percentile(r.latencies_ms, 99) for r in runs),
        max(max(r.latencies_ms) for r in runs),
    )


def ensure_node_modules() -> bool:
    if shutil.which("node") is None:
        return False
    if not (NODE_FOLDER / "node_modules").exists() and shutil.which("npm"):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_FOLDER,
            check=False,
            capture_output=True,
        )
    return (NODE_FOLDER / "node_modules" / "chokidar").exists()


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def main_run(quick: bool) -> None:
    has_node = ensure_node_modules()
    throughput_runs, latency_runs = (3, 1) if quick else (5, 3)
    # A short burst shows the fixed tail of each pipeline (at most our 50 ms linger on the
    # last chunk, the original's 500 ms quiet period); the long one its sustained rate.
    bursts = (100_000, 500_000) if quick else (100_000, 1_000_000)
    seconds = 10 if quick else 30
    ours_default = Contender("ours", ours())
    original = Contender("original-shaped (Node.js)", node_pipeline)
    contenders = [ours_default] + ([original] if has_node else [])
    throughput: dict[tuple[int, str], list[Throughput]] = {}
    with TemporaryDirectory(prefix="e2e-pipeline-") as tmp:
        work = Path(tmp)
        config = work / "small-chunks.toml"
        config.write_text("chunk_kib = 4\n")
        diagnostic = Contender("ours, 4 KiB chunks (diagnostic)", ours(config))
        space = Workspace(work)
        server = Server(work / "server")
        try:
            for count in bursts:
                lines = [make_line(seq, time.time_ns()) for seq in range(count)]
                for c in contenders:
                    throughput[count, c.name] = [
                        throughput_run(server, space, c, lines) for _ in range(throughput_runs)
                    ]
            latency = {
                c.name: [latency_run(server, space, c, seconds) for _ in range(latency_runs)]
                for c in [*contenders, diagnostic]
            }
        finally:
            server.stop()

    print(
        f"End to end, file append → stored at the reference server "
        f"({os.cpu_count()} cores shared by writer, client and server)\n"
    )
    print(
        f"Throughput: lines of {LINE_BYTES} bytes appended as fast as possible (64 KiB "
        f"writes), first write → last byte stored, median of {throughput_runs} runs\n"
    )
    print("| burst | pipeline | seconds | MB/s | lines/s |")
    print("|---|---|---|---|---|")
    mb_per_s: dict[tuple[int, str], float] = {}
    for (count, name), runs in throughput.items():
        secs = statistics.median(r.seconds for r in runs)
        total_mb = runs[0].total_bytes / 1e6
        mb_per_s[count, name] = total_mb / secs
        print(
            f"| {count:,} lines ({total_mb:.0f} MB) | {name} | {secs:.2f} "
            f"| {total_mb / secs:,.1f} | {count / secs:,.0f} |"
        )
    print(
        f"\nLatency: write → stored, {RATE:,} lines/s for {seconds} s "
        f"({RATE * seconds:,} lines per run), {latency_runs} run(s); "
        "p50/p99 are medians over runs, max is over all runs\n"
    )
    print("| pipeline | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    latency_summary = {name: summary(runs) for name, runs in latency.items()}
    for name, (p50, p99, worst) in latency_summary.items():
        print(f"| {name} | {p50:,.1f} | {p99:,.1f} | {worst:,.1f} |")
    print("\nWhere ours spends a line's latency (pooled over runs)\n")
    print("| pipeline | in the client p50 / p99 ms | wire + server p50 / p99 ms |")
    print("|---|---|---|")
    for contender in (ours_default, diagnostic):
        client = [v for r in latency[contender.name] for v in r.in_client_ms]
        wire = [v for r in latency[contender.name] for v in r.wire_ms]
        print(
            f"| {contender.name} | {percentile(client, 50):.1f} / {percentile(client, 99):.1f} "
            f"| {percentile(wire, 50):.1f} / {percentile(wire, 99):.1f} |"
        )
    print()
    if has_node:
        ratios = {
            count: mb_per_s[count, ours_default.name] / mb_per_s[count, original.name]
            for count in bursts
        }
        sustained = bursts[-1]
        print(
            f"Target: throughput ≥ {THROUGHPUT_TARGET:.0f}x the original-shaped pipeline "
            f"(sustained, {sustained:,}-line burst): {ratios[sustained]:.1f}x "
            f"({mb_per_s[sustained, ours_default.name]:,.1f} vs "
            f"{mb_per_s[sustained, original.name]:,.1f} MB/s) "
            f"{verdict(ratios[sustained] >= THROUGHPUT_TARGET)}; "
            f"on the {bursts[0]:,}-line burst {ratios[bursts[0]]:.1f}x"
        )
    else:
        print("Target: throughput ≥ 10x the original-shaped pipeline: not measured (no node)")
    p99 = latency_summary[ours_default.name][1]
    print(
        f"Target: p99 latency < {P99_TARGET_MS:.0f} ms at {RATE:,} lines/s (defaults): "
        f"{p99:,.1f} ms {verdict(p99 < P99_TARGET_MS)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="End to end: file append → stored at the server, ours vs the original shape."
    )
    parser.add_argument("--quick", action="store_true", help="less data, fewer runs")
    main_run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
