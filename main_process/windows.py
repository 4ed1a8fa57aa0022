"""The renderer windows the main process has started: one process per window.

Owns spawning ``python -m renderer`` for a data dir (Electron's model: a window is a
process of its own, so a crash in one costs nothing else), knowing which are alive, and
ending them when the main process stops. It never waits on a window: a window talks to
the main process only through ipc, and its exit is noticed by polling ``Popen.poll``.

Must not: start a window where no display exists (``can_show_windows``), or keep a
reference to anything inside a window.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("log_monitor.windows")


def can_show_windows() -> bool:
    """Whether a window could appear: a display on Linux; always on Windows and macOS."""
    if sys.platform in ("win32", "darwin"):
        return True
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class WindowProcesses:
    def __init__(
        self,
        data_dir: Path,
        on_change: Callable[[], None],
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._data_dir = data_dir
        self._on_change = on_change
        self._extra_args = extra_args
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self.ever_opened = 0

    @property
    def count(self) -> int:
        return len(self._processes)

    def pids(self) -> list[int]:
        return sorted(self._processes)

    def open(self, view: str | None = None) -> int:
        command = [
            sys.executable,
            "-m",
            "renderer",
            "--data-dir",
            str(self._data_dir),
            "--main-pid",
            str(os.getpid()),
            *self._extra_args,
        ]
        if view:
            command += ["--view", view]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self._processes[process.pid] = process
        self.ever_opened += 1
        log.info("window process %d started", process.pid)
        self._on_change()
        return process.pid

    def reap(self) -> list[int]:
        """Forget windows whose process ended; returns their pids."""
        ended = [pid for pid, p in self._processes.items() if p.poll() is not None]
        for pid in ended:
            code = self._processes.pop(pid).returncode
            log.info("window process %d ended (exit status %s)", pid, code)
        if ended:
            self._on_change()
        return ended

    def close_all(self, timeout: float = 5.0) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self._processes.values():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._processes.clear()
