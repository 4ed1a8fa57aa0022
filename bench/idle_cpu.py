"""Idle cost and start-up of the main process: CPU with nothing to ship, and run → connected.

Against the real reference server in its own process (a *remote* server for the client:
``--server URL``), the real main process follows one file that does not grow:

1. **Idle CPU**: once connected and settled, the CPU time of the main process (every
   thread, from ``/proc/<pid>/task/*/schedstat``: nanoseconds on a CPU, not 10 ms
   ticks) over ``IDLE_S`` seconds, as a percentage of one core. Two cases: the main
   process alone (``--headless``) and with one window (``--windows 1`` on Qt's offscreen
   platform); the renderer host's own CPU (with its render process) is shown beside it
   for context. Median of the runs.
2. **Start-up**: ``log-monitor run FILE --server URL --headless`` from the spawn to the
   first status that says ``connected`` (asked over ipc every 10 ms), median of the runs:
   a restart (the data dir already holds a guest token: the everyday start) and a first
   start (a new data dir: the server hands out a guest token, and the protocol reconnects
   ~100 ms later to present it). The sources are byte-compiled first, as an installed
   package is. The peer is the Python interpreter itself (``python -c pass``), the floor
   any Python client pays.

    python -m bench.idle_cpu [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from harness.main_process_runner import MainProcessRunner, headless_environment
from harness.server_process import REPOSITORY, ServerProcess
from harness.waiting import wait_until

IDLE_TARGET_ALONE = 0.1  # % of a core
IDLE_TARGET_WINDOW = 0.3
START_TARGET_S = 0.5
SETTLE_S = 3.0


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of ``pid``, in nanoseconds."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    return total


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def idle_run(
    server: ServerProcess, work: Path, seconds: float, window: bool
) -> tuple[float, float]:
    """(main process %, renderer host tree %) of a core over ``seconds`` of idling."""
    work.mkdir()
    log_file = work / "app.log"
    log_file.write_text("one line before the start\n")
    runner = MainProcessRunner(work / "data", "--server", server.url, str(log_file))
    if window:
        # The runner passes --headless; a window needs the command without it.
        runner.environment = dict(headless_environment(), QT_QPA_PLATFORM="offscreen")
        runner.args = ["--windows", "1", *runner.args]
    try:
        if window:
            _start_windowed(runner)
        else:
            runner.start()
        runner.wait_for_status(
            lambda s: (
                s.get("state") == "connected"
                and s.get("bufferedChunks") == 0
                and (not window or s.get("windows") == 1)
            ),
            60,
            "the main process to connect and settle",
        )
        time.sleep(SETTLE_S)  # a measurement pause, not a synchronisation
        assert runner.process is not None
        pid = runner.process.pid
        helpers = children(pid)
        main_before = cpu_ns(pid)
        helpers_before = sum(cpu_ns(p) for p in helpers)
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        main_used = cpu_ns(pid) - main_before
        helpers_used = sum(cpu_ns(p) for p in helpers) - helpers_before
        return main_used / elapsed / 1e7, helpers_used / elapsed / 1e7
    finally:
        if runner.process is not None:
            runner.stop()


def _start_windowed(runner: MainProcessRunner) -> None:
    runner._log = open(runner.log_path, "ab")  # noqa: SIM115 - closed by the runner's stop()
    runner.process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "main_process",
            "run",
            "--data-dir",
            str(runner.data_dir),
            *runner.args,
        ],
        cwd=REPOSITORY,
        stdin=subprocess.DEVNULL,
        stdout=runner._log,
        stderr=subprocess.STDOUT,
        env=runner.environment,
    )


def start_run(server: ServerProcess, work: Path) -> float:
    """Seconds from the spawn of ``log-monitor run`` to its first ``connected`` status
    (a restart when ``work`` was used before)."""
    work.mkdir(exist_ok=True)
    log_file = work / "app.log"
    log_file.touch()
    runner = MainProcessRunner(work / "data", "--server", server.url, str(log_file))
    started = time.monotonic()
    runner.start(wait=False)
    connected: list[float] = []

    def is_connected() -> bool:
        status = runner.status()
        if status is not None and status.get("state") == "connected":
            connected.append(time.monotonic())
            return True
        return False

    try:
        wait_until(is_connected, 60, "the main process to connect", interval=0.01)
        return connected[0] - started
    finally:
        runner.stop()


def interpreter_start() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - started


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def main_run(quick: bool) -> None:
    seconds = 20.0 if quick else 60.0
    runs = 1 if quick else 3
    start_runs = 5 if quick else 9
    idle: dict[str, list[tuple[float, float]]] = {"main alone": [], "main + 1 window": []}
    first_starts: list[float] = []
    starts: list[float] = []
    floors: list[float] = []
    # An installed package is byte-compiled; a checkout run with PYTHONDONTWRITEBYTECODE
    # would otherwise compile every module at every start (``protocol`` too: the client
    # imports it).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "main_process", "ipc", "protocol"],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    )
    with TemporaryDirectory(prefix="idle-cpu-") as tmp:
        work = Path(tmp)
        server = ServerProcess(work / "server").start()
        try:
            count = 0
            for _ in range(runs):
                for name in idle:
                    count += 1
                    idle[name].append(
                        idle_run(server, work / f"idle{count}", seconds, name != "main alone")
                    )
            for index in range(start_runs):
                first_starts.append(start_run(server, work / f"start{index}"))
                starts.append(start_run(server, work / f"start{index}"))
                floors.append(interpreter_start())
        finally:
            server.stop()

    print(
        f"Idle: one followed file that does not grow, connected to a remote server (the "
        f"reference server, its own process); CPU over {seconds:.0f} s after "
        f"{SETTLE_S:.0f} s to settle, % of one core, median of {runs} run(s)\n"
    )
    print("| case | main process % | renderer host (+ render process) % |")
    print("|---|---|---|")
    medians: dict[str, float] = {}
    for name, results in idle.items():
        medians[name] = statistics.median(r[0] for r in results)
        host = statistics.median(r[1] for r in results)
        host_text = f"{host:.3f}" if name != "main alone" else "-"
        print(f"| {name} | {medians[name]:.3f} | {host_text} |")
    start = statistics.median(starts)
    first_start = statistics.median(first_starts)
    floor = statistics.median(floors)
    print(
        f"\nStart-up with a remote server: spawn → first `connected` status (asked every "
        f"10 ms), median of {start_runs} runs\n"
    )
    print("| process | seconds |")
    print("|---|---|")
    print(f"| `log-monitor run FILE --server URL --headless`, restart | {start:.2f} |")
    print(f"| the same, first start (new data dir) | {first_start:.2f} |")
    print(f"| peer: `python -c pass` | {floor:.2f} |")
    print()
    alone, windowed = medians["main alone"], medians["main + 1 window"]
    print(
        f"Target: idle main process ≤ {IDLE_TARGET_ALONE} % of a core: {alone:.3f} % "
        f"{verdict(alone <= IDLE_TARGET_ALONE)}; with one window ≤ {IDLE_TARGET_WINDOW} %: "
        f"{windowed:.3f} % {verdict(windowed <= IDLE_TARGET_WINDOW)}"
    )
    print(
        f"Target: run → connected < {START_TARGET_S} s with a remote server (restart): "
        f"{start:.2f} s {verdict(start < START_TARGET_S)}; first start {first_start:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Idle CPU of the main process, and run → connected with a remote server."
    )
    parser.add_argument("--quick", action="store_true", help="20 s idle runs, fewer start runs")
    main_run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
