"""``make bench``: run every benchmark and write ``BENCHMARKS.md``.

Each benchmark is its own program (``python -m bench.<name> [--quick]``) that prints
markdown tables with its peer measured in the same run; this runner only runs them one
after another (never two at once: they would measure each other), records the machine,
and puts each one's output under a heading saying which question it answers and what
its target is. A benchmark that fails is reported as failed in the file; it never stops
the others. Quick mode (the default) takes a few minutes; ``--full`` is the long run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Benchmark:
    module: str
    question: str
    target: str
    full_timeout_s: float = 3600.0
    """The longest its full run may take (quick runs get 900 s)."""


BENCHMARKS = (
    Benchmark(
        "ship_throughput",
        "Ship throughput and CPU per GB: spool → acknowledged",
        "no number set; ratios vs the original strategy and the Node.js socket.io-client peer are reported",
    ),
    Benchmark(
        "e2e_pipeline",
        "End to end: file append → acknowledged at the server",
        "at least 10x the original-shaped pipeline's throughput, and p99 latency under 15 ms at 1,000 lines/s with adaptive batching",
    ),
    Benchmark(
        "pipeline_ceiling",
        "File append → stored at the stack's ceiling: ours beside the Node.js socket.io-client "
        "peer and bare python-socketio, on our reference server and on a Node.js socket.io "
        "server, warm and cold",
        "warm ≥ 1.0x the Node peer and ≥ 0.9x bare python-socketio on the same server, client "
        "≤ 5 CPU s/GB; cold start with a 100 MB file ≥ 0.8x the Node peer",
        full_timeout_s=2400.0,
    ),
    Benchmark(
        "idle_cpu",
        "Idle CPU of the main process, and run → connected with a remote server",
        "main process idle ≤ 0.1 % of a core (one followed file, connected), ≤ 0.3 % with one "
        "window; run → connected < 0.5 s with a remote server",
    ),
    Benchmark(
        "ipc_fanout",
        "Status fan-out to subscriber processes (msgspec vs json vs pickle bodies)",
        "p99 under 1 ms to 16 subscribers",
    ),
    Benchmark(
        "window_latency",
        "Windows: one renderer host vs a process per window vs headless Chromium tabs — memory "
        "(PSS), first and later window, status → DOM, idle CPU",
        "marginal ≤ 30 MiB PSS per window, 8 windows ≤ 600 MiB PSS in all, a later window "
        "painted < 250 ms after it is asked for, status → DOM p99 < 10 ms at 8 windows, host "
        "idle ≤ 0.2 % of a core",
    ),
    Benchmark(
        "main_memory",
        "Main process memory: empty spool vs a backlog waiting on disk",
        "flat: the spool is on disk",
    ),
    Benchmark(
        "server_ingest",
        "Reference server ingest rate",
        "none; context for the tables above (the server commits every chunk with synchronous=FULL)",
    ),
    Benchmark(
        "server_load",
        "Reference server under many clients: SQLite a commit per chunk vs group commit, "
        "PostgreSQL one node, three nodes behind HAProxy, idle connections",
        "one node with group commit holds 5,000 clients at one 2 KiB chunk per second with ack "
        "p99 < 250 ms and 0 errors; 10,000 idle connections with heartbeats; on this 2-core "
        "machine, generator included",
    ),
)


def _version(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (
        (out.stdout or out.stderr).strip().splitlines()[0]
        if (out.stdout or out.stderr)
        else "unknown"
    )


def machine_lines() -> list[str]:
    import zmq

    try:
        from PySide6 import QtCore

        qt = f"Qt {QtCore.qVersion()} (PySide6 {QtCore.__version__ if hasattr(QtCore, '__version__') else ''})".strip()
    except ImportError:
        qt = "Qt not installed"
    memory_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return [
        f"- cores: {os.cpu_count()}; memory: {memory_kib / 1024 / 1024:.1f} GiB; {platform.platform()}",
        f"- Python {platform.python_version()}; libzmq {zmq.zmq_version()} (pyzmq {zmq.__version__}); {qt}",
        f"- Node.js {_version(['node', '--version'])}; {_version(['chromium', '--version'])}",
    ]


def run(benchmark: Benchmark, full: bool, timeout: float) -> tuple[str, float, bool]:
    command = [sys.executable, "-m", f"bench.{benchmark.module}"] + ([] if full else ["--quick"])
    started = time.monotonic()
    try:
        out = subprocess.run(
            command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"_did not finish within {timeout:.0f} s_", time.monotonic() - started, False
    elapsed = time.monotonic() - started
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-8:])
        return f"_failed (exit status {out.returncode})_\n\n```\n{tail}\n```", elapsed, False
    return out.stdout.strip(), elapsed, True


def main() -> None:
    parser = argparse.ArgumentParser(description="Run every benchmark and write BENCHMARKS.md.")
    parser.add_argument("--full", action="store_true", help="the long run")
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only these benchmarks (module names)"
    )
    parser.add_argument("--output", type=Path, default=REPOSITORY / "BENCHMARKS.md")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if args.only is None or b.module in args.only]
    sections: list[str] = []
    for benchmark in chosen:
        print(f"bench: {benchmark.module} …", file=sys.stderr, flush=True)
        body, elapsed, ok = run(
            benchmark, args.full, timeout=benchmark.full_timeout_s if args.full else 900
        )
        print(
            f"bench: {benchmark.module} {'done' if ok else 'FAILED'} in {elapsed:.0f} s",
            file=sys.stderr,
        )
        sections.append(
            f"## {benchmark.question}\n\n`python -m bench.{benchmark.module}{'' if args.full else ' --quick'}` "
            f"({elapsed:.0f} s). Target: {benchmark.target}.\n\n{body}\n"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        "# Benchmarks",
        "",
        f"Generated by `make bench{' FULL=1' if args.full else ''}` on {stamp}. Every table puts our",
        "figure beside a peer measured in the same run; medians of several runs. The machine is a",
        "shared 2-core VM: read the ratios more than the absolute numbers.",
        "",
        "Machine:",
        "",
        *machine_lines(),
        "",
    ]
    args.output.write_text("\n".join(header) + "\n" + "\n".join(sections))
    print(f"bench: wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
