"""Driving a demo-mode window from another process: the tests' and benchmarks' handle.

Owns: ``DemoWindowProcess``, which starts ``python -m renderer --demo-feed - --report -``
as a subprocess, writes JSON lines to its stdin, and reads its reports from stdout on a
thread, so a caller can wait for a given report with a deadline instead of sleeping.
The window's stderr (Qt and Chromium chatter) goes to a file, shown when a test fails.

Must not: be imported by the window process itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

Report = dict[str, Any]


class DemoWindowError(RuntimeError):
    """The window process did not do what was asked in time (or died)."""


class DemoWindowProcess:
    """One ``python -m renderer`` window in demo mode; use as a context manager."""

    def __init__(
        self,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._stderr = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            prefix="renderer-stderr-", suffix=".log", delete=False
        )
        environ = dict(os.environ if env is None else env)
        # The demo output must be read line by line as it happens.
        environ["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "renderer", "--demo-feed", "-", "--report", "-", *extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=environ,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.pid = self.process.pid
        self.raw_output: list[str] = []
        self._inbox: queue.Queue[Report | None] = queue.Queue()
        self._pending: list[Report] = []
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="demo-driver-reader", daemon=True)
        self._reader.start()

    def __enter__(self) -> DemoWindowProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- the two streams ------------------------------------------------------------------

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.raw_output.append(line)
            try:
                report = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout)
            if isinstance(report, dict):
                self._inbox.put(report)
        self._inbox.put(None)

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_lines([json.dumps(message)])

    def send_lines(self, lines: Iterable[str]) -> None:
        """Write already-encoded JSON lines (one message each)."""
        assert self.process.stdin is not None
        with self._write_lock:
            try:
                self.process.stdin.write("".join(line + "\n" for line in lines))
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise DemoWindowError(f"the window process is gone: {self.diagnosis()}") from exc

    # ---- waiting ------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[Report], bool], timeout: float, what: str) -> Report:
        """The first report (not yet consumed) matching ``predicate``, within ``timeout``."""
        for i, report in enumerate(self._pending):
            if predicate(report):
                return self._pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoWindowError(f"no {what} within {timeout:g} s; {self.diagnosis()}")
            try:
                received = self._inbox.get(timeout=left)
            except queue.Empty:
                continue
            if received is None:
                self._inbox.put(None)  # keep the end marker for later waits
                raise DemoWindowError(f"the window exited before {what}; {self.diagnosis()}")
            if predicate(received):
                return received
            self._pending.append(received)

    def wait_event(self, event: str, timeout: float) -> Report:
        return self.wait_for(lambda r: r.get("event") == event, timeout, f"{event!r} report")

    def request(self, kind: str, timeout: float = 15.0, **fields: Any) -> Any:
        """Send a demo request and return its result (raises on an error reply)."""
        request_id = f"r{next(self._ids)}"
        self.send({"type": kind, "id": request_id, **fields})
        reply = self.wait_for(
            lambda r: r.get("event") == "reply" and r.get("id") == request_id,
            timeout,
            f"reply to {kind}",
        )
        if "error" in reply:
            raise DemoWindowError(f"{kind} failed: {reply['error']}")
        return reply["result"]

    def describe(self, timeout: float = 15.0) -> dict[str, Any]:
        result = self.request("describe", timeout)
        assert isinstance(result, dict)
        return result

    def evaluate(self, script: str, timeout: float = 15.0) -> Any:
        return self.request("evaluate", timeout, script=script)

    def describe_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Read the page back until ``predicate`` holds; each read is one page round trip."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.describe(timeout=max(0.1, deadline - time.monotonic()))
            if predicate(last):
                return last
        raise DemoWindowError(f"the page never showed {what}; last seen: {last}")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise DemoWindowError(f"the window did not exit within {timeout:g} s") from exc

    # ---- ending -----------------------------------------------------------------------

    def end_feed(self) -> None:
        """Close the window's stdin: to the window, the main process is gone."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def stderr_text(self) -> str:
        return Path(self._stderr.name).read_text(encoding="utf-8", errors="replace")

    def diagnosis(self) -> str:
        code = self.process.poll()
        tail = "\n".join(self.stderr_text().splitlines()[-60:])
        return f"exit code {code}; stderr tail:\n{tail}"

    def close(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.end_feed()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()
        Path(self._stderr.name).unlink(missing_ok=True)
