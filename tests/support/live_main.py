"""A real ``log-monitor run`` with windows for the system tests (``LiveMain``), the ``Watch`` on its
publisher that sees the main process's status and every window's reported page, and the
account and start-up bound those tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from harness.processes import alive
from harness.server_process import REPOSITORY
from ipc.host import connect_subscriber_thread
from ipc.messages import (
    TOPIC_STATUS,
    TOPIC_WINDOW_PREFIX,
    Status,
    WindowRef,
    WindowState,
)
from ipc.subscriber import Delivery, SubscriberThread

USER = "alice"
PASSWORD = "correct horse battery staple"
START_TIMEOUT_S = 60.0
BIN = Path(sys.executable).parent


@dataclass
class Seen:
    """One window as its reports show it."""

    state: WindowState
    view: dict[str, Any]
    first_with_status: dict[str, Any] | None = None


@dataclass
class Watch:
    """The main process's status and every window's reported page, as they arrive."""

    windows: dict[WindowRef, Seen] = field(default_factory=dict)
    closed: set[WindowRef] = field(default_factory=set)
    statuses: list[tuple[float, Status]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def on_delivery(self, delivery: Delivery) -> None:
        message = delivery.message
        now = time.time()
        with self.changed:
            if isinstance(message, Status):
                self.statuses.append((now, message))
            elif isinstance(message, WindowState):
                ref = message.ref
                if message.closed:
                    self.windows.pop(ref, None)
                    self.closed.add(ref)
                else:
                    view = msgspec.to_builtins(message.view) if message.view else {}
                    seen = self.windows.get(ref)
                    first = seen.first_with_status if seen else None
                    if first is None and view.get("hasStatus"):
                        first = view
                    self.windows[ref] = Seen(message, view, first)
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def status(self) -> Status:
        with self.changed:
            return self.statuses[-1][1]

    def ready_windows(self) -> list[WindowRef]:
        """The windows that are ready, in live hosts, in order."""
        with self.changed:
            ready = [r for r, s in self.windows.items() if s.state.ready and alive(r.host)]
        return sorted(ready, key=lambda r: (r.host, r.window))

    def hosts(self) -> set[int]:
        with self.changed:
            return {ref.host for ref in self.windows}


class LiveMain:
    """``log-monitor run`` with windows, and a ``Watch`` on its publisher."""

    def __init__(
        self,
        data_dir: Path,
        windows: int,
        server_url: str | None,
        display: dict[str, str | None] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """``display``: the environment variables that choose the display (None: unset);
        by default Qt's offscreen platform, which also satisfies can_show_windows().
        ``extra``: more options for ``log-monitor run``."""
        self.data_dir = data_dir
        # stderr (the log lines and the sentences a person reads) and stdout apart.
        self.log_path = data_dir.parent / f"{data_dir.name}-main.log"
        self.stdout_path = data_dir.parent / f"{data_dir.name}-main.out"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self._stdout = open(self.stdout_path, "ab")  # noqa: SIM115 - closed in close()
        self.env = dict(os.environ)
        for name, value in (display or {"QT_QPA_PLATFORM": "offscreen"}).items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        # The page test hook, for the sign-in test.
        self.env["LOG_MONITOR_WINDOW_TEST_HOOKS"] = "1"
        command = [
            str(BIN / "log-monitor"),
            "run",
            "--demo",
            "--windows",
            str(windows),
            "--data-dir",
            str(data_dir),
        ]
        if server_url:
            command += ["--server", server_url]
        command += extra
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command, cwd=REPOSITORY, env=self.env, stdout=self._stdout, stderr=self._log
        )
        self.watch = Watch()
        self.subscriber: SubscriberThread | None = None
        self.host_pids: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT_S
        while self.subscriber is None:
            if self.process.poll() is not None:
                raise RuntimeError(f"log-monitor run exited: {self.log_text()}")
            try:
                self.subscriber = connect_subscriber_thread(
                    data_dir, self.watch.on_delivery, (TOPIC_STATUS, TOPIC_WINDOW_PREFIX)
                ).start()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # polling for the endpoints file, with a deadline

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_windows(self, count: int, timeout: float = START_TIMEOUT_S) -> list[WindowRef]:
        def enough() -> bool:
            ready = [
                r
                for r, s in self.watch.windows.items()
                if s.state.ready and s.view.get("hasStatus") and alive(r.host)
            ]
            return len(ready) >= count

        try:
            self.watch.wait(enough, timeout, f"{count} ready windows")
        except AssertionError:
            raise AssertionError(f"windows did not come up; main log:\n{self.log_text()}") from None
        refs = self.watch.ready_windows()
        self.host_pids.update(ref.host for ref in refs)
        return refs

    def command(
        self, *args: str, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "log-monitor"), *args, "--data-dir", str(self.data_dir)],
            cwd=REPOSITORY,
            env=self.env,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for pid in self.host_pids | self.watch.hosts():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._log.close()
        self._stdout.close()
