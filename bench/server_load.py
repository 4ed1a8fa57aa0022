"""The reference server under many clients: chunks/s, ack latency, errors, CPU and memory,
and whether it meets its targets.

A Node.js load generator (``bench/node/load.js``, npm socket.io-client, the client library
of the original Electron app) registers CLIENTS guests, then opens their connections, 400
a second, and each client sends one 2 KiB chunk per second with an ack; the generator
times every ack. Configurations, measured in the same run:

- **SQLite, a commit per chunk** (``--commit-batch 1``): the commit policy before group
  commit, the peer;
- **SQLite, group commit** (the default), and the same with ``--ws-compression`` (the
  generator offers permessage-deflate on every connection, as socket.io-client does; the
  server accepts it only with that flag);
- **PostgreSQL, one node** (``--database``; PostgreSQL from Debian, fsync on);
- **three nodes behind HAProxy** (PostgreSQL, Redis), the generator connecting to HAProxy;
- **idle**: 10,000 connections that only keep alive (Engine.IO heartbeats every 25 s, and
  the protocol's ping every 20 s, whose pong is timed), SQLite with group commit.

Everything runs on this machine's cores, the generator included. The CPU columns say how
much of a core the server (its nodes, summed) and the generator used during the measured
window, and the rest of the machine what every other process used meanwhile (PostgreSQL,
Redis and HAProxy in their rows, and whatever else runs on a shared machine). The
generator is one peer on loopback, so the servers run with ``--max-connections-per-peer
0`` and ``--max-connections 11000`` (defaults: 100 and 1,000), or half the hard
descriptor limit when that is less and cannot be raised (a server admits connections up
to half its descriptors). Server RSS is the peak (VmHWM), summed over nodes;
``chunks/commit`` is what group commit gathered (the servers' ``/api/stats``).

Each row is the median of its runs (``--repeat``; errors: the worst run). The targets
(one node with group commit holds 5,000 clients at one 2 KiB chunk per second with ack
p99 < 250 ms and 0 errors; 10,000 idle connections with heartbeats) are judged met or
not met from the rows that measure them.

    python -m bench.server_load [--quick] [--repeat N] [--only group idle …]
    # needs `npm ci` in bench/node, and Debian's postgresql, redis-server and haproxy
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.processes import cpu_seconds
from server.local_cluster import (
    REPOSITORY,
    LocalHaproxy,
    LocalPostgres,
    LocalRedis,
    PartFailed,
    free_port,
    migrate_database,
    port_open,
    wait_until,
)

NODE_DIR = REPOSITORY / "bench" / "node"
# The idle row's 10,000 plus room for connections still in their handshake, where the
# descriptor limit allows it (a server admits connections up to half its descriptors).
MAX_CONNECTIONS = 11_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

TARGET_CLIENTS = 5_000
TARGET_P99_MS = 250.0
TARGET_IDLE = 10_000
# The generator sends on time whatever the acks do: a node that holds its clients acks
# (nearly) all it is offered within the window.
HELD_SHARE = 0.95
ENGINE_IO_PING_INTERVAL = 25  # python-engineio's default; every idle window spans one


@dataclass(frozen=True)
class Row:
    """One configuration at one number of clients."""

    group: str
    name: str
    clients: int
    mode: str = "stream"
    server_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """Taken when the generator's measured window starts, and when it ends."""

    at: float
    server_cpu: float
    generator_cpu: float
    machine_busy: float
    commits: tuple[int, int] | None


@dataclass
class Run:
    outcome: dict[str, Any]
    rss_mib: float
    server_cpu: float
    generator_cpu: float
    others_cpu: float
    chunks_per_commit: float | None
    server_warnings: list[str]


@dataclass
class Result:
    row: Row
    runs: list[Run] = field(default_factory=list)

    def median(self, value: Callable[[Run], float | None]) -> float | None:
        values = [v for v in map(value, self.runs) if v is not None]
        return statistics.median(values) if values else None

    def worst(self, key: str) -> int:
        return max(int(run.outcome[key]) for run in self.runs)

    @property
    def connected(self) -> int:
        return min(int(run.outcome["connected"]) for run in self.runs)

    @property
    def failures(self) -> int:
        return sum(
            self.worst(key) for key in ("errors", "timeouts", "disconnects", "connectFailures")
        )


