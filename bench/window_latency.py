"""What a window costs: status → DOM latency, start-up, memory; beside headless Chromium.

Two engines show the same page (``renderer.page.build_page()``) and get the same status
changes (the connection state cycling through its four values, one change every
``INTERVAL_S``), measured the same way: the page stamps each state change it shows with
``Date.now()`` (``stateChanges`` in ``window.lm.describe()``), and the latency is that
stamp minus the wall-clock time just before the change was sent.

* **pywebview** (what ships): N real ``python -m renderer --data-dir D`` windows (Qt
  WebEngine, offscreen) on an ``ipc`` publisher hosted by this program, standing in for
  the main process: publish ``Status`` → SUB → bridge (coalescing, ``run_js``) → DOM. The
  windows' readbacks come back as ``ReportWindow`` commands to this program.
* **Chromium** (the reference): Debian's ``chromium --headless`` with N tabs of the same
  page from a file, driven over the DevTools protocol (one browser websocket, flattened
  target sessions): ``Runtime.evaluate("lm.applyStatus(...)")`` → DOM.

Start-up: process start → first status painted (pywebview: the window's own timing from
process start to its first status push; Chromium: launch → DevTools up → page loaded →
status applied, for the first tab). Memory: resident set (RSS) and proportional set
(PSS, shared pages split between the processes sharing them) of each window process
with its QtWebEngineProcess children, of the whole Chromium tree, and of a real
``log-monitor run --demo --headless`` main process shipping to a separate server.

    python -m bench.window_latency [--quick]

Prints a markdown table. Never a test: numbers vary with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ipc.host import IpcHost
from ipc.messages import (
    Command,
    ConnectionStateName,
    Failed,
    Ok,
    Reply,
    ReportWindow,
    Status,
)
from renderer.page import build_page
from tests.server_process import REPOSITORY, ServerProcess

STATES: tuple[ConnectionStateName, ...] = ("connecting", "connected", "disconnected", "error")
INTERVAL_S = 0.15
START_TIMEOUT_S = 90.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
)


def status(state: ConnectionStateName, n: int) -> Status:
    return Status(
        state=state,
        attempt=n,
        next_retry_ms=1000 if state == "disconnected" else None,
        server="http://127.0.0.1:3000",
        client_id="bench",
        sent_chunks=n,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def spawn(
    command: list[str], *more: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a child without waiting for it (its output is not needed)."""
    return subprocess.Popen(
        [*command, *more],
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ---- memory --------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def tree(pid: int) -> list[int]:
    children = _children_map()
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_mib(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over ``pids``."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                name, _, value = line.partition(":")
                if name == "Rss":
                    rss += int(value.split()[0])
                elif name == "Pss":
                    pss += int(value.split()[0])
        except OSError:
            continue
    return rss / 1024, pss / 1024


# ---- pywebview windows on a publisher hosted here --------------------------------------


@dataclass
class WindowSeen:
    ready: bool = False
    changes: set[tuple[str, int]] = field(default_factory=set)
    timings: dict[str, Any] = field(default_factory=dict)


class FakeMain:
    """An ``IpcHost`` standing in for the main process: it publishes, windows report."""

    def __init__(self, data_dir: Path) -> None:
        self.host = IpcHost(data_dir, self.handle)
        self.windows: dict[int, WindowSeen] = {}
        self.changed = asyncio.Event()

    async def handle(self, command: Command) -> Reply:
        if isinstance(command, ReportWindow):
            state = command.state
            self.host.publisher.publish(state)
            seen = self.windows.setdefault(state.pid, WindowSeen())
            view = json.loads(state.view) if state.view else {}
            seen.ready = state.ready and bool(view.get("hasStatus"))
            seen.changes.update((str(s), int(at)) for s, at in view.get("stateChanges") or [])
            seen.timings = view.get("timings") or seen.timings
            self.changed.set()
            return Ok()
        return Failed(code="unsupported", message="a benchmark, not a main process")

    async def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@dataclass
class Row:
    engine: str
    windows: int
    latencies: list[float]
    start_ms: list[float]
    rss_each: float
    pss_each: float
    note: str = ""


async def bench_pywebview(count: int, changes: int, work: Path) -> Row:
    data_dir = work / f"pywebview-{count}"
    data_dir.mkdir(mode=0o700)
    fake = FakeMain(data_dir)
    await fake.host.start()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        fake.host.publisher.publish(status("connected", 0))
        for _ in range(count):
            processes.append(
                spawn(
                    [sys.executable, "-m", "renderer", "--data-dir", str(data_dir), "--main-pid"],
                    str(os.getpid()),
                    env=env,
                )
            )
        pids = [p.pid for p in processes]
        await fake.wait(
            lambda: all(fake.windows.get(p, WindowSeen()).ready for p in pids),
            START_TIMEOUT_S,
            f"{count} windows ready",
        )
        start_ms = [float(fake.windows[p].timings.get("firstStatusMs") or "nan") for p in pids]
        sent: list[tuple[str, float]] = []
        for n, state in zip(range(1, changes + 1), itertools.cycle(STATES), strict=False):
            sent.append((state, time.time() * 1000))
            fake.host.publisher.publish(status(state, n))
            await asyncio.sleep(INTERVAL_S)  # pacing the changes, not synchronisation
        last_state, last_at = sent[-1]
        await fake.wait(
            lambda: all(
                any(s == last_state and at >= last_at for s, at in fake.windows[p].changes)
                for p in pids
            ),
            30,
            "every window to report the last change",
        )
        latencies = []
        for pid in pids:
            shown = sorted(fake.windows[pid].changes, key=lambda c: c[1])
            for sent_state, at_ms in sent:
                match = next((at for s, at in shown if s == sent_state and at >= at_ms - 1), None)
                if match is not None:
                    latencies.append(max(0.0, match - at_ms))
        memory = [memory_mib(tree(pid)) for pid in pids]
        return Row(
            "pywebview (Qt WebEngine) + ipc",
            count,
            latencies,
            start_ms,
            statistics.mean(m[0] for m in memory),
            statistics.mean(m[1] for m in memory),
            note=f"{len(latencies)}/{len(sent) * count} changes seen",
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        await fake.host.close()


# ---- headless Chromium over the DevTools protocol ---------------------------------------


class DevTools:
    """One browser websocket; commands to tabs go with their flattened session ids."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            future = self._pending.pop(data["id"], None) if "id" in data else None
            if future is not None and not future.done():
                future.set_result(data)
            elif "method" in data:
                self.events.put_nowait(data)

    async def send(self, method: str, session: str | None = None, **params: Any) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", session, expression=expression, returnByValue=True
        )
        return result.get("result", {}).get("value")

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()


async def _open_tab(devtools: DevTools, url: str) -> str:
    target = await devtools.send("Target.createTarget", url="about:blank")
    attached = await devtools.send(
        "Target.attachToTarget", targetId=target["targetId"], flatten=True
    )
    session = str(attached["sessionId"])
    await devtools.send("Page.enable", session)
    await devtools.send("Page.navigate", session, url=url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while await devtools.evaluate(session, "typeof window.lm === 'object'") is not True:
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not load in Chromium")
        await asyncio.sleep(0.005)  # polling the page with a deadline
    return session


def _apply(state: Status) -> str:
    from ipc.messages import to_json

    return f"window.lm.applyStatus({to_json(state).decode()}); 0"


async def bench_chromium(binary: str, count: int, changes: int, work: Path) -> Row:
    profile = work / f"chromium-profile-{count}"
    page = work / "page.html"
    page.write_text(build_page(), encoding="utf-8")
    launched = time.monotonic()
    process = spawn([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"], "about:blank")
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.01)  # polling for the file, with a deadline
        port, path = port_file.read_text().split()[:2]
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
            devtools = DevTools(ws)
            try:
                sessions = []
                start_ms: list[float] = []
                for _ in range(count):
                    session = await _open_tab(devtools, page.as_uri())
                    await devtools.evaluate(session, _apply(status("connected", 0)))
                    if not start_ms:
                        start_ms.append((time.monotonic() - launched) * 1000)
                    sessions.append(session)
                latencies: list[float] = []
                for n, state in zip(range(1, changes + 1), itertools.cycle(STATES), strict=False):
                    script = _apply(status(state, n))
                    sent_ms = time.time() * 1000
                    # Sent to every tab before any answer is awaited, as a publish is.
                    await asyncio.gather(*(devtools.evaluate(s, script) for s in sessions))
                    stamps = await asyncio.gather(
                        *(
                            devtools.evaluate(s, "window.lm.describe().stateChangedAt")
                            for s in sessions
                        )
                    )
                    latencies.extend(max(0.0, float(at) - sent_ms) for at in stamps)
                    await asyncio.sleep(INTERVAL_S)  # pacing, not synchronisation
                rss, pss = memory_mib(tree(process.pid))
                return Row(
                    "headless Chromium + DevTools",
                    count,
                    latencies,
                    start_ms,
                    rss / count,
                    pss / count,
                    note=f"whole browser {rss:.0f} MiB RSS / {pss:.0f} MiB PSS, shared by {count} tabs",
                )
            finally:
                await devtools.close()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


# ---- the main process ------------------------------------------------------------------


def main_process_memory(work: Path) -> tuple[float, float]:
    """RSS/PSS (MiB) of ``log-monitor run --demo --headless`` shipping to its own server."""
    server = ServerProcess(work / "server").start()
    data_dir = work / "main"
    process = spawn(
        [sys.executable, "-m", "main_process", "run", "--demo", "--headless"],
        *("--server", server.url, "--data-dir", str(data_dir)),
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # until it has shipped something, i.e. every part is up and working
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "main_process",
                    "status",
                    "--json",
                    "--data-dir",
                    str(data_dir),
                ],
                cwd=REPOSITORY,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0 and json.loads(result.stdout).get("sentChunks", 0) > 5:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the main process did not start shipping")
            time.sleep(0.2)  # polling its status, with a deadline
        return memory_mib(tree(process.pid))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        server.stop()


# ---- the table -------------------------------------------------------------------------


def format_table(rows: list[Row], main_memory: tuple[float, float], chromium_note: str) -> str:
    lines = [
        "| engine | windows | status → DOM p50 (ms) | p99 (ms) | max (ms) | start → first status (ms) "
        "| RSS per window (MiB) | PSS per window (MiB) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        start = statistics.median(row.start_ms) if row.start_ms else float("nan")
        lines.append(
            f"| {row.engine} | {row.windows} | {percentile(row.latencies, 0.5):.1f} "
            f"| {percentile(row.latencies, 0.99):.1f} | {max(row.latencies, default=float('nan')):.1f} "
            f"| {start:.0f} | {row.rss_each:.0f} | {row.pss_each:.0f} | {row.note} |"
        )
    if chromium_note:
        lines.append(
            f"| headless Chromium + DevTools | - | - | - | - | - | - | - | {chromium_note} |"
        )
    rss, pss = main_memory
    lines.append(
        f"| main process (`log-monitor run --demo --headless`) | - | - | - | - | - "
        f"| {rss:.0f} | {pss:.0f} | its whole RSS/PSS, shipping to a separate server |"
    )
    return "\n".join(lines)


async def run(counts: tuple[int, ...], changes: int, work: Path) -> list[Row]:
    rows = []
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    for count in counts:
        rows.append(await bench_pywebview(count, changes, work))
        if binary is not None:
            rows.append(await bench_chromium(binary, count, changes, work))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 4 windows, fewer changes")
    args = parser.parse_args()
    counts, changes = ((1, 4), 40) if args.quick else ((1, 4, 8), 120)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    chromium_note = (
        "" if binary else "not measured: no `chromium` binary (apt-get install -y chromium)"
    )
    with tempfile.TemporaryDirectory(prefix="window-latency-") as tmp:
        work = Path(tmp)
        rows = asyncio.run(run(counts, changes, work))
        main_memory = main_process_memory(work)
    print(
        f"Status change → page DOM text changed, one change every {INTERVAL_S * 1000:.0f} ms, "
        f"{changes} changes per run; {os.cpu_count()} CPUs.\n"
    )
    print(format_table(rows, main_memory, chromium_note))


if __name__ == "__main__":
    main()
