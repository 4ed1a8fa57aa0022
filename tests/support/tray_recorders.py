"""Stand-ins that record what the pystray tray does, for its tests: ``Recorder`` (what they saw,
with a condition to wait on), ``RecordingSender`` (the commands it sends),
``RecordingReporter`` (its reports to the main process), the statuses it is given
(``status``), and waits on its reports (``last_report``, ``state_is``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ipc.messages import (
    Command,
    Ok,
    Reply,
    Status,
    TrayState,
)

SERVER = "http://127.0.0.1:5324"
WAIT_S = 10.0


def status(**fields: Any) -> Status:
    """A connected guest's status, changed by ``fields``."""
    base: dict[str, Any] = {"state": "connected", "server": SERVER, "identity": "guest"}
    base.update(fields)
    return Status(**base)


class Recorder:
    """What the stand-ins saw, with a condition to wait on."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.calls: list[tuple[str, Any]] = []
        self.commands: list[Command] = []
        self.reports: list[TrayState] = []
        self.opened = 0

    def add(self, kind: str, value: Any) -> None:
        with self.changed:
            self.calls.append((kind, value))
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, WAIT_S), f"timed out waiting for {what}"


class RecordingSender:
    """A ``CommandSender`` that records each command and answers ``Ok``."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def send(self, command: Command, timeout: float) -> Reply:
        with self._recorder.changed:
            self._recorder.commands.append(command)
            self._recorder.changed.notify_all()
        return Ok()


class RecordingReporter:
    """A ``TrayReporter`` that records each report."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def report(self, state: TrayState) -> None:
        with self._recorder.changed:
            self._recorder.reports.append(state)
            self._recorder.changed.notify_all()

    def send_now(self, state: TrayState) -> None:
        self.report(state)

    def stop(self) -> None:
        pass


def last_report(recorder: Recorder, predicate: Callable[[TrayState], bool], what: str) -> TrayState:
    """The last report, once it satisfies ``predicate``."""
    recorder.wait(lambda: bool(recorder.reports) and predicate(recorder.reports[-1]), what)
    return recorder.reports[-1]


def state_is(state: str) -> Callable[[TrayState], bool]:
    """The condition that a report shows ``state``."""
    return lambda report: report.state == state
