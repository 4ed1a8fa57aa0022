"""The real main process (``log-monitor run``) as a child process, for tests and benchmarks.

Starts ``python -m main_process run … --headless --data-dir D``, reads its status over the
real ipc command channel (``GetStatus``), and stops it by PID: ``stop()`` sends SIGTERM,
``kill()`` sends SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.server_process import REPOSITORY
from harness.waiting import wait_until
from ipc.commands import CommandTimeoutError
from ipc.endpoints import EndpointError
from ipc.host import connect_sync_client
from ipc.messages import GetStatus, Ok


def log_monitor(
    *args: str, input_text: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "main_process", *args],
        cwd=REPOSITORY,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=headless_environment(),
    )


def headless_environment() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        env.pop(name, None)
    return env


class MainProcessRunner:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-main.log"
        self._log: IO[bytes] | None = None
        self.environment: dict[str, str] | None = None
        """The process's environment (default: ``headless_environment()``)."""

    def start(self, stdin: int | None = subprocess.DEVNULL, wait: bool = True) -> MainProcessRunner:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "main_process",
                "run",
                "--headless",
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            cwd=REPOSITORY,
            stdin=stdin,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environment if self.environment is not None else headless_environment(),
        )
        if wait:
            self.wait_for_status(lambda s: True, 30, "the first status")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any] | None:
        """The current status over ipc, or None while the main process cannot answer."""
        process = self.process
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"main process exited with {process.returncode}: {self.log_text()[-3000:]}"
            )
        try:
            with connect_sync_client(self.data_dir) as client:
                reply = client.request(GetStatus(), timeout=2.0)
        except (EndpointError, CommandTimeoutError):
            return None
        return reply.data if isinstance(reply, Ok) else None

    def wait_for_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            status = self.status()
            if status is not None and predicate(status):
                found.append(status)
                return True
            return False

        wait_until(check, timeout, what, interval=0.05)
        return found[0]

    def stop(self, timeout: float = 30) -> int:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGTERM)
        return self._reap(timeout)

    def kill(self) -> int:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        return self._reap(30)

    def wait(self, timeout: float = 30) -> int:
        return self._reap(timeout)

    def _reap(self, timeout: float) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
        elif self.process is not None:
            self._reap(5)
