"""Asking every open window something and collecting the answers: the asker's side.

Owns ``ask_windows`` (and ``inspect_windows``, which also returns the renderer host's pid
and its tray), what ``log-monitor windows`` and ``log-monitor screenshot`` (and the
tests) use, and the shape of its answer. The exchange, all over ``ipc``:

1. subscribe to ``window.`` (the Last Value Cache hands over every window's latest
   ``WindowState`` at once, and later ones as they come);
2. send ``ControlWindows(WindowControl(request, action, ...))``; the main process
   publishes the ``WindowControl`` on the ``control`` topic and replies with the renderer
   host's pid, the windows it knows are open (``WindowRef``: host pid, window number) and
   what the host last reported of its tray icon (``TrayState``);
3. the host hands the request to each window it names; each performs the action and
   reports its state again, with ``ControlOutcome(id=request, ok, result | error)`` as
   ``view.control`` (``renderer.reporter``); wait until every window has answered, or
   the deadline.

No need to wait for the subscription to take effect before asking: an answer published
before it did is the window's cached state, re-sent when the subscription arrives.

A window that does not answer in time is still listed, from its last cached state, with
``answered`` false. Why through the main process and the window's own state topic rather
than a socket per window: the host owns no server sockets (principle: the main process is
the one owner), and the answer is then also the window's cached state, which any later
viewer sees.

Must not: import pywebview or Qt (the CLI stays light), or wait without a deadline.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ipc.host import connect_subscriber_thread, connect_sync_client
from ipc.messages import (
    TOPIC_WINDOW_PREFIX,
    ControlOutcome,
    ControlWindows,
    Failed,
    Ok,
    TrayState,
    WindowAction,
    WindowControl,
    WindowRef,
    WindowState,
    WindowView,
)
from ipc.subscriber import Delivery

DEFAULT_TIMEOUT_S = 10.0


class InspectionError(RuntimeError):
    """The main process refused or did not answer; the message is one sentence."""


@dataclass(slots=True)
class WindowAnswer:
    """One window: its last reported state and whether it answered this request."""

    ref: WindowRef
    ready: bool
    title: str | None
    answered: bool
    view: WindowView | None = None

    @property
    def host(self) -> int:
        return self.ref.host

    @property
    def window(self) -> int:
        return self.ref.window

    @property
    def fields(self) -> dict[str, Any]:
        """The view as JSON-able fields (camelCase names), empty if none was reported."""
        if self.view is None:
            return {}
        fields = msgspec.to_builtins(self.view)
        assert isinstance(fields, dict)
        return fields

    @property
    def control(self) -> ControlOutcome | None:
        return None if self.view is None else self.view.control

    @property
    def ok(self) -> bool:
        control = self.control
        return self.answered and control is not None and control.ok

    @property
    def result(self) -> Any:
        control = self.control
        return None if control is None else control.result

    @property
    def error(self) -> str | None:
        if not self.answered:
            return "the window did not answer in time"
        control = self.control
        return None if control is None or control.ok else str(control.error)

    def as_dict(self) -> dict[str, Any]:
        fields = self.fields
        control = fields.pop("control", None)
        return {
            "host": self.ref.host,
            "window": self.ref.window,
            "ready": self.ready,
            "title": self.title,
            "answered": self.answered,
            **fields,
            "control": control,
        }


class _WindowStates:
    """The latest ``WindowState`` of each window, filled by the subscriber thread."""

    def __init__(self) -> None:
        self.states: dict[WindowRef, WindowState] = {}
        self.changed = threading.Condition()

    def on_delivery(self, delivery: Delivery) -> None:
        message = delivery.message
        if not isinstance(message, WindowState):
            return
        with self.changed:
            if message.closed:
                self.states.pop(message.ref, None)
            else:
                self.states[message.ref] = message
            self.changed.notify_all()


def _answered(state: WindowState | None, request: str) -> bool:
    if state is None or state.view is None or state.view.control is None:
        return False
    return state.view.control.id == request


def _refs(data: dict[str, Any] | None) -> list[WindowRef]:
    refs = []
    for item in (data or {}).get("windows", []):
        try:
            refs.append(msgspec.convert(item, WindowRef))
        except msgspec.ValidationError:
            continue
    return refs


@dataclass(slots=True)
class WindowsReport:
    """The renderer host (its pid, or None), its tray icon (None: no tray reported) and
    its windows' answers."""

    host: int | None
    tray: TrayState | None
    windows: list[WindowAnswer]

    def as_dict(self) -> dict[str, Any]:
        tray = None if self.tray is None else msgspec.to_builtins(self.tray)
        if isinstance(tray, dict):
            tray.pop("type", None)
            tray.pop("closed", None)
        return {
            "host": self.host,
            "tray": tray,
            "windows": [answer.as_dict() for answer in self.windows],
        }


def ask_windows(
    data_dir: Path,
    action: WindowAction,
    *,
    directory: Path | None = None,
    script: str | None = None,
    windows: tuple[WindowRef, ...] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[WindowAnswer]:
    """Ask the windows of the main process of ``data_dir`` to do ``action``; see above."""
    return inspect_windows(
        data_dir, action, directory=directory, script=script, windows=windows, timeout=timeout
    ).windows


def _tray(data: dict[str, Any] | None) -> TrayState | None:
    raw = (data or {}).get("tray")
    if not isinstance(raw, dict):
        return None
    try:
        return msgspec.convert(raw, TrayState)
    except msgspec.ValidationError:
        return None


def inspect_windows(
    data_dir: Path,
    action: WindowAction,
    *,
    directory: Path | None = None,
    script: str | None = None,
    windows: tuple[WindowRef, ...] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> WindowsReport:
    """``ask_windows``, with the renderer host's pid and its tray."""
    deadline = time.monotonic() + timeout
    request = secrets.token_hex(8)
    collected = _WindowStates()
    subscriber = connect_subscriber_thread(data_dir, collected.on_delivery, (TOPIC_WINDOW_PREFIX,))
    subscriber.start()
    try:
        control = WindowControl(
            request=request,
            action=action,
            windows=windows,
            directory=None if directory is None else str(directory),
            script=script,
        )
        with connect_sync_client(data_dir) as client:
            reply = client.request(
                ControlWindows(control=control), timeout=max(0.1, deadline - time.monotonic())
            )
        if isinstance(reply, Failed):
            raise InspectionError(f"the main process refused: {reply.message}")
        data = reply.data if isinstance(reply, Ok) else None
        running = _refs(data)
        host = (data or {}).get("host")
        tray = _tray(data)
        expected = sorted(
            {ref for ref in running if not windows or ref in windows},
            key=lambda ref: (ref.host, ref.window),
        )
        with collected.changed:
            collected.changed.wait_for(
                lambda: all(_answered(collected.states.get(r), request) for r in expected),
                max(0.0, deadline - time.monotonic()),
            )
            states = dict(collected.states)
    finally:
        subscriber.stop()
    answers = []
    for ref in expected:
        state = states.get(ref)
        answers.append(
            WindowAnswer(
                ref=ref,
                ready=bool(state and state.ready),
                title=state.title if state else None,
                answered=_answered(state, request),
                view=state.view if state else None,
            )
        )
    return WindowsReport(host if isinstance(host, int) else None, tray, answers)
