"""The renderer host the main process runs: one process holding every window.

Owns, from the main process's side: starting ``python -m renderer --data-dir D`` when the
first window is wanted (Electron's layout: one browser process for all windows, a render
process per page; the command line and the exit statuses are ``ipc.host_launch``'s), asking the running host for more windows (a ``HostControl`` count,
published: the main process never waits on the host), knowing which windows are open
from their reports, and what to do when the host ends. Its exit is noticed the moment
it happens (a thread waits for the process and wakes the owner through ``on_change``, so
nothing polls), the owner calls ``reap``, and what ``reap`` finds is one of:

* **closed** (exit 0): the user closed the last window. Nothing more, unless windows were
  asked for meanwhile: a new host opens those.
* **did not start** (ended before any window showed its page): its stderr, read here
  through a pipe by a daemon thread (each line goes on to the log as
  ``renderer host <pid>: …``, the last ``STDERR_TAIL_LINES`` are kept), becomes one
  sentence (``main_process.window_start_failure``: Qt's platform plugin, a missing library, no
  display server). Nothing starts the host again by itself: another start would fail
  the same way, so only a person's request (``OpenWindow``) does.
* **died** (a signal or an error exit after windows were shown: ``kill -9``, a crash): it
  is started again at once with the windows that were open (same count, each where it
  last reported being), unless it died ``MAX_RESTARTS`` times within
  ``RESTART_PERIOD_S``; then it is left down with a sentence saying so.
* **main process gone** (exit 3): the host closed its windows because it believed the
  main process gone (it was stopped long enough for the heartbeat to go silent). Not
  started again.
* **nothing to show** (exit 4): the host had no window and the desktop offers no tray
  (none at all, or it went away). Not a failure, and not started again: that desktop
  gets what it got before there was a tray, the main process alone.

**The tray.** A host on Linux with a display, or on Windows, shows a tray icon when the
desktop has a tray (``TrayState`` reports say so; ``tray``), and then outlives its last
window (``ipc.host_launch.tray_toolkit`` says which toolkit draws it). With
no window wanted (``log-monitor run --windows 0``, what autostart runs),
``show_tray()`` starts a host with no window to find out: it reports its tray, or ends
with *nothing to show*. A host whose tray was shown counts as started, so one that dies
is started again like one with windows, with the same windows (perhaps none). A
tray-only host that fails to start is a log line, not a sentence for the person: nothing
was asked to be shown. ``--exit-with-windows`` starts hosts without a tray (the last
window's close must end them).

The windows of a host that ended are returned by ``reap`` so the main process can say
they closed (a killed host cannot say it for them). The count of windows is what the
status shows: those reported open plus those asked for and not yet reported.

Must not: start a host where no display exists (``can_show_windows``; for the tray alone,
``can_show_tray``), keep a reference
to anything inside a window, or block the caller on the host (the sentence is made on the
reader thread, which may run ``ldd``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ipc.host_launch import (
    EXIT_CLOSED,
    EXIT_MAIN_PROCESS_GONE,
    EXIT_NOTHING_TO_SHOW,
    host_command,
    tray_toolkit,
)
from ipc.messages import (
    HostControl,
    Published,
    TrayState,
    WindowGeometry,
    WindowRef,
    WindowState,
)
from main_process.window_start_failure import explain_start_failure

log = logging.getLogger("log_monitor.windows")

STDERR_TAIL_LINES = 50
STDERR_LINE_MAX_BYTES = 1000
# How long reap waits for a failed host's reader to finish its sentence (its stderr may
# stay open a little longer than the process, in a child that inherited it).
EXPLAIN_WAIT_S = 5.0
# A host that dies this often this quickly is not started again by itself.
MAX_RESTARTS = 3
RESTART_PERIOD_S = 60.0


def can_show_windows() -> bool:
    """Whether a window could appear: a display on Linux; always on Windows and macOS."""
    if sys.platform in ("win32", "darwin"):
        return True
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def can_show_tray() -> bool:
    """Whether a tray icon could appear: on Windows (pystray's, in the notification area
    every Windows desktop has) and macOS (pystray's, in the menu bar); on Linux with a
    display (Qt's, never on Qt's offscreen platform; or pystray's where asked for)."""
    gui = "qt" if sys.platform.startswith("linux") else None
    toolkit = tray_toolkit(sys.platform, gui, os.environ)
    if toolkit is None:
        return False
    if sys.platform in ("win32", "darwin"):
        return True
    if toolkit == "qt" and os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass(frozen=True, slots=True)
class HostEnded:
    """A renderer host that ended, and what became of its windows.

    ``closed``: the windows it had open (none of them can report closing any more);
    ``start_failure``: why it never showed a window; ``gave_up``: why it was not started
    again; ``restarted``: the pid of the host started in its place; ``had_tray``: it had
    reported a tray (which is gone with it).
    """

    pid: int
    exit_status: int
    closed: tuple[WindowRef, ...] = ()
    start_failure: str | None = None
    gave_up: str | None = None
    restarted: int | None = None
    had_tray: bool = False


@dataclass(slots=True)
class _Window:
    ready: bool = False
    closed: bool = False
    geometry: WindowGeometry | None = None


@dataclass(slots=True)
class _Host:
    process: subprocess.Popen[bytes]
    initial: int
    open_requests: int = 0
    windows: dict[int, _Window] = field(default_factory=dict)
    ever_ready: bool = False
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    start_failure: str | None = None
    reader_done: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None
    tray: TrayState | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pending(self) -> int:
        """Windows asked for that have not reported yet."""
        return max(0, self.initial + self.open_requests - len(self.windows))

    def open_windows(self) -> list[tuple[int, _Window]]:
        return sorted((n, w) for n, w in self.windows.items() if not w.closed)


class WindowHost:
    """The renderer host of this main process; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        on_change: Callable[[], None],
        publish: Callable[[Published], None],
        *,
        tray: bool = True,
    ) -> None:
        self._data_dir = data_dir
        self._on_change = on_change
        self._publish = publish
        self._tray = tray
        self._host: _Host | None = None
        self._restarts: deque[float] = deque(maxlen=MAX_RESTARTS)
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- what there is --------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Windows open or on their way (the status's ``windows``)."""
        host = self._host
        if host is None:
            return 0
        return host.pending + len(host.open_windows())

    @property
    def host_pid(self) -> int | None:
        return None if self._host is None else self._host.pid

    def windows(self) -> list[WindowRef]:
        """The windows that reported they are open."""
        host = self._host
        if host is None:
            return []
        return [WindowRef(host=host.pid, window=n) for n, _ in host.open_windows()]

    @property
    def tray(self) -> TrayState | None:
        """What the running host last reported of its tray (None: no host, or no report)."""
        host = self._host
        return None if host is None else host.tray

    # ---- opening ----------------------------------------------------------------------------

    def open(self, count: int = 1) -> int | None:
        """Ask for ``count`` more windows; the host's pid (None when count is 0)."""
        if count <= 0:
            return self.host_pid
        host = self._host
        if host is None or (host.process.poll() is not None and not host.ever_ready):
            # No host, or one that is failing to start (reap will say why): a new one.
            if host is not None:
                self._forget(host)
            return self._start(count, [])
        host.open_requests += count
        self._publish(HostControl(host=host.pid, open_requests=host.open_requests))
        self._on_change()
        return host.pid

    def show_tray(self) -> int | None:
        """Start a host with no window for the tray, where one could appear and no host
        runs; its pid (or the running host's), or None."""
        if self._host is not None:
            return self._host.pid
        if not self._tray or not can_show_tray():
            return None
        return self._start(0, [])

    def _start(self, count: int, geometries: list[WindowGeometry]) -> int:
        command = host_command(
            sys.executable,
            self._data_dir,
            main_pid=os.getpid(),
            windows=count,
            geometries=geometries,
            tray=self._tray,
        )
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        host = _Host(process, initial=count)
        self._host = host
        with contextlib.suppress(RuntimeError):  # no loop (a unit test): the owner polls
            self._loop = asyncio.get_running_loop()
        assert process.stderr is not None
        threading.Thread(
            target=self._read_stderr,
            args=(host, process.stderr),
            name=f"renderer-host-{process.pid}-stderr",
            daemon=True,
        ).start()
        threading.Thread(
            target=self._wait_for_exit,
            args=(host,),
            name=f"renderer-host-{process.pid}-exit",
            daemon=True,
        ).start()
        log.info("renderer host %d started with %d windows", process.pid, count)
        self._on_change()
        return process.pid

    def _forget(self, host: _Host) -> None:
        if self._host is host:
            self._host = None

    # ---- reports ----------------------------------------------------------------------------

    def on_report(self, state: WindowState) -> bool:
        """A window's report; True when it is the first window of its host to be ready."""
        host = self._host
        if host is None or state.host != host.pid:
            return False  # a host that has ended: its windows are gone already
        window = host.windows.setdefault(state.window, _Window())
        if state.closed:
            window.closed = True
            self._on_change()
            return False
        if state.view is not None and state.view.geometry is not None:
            window.geometry = state.view.geometry
        first = state.ready and not host.ever_ready
        if state.ready:
            window.ready = True
            host.ever_ready = True
        self._on_change()
        return first

    def on_tray(self, state: TrayState) -> None:
        """The host's report of its tray; a tray shown means the host has started."""
        host = self._host
        if host is None or state.host != host.pid:
            return
        host.tray = state
        if state.shown:
            host.ever_ready = True
        self._on_change()

    # ---- the host ending --------------------------------------------------------------------

    def reap(self) -> HostEnded | None:
        """What became of a host that ended since the last call (see the module docstring).

        A host that ended before it was ready is returned once its reader has made the
        sentence saying why (or after ``EXPLAIN_WAIT_S``); until then it still counts.
        """
        host = self._host
        if host is None:
            return None
        code = host.process.poll()
        if code is None:
            return None
        now = time.monotonic()
        if host.ended_at is None:
            host.ended_at = now
        failed = not host.ever_ready and code not in (EXIT_CLOSED, EXIT_NOTHING_TO_SHOW)
        if failed and not host.reader_done.is_set() and now - host.ended_at < EXPLAIN_WAIT_S:
            return None
        self._forget(host)
        closed = tuple(WindowRef(host=host.pid, window=n) for n, _ in host.open_windows())
        had_tray = host.tray is not None
        log.info("renderer host %d ended (exit status %s)", host.pid, code)
        ended = HostEnded(host.pid, code, closed, had_tray=had_tray)
        if failed:
            sentence = host.start_failure or explain_start_failure(
                "\n".join(host.stderr_tail), code, os.environ, lambda _plugin: []
            )
            if host.initial + host.open_requests == 0:
                # Only a tray was looked for: nobody asked to see anything.
                log.warning("no tray: %s", sentence)
            else:
                ended = HostEnded(host.pid, code, closed, start_failure=sentence, had_tray=had_tray)
        elif code in (EXIT_CLOSED, EXIT_NOTHING_TO_SHOW):
            if code == EXIT_NOTHING_TO_SHOW:
                log.info("renderer host %d had nothing to show (no window, no tray)", host.pid)
            if host.pending:
                # Windows were asked for as the last one closed: a new host opens them.
                restarted = self._start(host.pending, [])
                ended = HostEnded(host.pid, code, closed, restarted=restarted, had_tray=had_tray)
        elif code != EXIT_MAIN_PROCESS_GONE:
            ended = self._restart(host, code, closed, now)
        self._on_change()
        return ended

    def _restart(
        self, host: _Host, code: int, closed: tuple[WindowRef, ...], now: float
    ) -> HostEnded:
        wanted = host.open_windows()
        count = len(wanted) + host.pending
        had_tray = host.tray is not None
        if count == 0 and not (host.tray is not None and host.tray.shown):
            return HostEnded(host.pid, code, closed, had_tray=had_tray)
        if len(self._restarts) == MAX_RESTARTS and now - self._restarts[0] < RESTART_PERIOD_S:
            sentence = (
                f"Windows closed: the renderer host ended {MAX_RESTARTS + 1} times within "
                f"{RESTART_PERIOD_S:.0f} s (last: {_exit_status_text(code)}); "
                "it is not started again until a window is asked for."
            )
            return HostEnded(host.pid, code, closed, gave_up=sentence, had_tray=had_tray)
        self._restarts.append(now)
        geometries = [w.geometry for _, w in wanted if w.geometry is not None]
        log.warning(
            "renderer host %d ended (%s); starting it again with %d windows",
            host.pid,
            _exit_status_text(code),
            count,
        )
        return HostEnded(
            host.pid, code, closed, restarted=self._start(count, geometries), had_tray=had_tray
        )

    def close_all(self, timeout: float = 5.0) -> None:
        host = self._host
        self._host = None
        if host is None:
            return
        process = host.process
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def waiting_to_reap(self) -> bool:
        """Whether the host has ended but ``reap`` still waits for the sentence saying
        why (at most ``EXPLAIN_WAIT_S``): the owner calls ``reap`` again shortly."""
        host = self._host
        return host is not None and host.process.poll() is not None

    def _wait_for_exit(self, host: _Host) -> None:
        # Runs in a daemon thread: Popen's wait and poll share a lock, so this is safe
        # beside ``reap``'s poll on the loop thread.
        with contextlib.suppress(Exception):
            host.process.wait()
        self._notify_from_thread()

    def _notify_from_thread(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_change)

    def _read_stderr(self, host: _Host, stream: IO[bytes]) -> None:
        # Runs until every holder of the pipe's write end (the host and any child that
        # inherited it) has closed it.
        pid = host.pid
        try:
            with stream:
                for raw in stream:
                    line = raw[:STDERR_LINE_MAX_BYTES].decode("utf-8", "replace").rstrip()
                    host.stderr_tail.append(line)
                    if line:
                        log.info("renderer host %d: %s", pid, line)
            if host.ever_ready:
                return
            try:
                code = host.process.wait(EXPLAIN_WAIT_S)
            except subprocess.TimeoutExpired:
                return  # still running with its stderr closed: nothing to explain
            if code != 0:
                host.start_failure = explain_start_failure(
                    "\n".join(host.stderr_tail), code, os.environ
                )
        except Exception:
            log.exception("reading the stderr of renderer host %d failed", pid)
        finally:
            host.reader_done.set()
            self._notify_from_thread()


def _exit_status_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
