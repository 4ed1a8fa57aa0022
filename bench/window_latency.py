"""What windows cost: one renderer host vs a process per window vs headless Chromium tabs.

Three layouts show the same page (``renderer/static/index.html``) and get the same status
changes (the connection state cycling through its four values, one change every
``INTERVAL_S``), measured the same way: the page stamps each state change it shows with
``Date.now()`` (``stateChanges`` in ``window.lm.describe()``), and the latency is that
stamp minus the wall-clock time just before the change was sent.

* **host** (what ships): one ``python -m renderer --data-dir D`` process holding every
  window (pywebview, Qt WebEngine, offscreen, one shared profile, a render process per
  page); later windows are asked for as the main process asks, with ``HostControl``.
* **process per window** (the layout before the host): one such process per window,
  each started with ``--windows 1``.
* the host again with 800x600 windows instead of the default 1100x800 (1 and 8 windows,
  memory mostly): the size of the windows of the probe the host's targets came from;
  each window's raster buffers grow with its pixels.
* **Chromium** (the reference): Debian's ``chromium --headless`` with one tab per window,
  driven over the DevTools protocol (one browser websocket, flattened target sessions):
  ``Runtime.evaluate("lm.applyStatus(...)")`` → DOM.

The pywebview layouts run on an ``ipc`` publisher hosted by this program, standing in for
the main process: it publishes ``Status`` changes, and ``Stats`` every second as the main
process does even when nothing moves; the windows' readbacks come back to it as
``ReportWindow`` commands.

Figures, per layout, with 1, 4 and 8 windows (windows are added one at a time to the
same layout, so each count is measured on the windows already there):

* **PSS** (proportional set size: shared pages split between the processes sharing them)
  of every window-side process: the host(s) and their QtWebEngineProcess children, or the
  whole Chromium tree; and the marginal PSS per window beyond the first.
* **request → first status painted**: for the first window, from the process start (the
  host's, Chromium's launch); for each later one, from the request (``HostControl``
  published, the process spawned, the tab created).
* **status → DOM** p50 and p99.
* **idle CPU** of the host over ``IDLE_S`` seconds with 1 and 4 windows and nothing
  changing (the host process alone, and with its QtWebEngineProcess children), in % of
  one core.

    python -m bench.window_latency [--quick]

Prints markdown tables. Never a test: numbers vary with the machine.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from harness.processes import cpu_seconds
from harness.server_process import REPOSITORY, ServerProcess
from ipc.host import IpcHost
from ipc.messages import (
    Command,
    ConnectionStateName,
    Failed,
    HostControl,
    Ok,
    Reply,
    ReportWindow,
    Stats,
    Status,
    WindowRef,
    to_json,
)
from renderer.page import page_url

STATES: tuple[ConnectionStateName, ...] = ("connecting", "connected", "disconnected", "error")
INTERVAL_S = 0.15
START_TIMEOUT_S = 90.0
IDLE_S = 60.0
COUNTS = (1, 4, 8)
IDLE_COUNTS = (1, 4)
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
# Targets the renderer host was built to.
TARGET_MARGINAL_MIB = 30.0
TARGET_TOTAL_8_MIB = 600.0
TARGET_LATER_WINDOW_MS = 250.0
TARGET_P99_8_MS = 10.0
TARGET_IDLE_PERCENT = 0.2


def status(state: ConnectionStateName, n: int) -> Status:
    return Status(
        state=state,
        attempt=n,
        next_retry_ms=1000 if state == "disconnected" else None,
        server="http://127.0.0.1:3000",
        client_id="bench",
        sent_chunks=n,
    )


# The state the windows show while idle: connected, nothing moving (no countdown).
IDLE_STATUS = Status(state="connected", server="http://127.0.0.1:3000", client_id="bench")


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


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


# ---- /proc ---------------------------------------------------------------------------------


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


# ---- the windows' reports ----------------------------------------------------------------


@dataclass
class WindowSeen:
    ready: bool = False
    changes: set[tuple[str, float]] = field(default_factory=set)
    first_paint_ms: float | None = None
    idle: bool = False  # shows IDLE_STATUS


class FakeMain:
    """An ``IpcHost`` standing in for the main process: it publishes, windows report."""

    def __init__(self, data_dir: Path) -> None:
        self.host = IpcHost(data_dir, self.handle)
        self.windows: dict[WindowRef, WindowSeen] = {}
        self.changed = asyncio.Event()
        self._stats_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.host.start()
        self.host.publisher.publish(IDLE_STATUS)
        self._stats_task = asyncio.create_task(self._stats_every_second())

    async def _stats_every_second(self) -> None:
        while True:  # as the main process does, whether anything moved or not
            self.host.publisher.publish(Stats())
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        await self.host.close()

    async def handle(self, command: Command) -> Reply:
        if isinstance(command, ReportWindow):
            state = command.state
            self.host.publisher.publish(state)
            seen = self.windows.setdefault(state.ref, WindowSeen())
            view = state.view
            if view is not None:
                seen.ready = state.ready and view.has_status
                seen.changes.update(view.state_changes)
                seen.idle = view.state == "connected" and view.counters.sent_chunks == 0
                if seen.first_paint_ms is None and view.state_changes:
                    seen.first_paint_ms = view.state_changes[0][1]
            self.changed.set()
            return Ok()
        return Failed(code="unsupported", message="a benchmark, not a main process")

    def ready(self) -> list[WindowRef]:
        return [ref for ref, seen in self.windows.items() if seen.ready]

    async def wait_ready(self, ref: WindowRef, what: str) -> None:
        await self.wait(lambda: ref in self.ready(), START_TIMEOUT_S, what)

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


# ---- results -------------------------------------------------------------------------------


@dataclass
class Measured:
    """One layout at one window count."""

    windows: int
    latencies: list[float]
    rss: float
    pss: float
    processes: int


@dataclass
class LayoutResult:
    name: str
    first_ms: float = float("nan")
    later_ms: list[float] = field(default_factory=list)
    at: dict[int, Measured] = field(default_factory=dict)
    idle: dict[int, tuple[float, float]] = field(default_factory=dict)  # host, with children
    note: str = ""

    def marginal(self) -> float:
        first, last = self.at.get(min(self.at, default=0)), self.at.get(max(self.at, default=0))
        if first is None or last is None or last.windows == first.windows:
            return float("nan")
        return (last.pss - first.pss) / (last.windows - first.windows)


async def measure_latency(
    fake: FakeMain, refs: list[WindowRef], changes: int, start: int
) -> list[float]:
    sent: list[tuple[str, float]] = []
    for n, state in zip(range(start, start + changes), itertools.cycle(STATES), strict=False):
        sent.append((state, time.time() * 1000))
        fake.host.publisher.publish(status(state, n))
        await asyncio.sleep(INTERVAL_S)  # pacing the changes, not synchronisation
    last_state, last_at = sent[-1]
    await fake.wait(
        lambda: all(
            any(s == last_state and at >= last_at for s, at in fake.windows[r].changes)
            for r in refs
        ),
        30,
        "every window to report the last change",
    )
    latencies = []
    for ref in refs:
        shown = sorted(fake.windows[ref].changes, key=lambda c: c[1])
        for sent_state, at_ms in sent:
            match = next((at for s, at in shown if s == sent_state and at >= at_ms - 1), None)
            if match is not None:
                latencies.append(max(0.0, match - at_ms))
    # Back to the idle state for whatever is measured next.
    fake.host.publisher.publish(IDLE_STATUS)
    await fake.wait(
        lambda: all(fake.windows[r].idle for r in refs), 30, "every window back to idle"
    )
    return latencies


async def idle_cpu(
    pids: Callable[[], list[int]], hosts: Callable[[], list[int]]
) -> tuple[float, float]:
    """% of one core used over ``IDLE_S`` by the hosts, and by them with their children."""
    await asyncio.sleep(2.0)  # let the last pushes and readbacks settle
    host_before, all_before = cpu_seconds(*hosts()), cpu_seconds(*pids())
    started = time.monotonic()
    await asyncio.sleep(IDLE_S)
    elapsed = time.monotonic() - started
    host_used = cpu_seconds(*hosts()) - host_before
    all_used = cpu_seconds(*pids()) - all_before
    return host_used / elapsed * 100, all_used / elapsed * 100


def renderer_command(data_dir: Path, size: str | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "renderer",
        "--data-dir",
        str(data_dir),
        "--main-pid",
        str(os.getpid()),
        "--windows",
        "1",
        *(["--size", size] if size else []),
    ]


async def bench_host(
    changes: int,
    work: Path,
    idle: bool,
    size: str | None = None,
    counts: tuple[int, ...] = COUNTS,
) -> LayoutResult:
    """One host for every window; later windows asked for with ``HostControl``."""
    result = LayoutResult("one renderer host" + (f", {size} windows" if size else ""))
    data_dir = work / ("host" + (f"-{size}" if size else ""))
    data_dir.mkdir(mode=0o700)
    fake = FakeMain(data_dir)
    await fake.start()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    started = time.time() * 1000
    process = spawn(renderer_command(data_dir, size), env=env)
    try:
        await fake.wait(lambda: len(fake.ready()) >= 1, START_TIMEOUT_S, "the first window")
        [first] = fake.ready()
        result.first_ms = (fake.windows[first].first_paint_ms or float("nan")) - started
        requests = 0
        for count in counts:
            while len(fake.ready()) < count:
                requests += 1
                asked = time.time() * 1000
                fake.host.publisher.publish(HostControl(host=process.pid, open_requests=requests))
                new = WindowRef(host=process.pid, window=requests + 1)
                await fake.wait_ready(new, "a later window")
                result.later_ms.append((fake.windows[new].first_paint_ms or float("nan")) - asked)
            refs = fake.ready()
            pids = tree(process.pid)
            if idle and count in IDLE_COUNTS:
                result.idle[count] = await idle_cpu(
                    lambda: tree(process.pid), lambda: [process.pid]
                )
            latencies = await measure_latency(fake, refs, changes, count * 1000)
            rss, pss = memory_mib(tree(process.pid))
            result.at[count] = Measured(count, latencies, rss, pss, len(pids))
        return result
    finally:
        stop(process)
        await fake.close()


async def bench_process_per_window(changes: int, work: Path) -> LayoutResult:
    """A host process per window, each with ``--windows 1``: the layout before the host."""
    result = LayoutResult("process per window")
    data_dir = work / "per-window"
    data_dir.mkdir(mode=0o700)
    fake = FakeMain(data_dir)
    await fake.start()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for count in COUNTS:
            while len(processes) < count:
                asked = time.time() * 1000
                processes.append(spawn(renderer_command(data_dir), env=env))
                new = WindowRef(host=processes[-1].pid, window=1)
                await fake.wait_ready(new, "a window process")
                painted = (fake.windows[new].first_paint_ms or float("nan")) - asked
                if len(processes) == 1:
                    result.first_ms = painted
                else:
                    result.later_ms.append(painted)
            refs = fake.ready()
            latencies = await measure_latency(fake, refs, changes, count * 1000)
            pids = [pid for process in processes for pid in tree(process.pid)]
            rss, pss = memory_mib(pids)
            result.at[count] = Measured(count, latencies, rss, pss, len(pids))
        return result
    finally:
        for process in processes:
            stop(process)
        await fake.close()


# ---- headless Chromium over the DevTools protocol ---------------------------------------------


class DevTools:
    """One browser websocket; commands to tabs go with their flattened session ids."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            data = json.loads(message.data)
            future = self._pending.pop(data["id"], None) if "id" in data else None
            if future is not None and not future.done():
                future.set_result(data)

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
    await devtools.send("Page.navigate", session, url=url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while await devtools.evaluate(session, "typeof window.lm === 'object'") is not True:
        if time.monotonic() > deadline:
            raise TimeoutError("the page did not load in Chromium")
        await asyncio.sleep(0.005)  # polling the page with a deadline
    return session


def _apply(state: Status) -> str:
    return f"window.lm.applyStatus({to_json(state).decode()}); 0"


async def _painted_at(devtools: DevTools, session: str) -> float:
    await devtools.evaluate(session, _apply(IDLE_STATUS))
    return float(await devtools.evaluate(session, "window.lm.describe().stateChangedAt"))


async def bench_chromium(binary: str, changes: int, work: Path) -> LayoutResult:
    result = LayoutResult("headless Chromium tabs")
    profile = work / "chromium-profile"
    launched = time.time() * 1000
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
                sessions: list[str] = []
                for count in COUNTS:
                    while len(sessions) < count:
                        asked = time.time() * 1000
                        session = await _open_tab(devtools, page_url())
                        painted = await _painted_at(devtools, session)
                        if not sessions:
                            result.first_ms = painted - launched
                        else:
                            result.later_ms.append(painted - asked)
                        sessions.append(session)
                    latencies: list[float] = []
                    for n, state in zip(range(changes), itertools.cycle(STATES), strict=False):
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
                    pids = tree(process.pid)
                    rss, pss = memory_mib(pids)
                    result.at[count] = Measured(count, latencies, rss, pss, len(pids))
                return result
            finally:
                await devtools.close()
    finally:
        stop(process)
        shutil.rmtree(profile, ignore_errors=True)


# ---- the main process ------------------------------------------------------------------------


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
                    "--once",
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


# ---- the tables ------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def format_tables(
    results: list[LayoutResult], main_memory: tuple[float, float], chromium_note: str
) -> str:
    lines = [
        "| layout | windows | processes | PSS in all (MiB) | RSS in all (MiB) "
        "| status → DOM p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for count, m in sorted(result.at.items()):
            lines.append(
                f"| {result.name} | {count} | {m.processes} | {m.pss:.0f} | {m.rss:.0f} "
                f"| {percentile(m.latencies, 0.5):.1f} | {percentile(m.latencies, 0.99):.1f} "
                f"| {max(m.latencies, default=float('nan')):.1f} |"
            )
    if chromium_note:
        lines.append(f"| headless Chromium tabs | - | - | - | - | - | - | {chromium_note} |")
    rss, pss = main_memory
    lines.append(
        f"| main process (`log-monitor run --demo --headless`, shipping) | - | 1 | {pss:.0f} "
        f"| {rss:.0f} | - | - | - |"
    )
    lines += [
        "",
        "| layout | marginal PSS per window (MiB) | first window: start → status painted (ms) "
        "| later windows: asked → status painted, median / max (ms) | idle CPU, 1 window "
        "| idle CPU, 4 windows |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        later = result.later_ms
        later_text = f"{statistics.median(later):.0f} / {max(later):.0f}" if later else "-"
        idle = [
            f"{result.idle[n][0]:.2f} % (with children {result.idle[n][1]:.2f} %)"
            if n in result.idle
            else "-"
            for n in IDLE_COUNTS
        ]
        lines.append(
            f"| {result.name} | {result.marginal():.1f} | {result.first_ms:.0f} | {later_text} "
            f"| {idle[0]} | {idle[1]} |"
        )
    host = next((r for r in results if r.name == "one renderer host"), None)
    small = next((r for r in results if r.name.startswith("one renderer host, ")), None)
    if host is not None and max(COUNTS) in host.at:
        eight = host.at[max(COUNTS)]
        later_max = max(host.later_ms, default=float("nan"))
        idle_max = max((v[0] for v in host.idle.values()), default=float("nan"))
        lines += [
            "",
            "| target (one renderer host) | measured | |",
            "|---|---:|---|",
            f"| marginal PSS ≤ {TARGET_MARGINAL_MIB:.0f} MiB per window | {host.marginal():.1f} MiB "
            + (f"({small.marginal():.1f} MiB with 800x600 windows) " if small is not None else "")
            + f"| {_met(host.marginal() <= TARGET_MARGINAL_MIB)} |",
            f"| {max(COUNTS)} windows ≤ {TARGET_TOTAL_8_MIB:.0f} MiB PSS in all | {eight.pss:.0f} MiB "
            f"| {_met(eight.pss <= TARGET_TOTAL_8_MIB)} |",
            f"| a later window painted < {TARGET_LATER_WINDOW_MS:.0f} ms after it is asked for "
            f"| max {later_max:.0f} ms (median {statistics.median(host.later_ms):.0f}) "
            f"| {_met(later_max < TARGET_LATER_WINDOW_MS)} |",
            f"| status → DOM p99 < {TARGET_P99_8_MS:.0f} ms at {max(COUNTS)} windows "
            f"| {percentile(eight.latencies, 0.99):.1f} ms "
            f"| {_met(percentile(eight.latencies, 0.99) < TARGET_P99_8_MS)} |",
            f"| host idle ≤ {TARGET_IDLE_PERCENT} % of a core | {idle_max:.2f} % "
            f"| {_met(idle_max <= TARGET_IDLE_PERCENT)} |",
        ]
    return "\n".join(lines)


LAYOUTS = ("host", "process", "chromium")


async def run(
    changes: int, work: Path, idle: bool, layouts: tuple[str, ...] = LAYOUTS
) -> tuple[list[LayoutResult], str]:
    results = []
    if "host" in layouts:
        results.append(await bench_host(changes, work, idle))
        # The size of the windows of the probe the host's targets came from (pywebview's
        # default): the window's raster buffers are a good part of its cost.
        results.append(await bench_host(changes // 4, work, False, "800x600", (1, 8)))
    if "process" in layouts:
        results.append(await bench_process_per_window(changes, work))
    if "chromium" not in layouts:
        return results, ""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        return results, "not measured: no `chromium` binary (apt-get install -y chromium)"
    results.append(await bench_chromium(binary, changes, work))
    return results, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 changes per count, not 120")
    parser.add_argument(
        "--layout", action="append", choices=LAYOUTS, help="only these layouts (repeatable)"
    )
    parser.add_argument("--no-idle", action="store_true", help="skip the idle CPU runs")
    args = parser.parse_args()
    changes = 40 if args.quick else 120
    layouts = tuple(args.layout) if args.layout else LAYOUTS
    with tempfile.TemporaryDirectory(prefix="window-latency-") as tmp:
        work = Path(tmp)
        results, chromium_note = asyncio.run(run(changes, work, not args.no_idle, layouts))
        main_memory = main_process_memory(work)
    print(
        f"Status change → page DOM text changed, one change every {INTERVAL_S * 1000:.0f} ms, "
        f"{changes} changes per count; idle CPU over {IDLE_S:.0f} s; {os.cpu_count()} CPUs; "
        "Qt offscreen.\n"
    )
    print(format_tables(results, main_memory, chromium_note))


if __name__ == "__main__":
    main()
