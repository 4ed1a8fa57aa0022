"""The renderer windows the main process has started: one process per window.

Owns spawning ``python -m renderer`` for a data dir (Electron's model: a window is a
process of its own, so a crash in one costs nothing else), knowing which are alive and
which have shown their page, and ending them when the main process stops. It never waits
on a window: a window talks to the main process only through ipc, and its exit is
noticed by polling ``Popen.poll`` (``reap``).

A window's stderr comes here through a pipe, read by one daemon thread per window: each
line goes on to the log (``window <pid>: …``) and the last ``STDERR_TAIL_LINES`` are
kept. A window that ends before it ever reported ready did not start: its tail is
turned into one sentence (``renderer.start_failure``: Qt's platform plugin, a missing
library, no display server) that ``reap`` hands back. Nothing opens such a window
again by itself: another start would fail the same way, so only a person's request
(``OpenWindow``) starts another.

Must not: start a window where no display exists (``can_show_windows``), keep a
reference to anything inside a window, or block the caller on a window (the sentence is
made on the reader thread, which may run ``ldd``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from renderer.start_failure import explain_start_failure

log = logging.getLogger("log_monitor.windows")

STDERR_TAIL_LINES = 50
STDERR_LINE_MAX_BYTES = 1000
# How long reap waits for a failed window's reader to finish its sentence (its stderr
# may stay open a little longer than the process, in a child that inherited it).
EXPLAIN_WAIT_S = 5.0


def can_show_windows() -> bool:
    """Whether a window could appear: a display on Linux; always on Windows and macOS."""
    if sys.platform in ("win32", "darwin"):
        return True
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass(frozen=True, slots=True)
class EndedWindow:
    """A window process that ended; ``start_failure`` is set when it never was ready."""

    pid: int
    exit_status: int
    start_failure: str | None = None


@dataclass(slots=True)
class _Window:
    process: subprocess.Popen[bytes]
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    ready: bool = False
    start_failure: str | None = None
    reader_done: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None


class WindowProcesses:
    """The window processes of this main process; see the module docstring."""

    def __init__(self, data_dir: Path, on_change: Callable[[], None]) -> None:
        self._data_dir = data_dir
        self._on_change = on_change
        self._windows: dict[int, _Window] = {}

    @property
    def count(self) -> int:
        return len(self._windows)

    def pids(self) -> list[int]:
        return sorted(self._windows)

    def open(self) -> int:
        command = [
            sys.executable,
            "-m",
            "renderer",
            "--data-dir",
            str(self._data_dir),
            "--main-pid",
            str(os.getpid()),
        ]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        window = _Window(process)
        self._windows[process.pid] = window
        assert process.stderr is not None
        threading.Thread(
            target=self._read_stderr,
            args=(process.pid, window, process.stderr),
            name=f"window-{process.pid}-stderr",
            daemon=True,
        ).start()
        log.info("window process %d started", process.pid)
        self._on_change()
        return process.pid

    def mark_ready(self, pid: int) -> None:
        """The window ``pid`` reported ready: its page shows the status."""
        window = self._windows.get(pid)
        if window is not None:
            window.ready = True

    def reap(self) -> list[EndedWindow]:
        """Forget windows whose process ended and return them.

        A window that ended before it was ready is returned once its reader has made the
        sentence saying why (or after ``EXPLAIN_WAIT_S``); until then it still counts.
        """
        now = time.monotonic()
        ended: list[EndedWindow] = []
        for pid, window in list(self._windows.items()):
            code = window.process.poll()
            if code is None:
                continue
            failed = not window.ready and code != 0
            if window.ended_at is None:
                window.ended_at = now
            if (
                failed
                and not window.reader_done.is_set()
                and now - window.ended_at < EXPLAIN_WAIT_S
            ):
                continue
            del self._windows[pid]
            failure = None
            if failed:
                failure = window.start_failure or explain_start_failure(
                    "\n".join(window.stderr_tail), code, os.environ, lambda _plugin: []
                )
            log.info("window process %d ended (exit status %s)", pid, code)
            ended.append(EndedWindow(pid, code, failure))
        if ended:
            self._on_change()
        return ended

    def close_all(self, timeout: float = 5.0) -> None:
        processes = [window.process for window in self._windows.values()]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._windows.clear()

    def _read_stderr(self, pid: int, window: _Window, stream: IO[bytes]) -> None:
        # Runs until every holder of the pipe's write end (the window and any child that
        # inherited it) has closed it.
        try:
            with stream:
                for raw in stream:
                    line = raw[:STDERR_LINE_MAX_BYTES].decode("utf-8", "replace").rstrip()
                    window.stderr_tail.append(line)
                    if line:
                        log.info("window %d: %s", pid, line)
            if window.ready:
                return
            try:
                code = window.process.wait(EXPLAIN_WAIT_S)
            except subprocess.TimeoutExpired:
                return  # still running with its stderr closed: nothing to explain
            if code != 0:
                window.start_failure = explain_start_failure(
                    "\n".join(window.stderr_tail), code, os.environ
                )
        except Exception:
            log.exception("reading the stderr of window %d failed", pid)
        finally:
            window.reader_done.set()