# ---------------------------------------------------------------------------- processes


def raise_descriptor_limit(wanted: int) -> str | None:
    """The soft RLIMIT_NOFILE up to the hard one, which the generator and the servers
    inherit; the hard one up to ``wanted`` too where that is allowed (CAP_SYS_RESOURCE),
    as a service manager's LimitNOFILE would. A sentence saying what was done, or what
    is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return (
                f"the descriptor limit (ulimit -Hn) is {hard:,} and could not be raised: a "
                f"server holds at most {hard // 2:,} connections (it keeps half its "
                "descriptors in reserve)"
            )
        return f"the descriptor limit was raised from {soft:,} (hard {hard:,}) to {wanted:,}"
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return None


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent busy (not idle, not waiting on I/O)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def commit_counters(url: str) -> tuple[int, int] | None:
    """(commits, committed chunks) from a node's /api/stats; None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/api/stats", timeout=10) as response:
            stats = json.load(response)
        return int(stats["commits"]), int(stats["committed_chunks"])
    except (OSError, ValueError, KeyError):
        return None


class Servers:
    """Server processes started for one run (not the tests' helper: no ``--verbose``,
    whose line per connection would be measured too)."""

    def __init__(self, directory: Path, max_connections: int) -> None:
        self.directory = directory
        self.max_connections = max_connections
        self.processes: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []

    def start(self, *args: str) -> str:
        port = free_port()
        index = len(self.processes)
        with open(self.directory / f"server{index}.log", "ab") as log:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "server", "serve"),
                    *("--port", str(port), "--data-dir", str(self.directory / f"data{index}")),
                    *("--max-connections", str(self.max_connections)),
                    *("--max-connections-per-peer", "0"),
                    *args,
                ],
                cwd=REPOSITORY,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.processes.append(process)

        def listening() -> bool:
            if process.poll() is not None:
                raise PartFailed(f"the server exited: {self.log_tail(index)}")
            return port_open(port)

        wait_until(listening, 30, "the server to listen")
        url = f"http://127.0.0.1:{port}"
        self.urls.append(url)
        return url

    def warnings(self) -> list[str]:
        """What the servers logged beyond their start line (they log only warnings)."""
        lines: list[str] = []
        for index in range(len(self.processes)):
            text = (self.directory / f"server{index}.log").read_text(errors="replace")
            lines += [line for line in text.splitlines() if "listening on" not in line]
        return lines

    def log_tail(self, index: int) -> str:
        text = (self.directory / f"server{index}.log").read_text(errors="replace")
        return text.strip()[-1500:]

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def peak_rss_mib(self) -> float:
        return sum(peak_rss_mib(pid) for pid in self.pids)

    def commit_counters(self) -> tuple[int, int] | None:
        counted = [commit_counters(url) for url in self.urls]
        if any(count is None for count in counted):
            return None
        return (
            sum(count[0] for count in counted if count),
            sum(count[1] for count in counted if count),
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def servers(directory: Path, max_connections: int) -> Iterator[Servers]:
    started = Servers(directory, max_connections)
    try:
        yield started
    finally:
        started.stop()


# ---------------------------------------------------------------------------- one run


def run_load(url: str, row: Row, seconds: int, started: Servers, directory: Path) -> Run:
    """Run the generator against ``url``; sample CPU and commit counters when its measured
    window starts and ends."""
    ramp_seconds = row.clients / 400
    deadline = ramp_seconds + seconds + 300
    with open(directory / "load.err", "w+b") as errors:
        generator = subprocess.Popen(
            ["node", str(NODE_DIR / "load.js"), url, str(row.clients), str(seconds), row.mode],
            cwd=NODE_DIR,
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        # A generator stuck past any reasonable time is killed, so the bench always ends.
        watchdog = threading.Timer(deadline, generator.kill)
        watchdog.start()
        try:
            samples: dict[str, Sample] = {}
            outcome: dict[str, Any] | None = None
            assert generator.stdout is not None
            for line in generator.stdout:
                message = json.loads(line)
                event = message.get("event")
                if event in ("measuring", "measured"):
                    samples[event] = Sample(
                        time.monotonic(),
                        cpu_seconds(*started.pids),
                        cpu_seconds(generator.pid),
                        machine_busy_seconds(),
                        # Idle, there is nothing to count, and a server holding all the
                        # connections its descriptors allow would refuse the request.
                        started.commit_counters() if row.mode == "stream" else None,
                    )
                else:
                    outcome = message
            status = generator.wait()
        finally:
            watchdog.cancel()
        if status != 0 or outcome is None or len(samples) != 2:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip()[-1500:]
            raise PartFailed(f"the load generator failed (exit status {status}): {tail}")
    before, after = samples["measuring"], samples["measured"]
    elapsed = after.at - before.at
    per_commit = None
    if before.commits is not None and after.commits is not None:
        commits = after.commits[0] - before.commits[0]
        chunks = after.commits[1] - before.commits[1]
        per_commit = chunks / commits if commits > 0 else None
    server_cpu = (after.server_cpu - before.server_cpu) / elapsed
    generator_cpu = (after.generator_cpu - before.generator_cpu) / elapsed
    machine = (after.machine_busy - before.machine_busy) / elapsed
    return Run(
        outcome=outcome,
        rss_mib=started.peak_rss_mib(),
        server_cpu=server_cpu,
        generator_cpu=generator_cpu,
        others_cpu=max(0.0, machine - server_cpu - generator_cpu),
        chunks_per_commit=per_commit,
        server_warnings=started.warnings(),
    )


class Backends:
    """PostgreSQL and Redis, started once for every row that needs them."""

    def __init__(self) -> None:
        self.postgres: LocalPostgres | None = None
        self.redis: LocalRedis | None = None
        self._databases = 0

    def fresh_database(self) -> str:
        if self.postgres is None:
            self.postgres = LocalPostgres(durable=True)
            self.postgres.start()
        self._databases += 1
        url = self.postgres.create_database(f"load{self._databases}")
        migrate_database(url)
        return url

    def redis_url(self) -> str:
        if self.redis is None:
            self.redis = LocalRedis()
            self.redis.start()
        return self.redis.url

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


def measure_once(row: Row, seconds: int, backends: Backends, max_connections: int) -> Run:
    with (
        tempfile.TemporaryDirectory(prefix="server-load-") as name,
        servers(Path(name), max_connections) as started,
    ):
        directory = Path(name)
        if row.group == "cluster":
            database = backends.fresh_database()
            redis = backends.redis_url()
            for _ in range(3):
                started.start("--database", database, "--redis", redis, *row.server_args)
            proxy = LocalHaproxy([int(url.rsplit(":", 1)[1]) for url in started.urls])
            try:
                proxy.start()
                return run_load(proxy.url, row, seconds, started, directory)
            finally:
                proxy.stop()
        if row.group == "postgres":
            url = started.start("--database", backends.fresh_database(), *row.server_args)
        else:
            url = started.start(*row.server_args)
        return run_load(url, row, seconds, started, directory)


# ---------------------------------------------------------------------------- the plan


PEER = "SQLite, a commit per chunk (peer)"
GROUP = "SQLite, group commit"
COMPRESSED = "SQLite, group commit, --ws-compression"
POSTGRES = "PostgreSQL, one node (group commit)"
CLUSTER = "3 nodes + HAProxy (PostgreSQL, Redis)"
IDLE = "SQLite, group commit"

GROUPS = ("peer", "group", "compression", "postgres", "cluster", "idle")


def plan(quick: bool) -> list[Row]:
    peer = (1000, 2000) if quick else (200, 1000, 2000)
    group = (1000, 2000, TARGET_CLIENTS) if quick else (1000, 2000, 3000, TARGET_CLIENTS)
    postgres = (1000, 2000) if quick else (1000, 2000, TARGET_CLIENTS)
    return [
        *(Row("peer", PEER, n, server_args=("--commit-batch", "1")) for n in peer),
        *(Row("group", GROUP, n) for n in group),
        Row("compression", COMPRESSED, 2000, server_args=("--ws-compression",)),
        *(Row("postgres", POSTGRES, n) for n in postgres),
        *(Row("cluster", CLUSTER, n) for n in postgres),
        Row("idle", IDLE, TARGET_IDLE, mode="idle"),
    ]


# ---------------------------------------------------------------------------- report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _failures(result: Result) -> str:
    return " · ".join(
        f"{result.worst(key):,}" for key in ("errors", "timeouts", "disconnects", "connectFailures")
    )


def stream_table(results: Sequence[Result]) -> str:
    rows = [
        "| configuration | clients | connected | chunks/s | ack p50 | ack p99 "
        "| errors · timeouts · disconnects · failed connects | chunks/commit "
        "| server CPU | generator CPU | rest of the machine | server RSS |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        rate = result.median(lambda run: float(run.outcome["chunksPerSecond"])) or 0.0
        per_commit = result.median(lambda run: run.chunks_per_commit)
        rows.append(
            f"| {result.row.name} | {result.row.clients:,} | {result.connected:,} "
            f"| {rate:,.0f} | {_ms(result.median(lambda run: run.outcome['p50Ms']))} "
            f"| {_ms(result.median(lambda run: run.outcome['p99Ms']))} | {_failures(result)} "
            f"| {'-' if per_commit is None else f'{per_commit:,.1f}'} | {_cpu_cells(result)} "
            f"| {result.median(lambda run: run.rss_mib) or 0:,.0f} MiB |"
        )
    return "\n".join(rows)


def idle_table(results: Sequence[Result], seconds: int) -> str:
    rows = [
        f"| configuration | connections | connected after {seconds} s | pong p50 | pong p99 "
        "| errors · timeouts · disconnects · failed connects | server CPU | generator CPU "
        "| rest of the machine | server RSS |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        rows.append(
            f"| {result.row.name} | {result.row.clients:,} | {result.connected:,} "
            f"| {_ms(result.median(lambda run: run.outcome['p50Ms']))} "
            f"| {_ms(result.median(lambda run: run.outcome['p99Ms']))} | {_failures(result)} "
            f"| {_cpu_cells(result)} | {result.median(lambda run: run.rss_mib) or 0:,.0f} MiB |"
        )
    return "\n".join(rows)


def _cpu_cells(result: Result) -> str:
    return " | ".join(
        _percent(result.median(value))
        for value in (
            lambda run: run.server_cpu,
            lambda run: run.generator_cpu,
            lambda run: run.others_cpu,
        )
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def verdicts(results: Sequence[Result], idle_seconds: int) -> list[str]:
    """One line per target: met or not met, with the figures that decide it."""
    lines: list[str] = []
    held = [r for r in results if r.row.name == GROUP and r.row.clients == TARGET_CLIENTS]
    if held:
        result = held[0]
        rate = result.median(lambda run: float(run.outcome["chunksPerSecond"])) or 0.0
        p99 = result.median(lambda run: run.outcome["p99Ms"])
        met = (
            result.connected == TARGET_CLIENTS
            and result.failures == 0
            and rate >= HELD_SHARE * TARGET_CLIENTS
            and p99 is not None
            and p99 < TARGET_P99_MS
        )
        lines.append(
            f"- One node with group commit holds {TARGET_CLIENTS:,} clients at one 2 KiB chunk/s "
            f"with ack p99 < {TARGET_P99_MS:.0f} ms and 0 errors: **{'met' if met else 'not met'}**"
            f" ({result.connected:,} connected, {rate:,.0f} chunks/s acked of "
            f"{TARGET_CLIENTS:,} offered, ack p99 {_ms(p99)}, errors + timeouts + disconnects "
            f"+ failed connects: {result.failures:,})."
        )
    idle = [r for r in results if r.row.mode == "idle"]
    if idle:
        result = idle[0]
        met = result.connected == TARGET_IDLE and result.failures == 0
        p99 = result.median(lambda run: run.outcome["p99Ms"])
        lines.append(
            f"- {TARGET_IDLE:,} idle connections with heartbeats: "
            f"**{'met' if met else 'not met'}** ({result.connected:,} connected for "
            f"{idle_seconds} s, Engine.IO's heartbeat every {ENGINE_IO_PING_INTERVAL} s and a "
            f"ping every 20 s each, pong p99 {_ms(p99)}, errors + timeouts + disconnects + "
            f"failed connects: {result.failures:,}; server RSS "
            f"{result.median(lambda run: run.rss_mib) or 0:,.0f} MiB)."
        )
    return lines


def _runs(text: str) -> int:
    try:
        runs = int(text)
    except ValueError:
        runs = 0
    if runs < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of runs (1 or more)")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter windows, one run each")
    parser.add_argument(
        "--repeat",
        type=_runs,
        default=None,
        metavar="N",
        help="runs per row, the median reported (default: 1 with --quick, else 3)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=GROUPS, default=None, help="measure only these rows"
    )
    args = parser.parse_args(argv)
    if shutil.which("node") is None or not (NODE_DIR / "node_modules").exists():
        print("bench/node is not installed: run `npm ci` in bench/node", file=sys.stderr)
        return 1
    seconds = 10 if args.quick else 30
    idle_seconds = 30 if args.quick else 60
    repeat = args.repeat or (1 if args.quick else 3)
    rows = [row for row in plan(args.quick) if args.only is None or row.group in args.only]
    notes: list[str] = []
    # A server admits connections up to half its descriptors (the other half is its
    # reserve), so it needs two per connection it may hold; the generator needs one.
    said = raise_descriptor_limit(2 * MAX_CONNECTIONS + 100)
    if said:
        notes.append(said)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    max_connections = (
        MAX_CONNECTIONS if hard == resource.RLIM_INFINITY else min(MAX_CONNECTIONS, hard // 2)
    )
    results: list[Result] = []
    backends = Backends()
    try:
        for row in rows:
            result = Result(row)
            for _ in range(repeat):
                window = idle_seconds if row.mode == "idle" else seconds
                result.runs.append(measure_once(row, window, backends, max_connections))
                run = result.runs[-1]
                print(
                    f"{row.name}, {row.clients:,} {row.mode}: "
                    f"{json.dumps(run.outcome)} rss {run.rss_mib:.0f} MiB, server CPU "
                    f"{run.server_cpu:.2f}, generator CPU {run.generator_cpu:.2f}, rest of the machine "
                    f"{run.others_cpu:.2f}, "
                    f"chunks/commit {run.chunks_per_commit}",
                    *(f"  server: {line}" for line in run.server_warnings[:10]),
                    sep="\n",
                    file=sys.stderr,
                    flush=True,
                )
            results.append(result)
    except PartFailed as exc:
        print(f"bench.server_load: {exc}", file=sys.stderr)
        return 1
    finally:
        backends.stop()
    streamed = [result for result in results if result.row.mode == "stream"]
    idle = [result for result in results if result.row.mode == "idle"]
    runs = "one run" if repeat == 1 else f"the median of {repeat} runs"
    print(
        f"{os.cpu_count()} cores shared by the server(s) and the generator; {runs} per row "
        "(errors: the worst run); CPU in % of one core, the rest of the machine being every "
        "other process (PostgreSQL, Redis, HAProxy, anything else running)."
    )
    if streamed:
        print(
            "\nStreaming: each client sends one 2 KiB chunk per second and times its ack; "
            f"{seconds} s measured after a 2 s warm-up.\n"
        )
        print(stream_table(streamed))
    if idle:
        print(
            "\nIdle: each connection answers Engine.IO's heartbeat (every "
            f"{ENGINE_IO_PING_INTERVAL} s) and sends the protocol's ping every 20 s, whose "
            f"pong is timed; {idle_seconds} s measured after a 2 s warm-up.\n"
        )
        print(idle_table(idle, idle_seconds))
    found = verdicts(results, idle_seconds)
    if found:
        print("\nTargets on this machine, generator included:\n")
        print("\n".join(found))
    for note in notes:
        print(f"\nNote: {note}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
