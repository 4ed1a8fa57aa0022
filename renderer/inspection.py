"""Asking every open window something and collecting the answers: the asker's side.

Owns ``ask_windows``, what ``log-monitor windows`` and ``log-monitor screenshot`` (and the
tests) use, and the shape of its answer. The exchange, all over ``ipc``:

1. subscribe to ``window.`` (the Last Value Cache hands over every window's latest
   ``WindowState`` at once, and later ones as they come);
2. send ``ControlWindows(WindowControl(request, action, ...))``; the main process
   publishes the ``WindowControl`` on the ``control`` topic and replies with the pids of
   the window processes it is running;
3. each window performs the action and reports its state again, with
   ``{"id": request, "ok": ..., "result" | "error": ...}`` under ``"control"`` in its view
   (``renderer.reporter``); wait until every pid has answered, or the deadline.

No need to wait for the subscription to take effect before asking: an answer published
before it did is the window's cached state, re-sent when the subscription arrives.

A window that does not answer in time is still listed, from its last cached state, with
``answered`` false. Why through the main process and the window's own state topic rather
than a socket per window: windows own no server sockets (principle: the main process is
the one owner), and the answer is then also the window's cached state, which any later
viewer sees.

Must not: import pywebview or Qt (the CLI stays light), or wait without a deadline.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipc.host import connect_subscriber_thread, connect_sync_client
from ipc.messages import (
    TOPIC_WINDOW_PREFIX,
    ControlWindows,
    Failed,
    Ok,
    WindowAction,
    WindowControl,
    WindowState,
)
from ipc.subscriber import Delivery

DEFAULT_TIMEOUT_S = 10.0


class InspectionError(RuntimeError):
    """The main process refused or did not answer; the message is one sentence."""


@dataclass(slots=True)
class WindowAnswer:
    """One window: its last reported state and whether it answered this request."""

    pid: int
    ready: bool
    title: str | None
    answered: bool
    view: dict[str, Any] = field(default_factory=dict)

    @property
    def control(self) -> dict[str, Any] | None:
        control = self.view.get("control")
        return control if isinstance(control, dict) else None

    @property
    def ok(self) -> bool:
        control = self.control
        return self.answered and control is not None and control.get("ok") is True

    @property
    def result(self) -> Any:
        control = self.control
        return None if control is None else control.get("result")

    @property
    def error(self) -> str | None:
        if not self.answered:
            return "the window did not answer in time"
        control = self.control
        return None if control is None or control.get("ok") else str(control.get("error"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "ready": self.ready,
            "title": self.title,
            "answered": self.answered,
            **{k: v for k, v in self.view.items() if k != "control"},
            "control": self.control,
        }


def _parse_view(text: str) -> dict[str, Any]:
    try:
        view = json.loads(text) if text else {}
    except ValueError:
        return {"unparsed": text}
    return view if isinstance(view, dict) else {"unparsed": text}


class _WindowStates:
    """The latest ``WindowState`` of each window, filled by the subscriber thread."""

    def __init__(self) -> None:
        self.states: dict[int, WindowState] = {}
        self.changed = threading.Condition()

    def on_delivery(self, delivery: Delivery) -> None:
        message = delivery.message
        if not isinstance(message, WindowState):
            return
        with self.changed:
            if message.closed:
                self.states.pop(message.pid, None)
            else:
                self.states[message.pid] = message
            self.changed.notify_all()


def _answered(state: WindowState | None, request: str) -> bool:
    if state is None:
        return False
    control = _parse_view(state.view).get("control")
    return isinstance(control, dict) and control.get("id") == request


def ask_windows(
    data_dir: Path,
    action: WindowAction,
    *,
    directory: Path | None = None,
    script: str | None = None,
    pids: tuple[int, ...] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[WindowAnswer]:
    """Ask the windows of the main process of ``data_dir`` to do ``action``; see above."""
    deadline = time.monotonic() + timeout
    request = secrets.token_hex(8)
    collected = _WindowStates()
    subscriber = connect_subscriber_thread(data_dir, collected.on_delivery, (TOPIC_WINDOW_PREFIX,))
    subscriber.start()
    try:
        control = WindowControl(
            request=request,
            action=action,
            pids=pids,
            directory=None if directory is None else str(directory),
            script=script,
        )
        with connect_sync_client(data_dir) as client:
            reply = client.request(
                ControlWindows(control=control), timeout=max(0.1, deadline - time.monotonic())
            )
        if isinstance(reply, Failed):
            raise InspectionError(f"the main process refused: {reply.message}")
        running = (reply.data or {}).get("pids", []) if isinstance(reply, Ok) else []
        expected = sorted({int(p) for p in running if not pids or int(p) in pids})
        with collected.changed:
            collected.changed.wait_for(
                lambda: all(_answered(collected.states.get(p), request) for p in expected),
                max(0.0, deadline - time.monotonic()),
            )
            states = dict(collected.states)
    finally:
        subscriber.stop()
    answers = []
    for pid in expected:
        state = states.get(pid)
        answers.append(
            WindowAnswer(
                pid=pid,
                ready=bool(state and state.ready),
                title=state.title if state else None,
                answered=_answered(state, request),
                view=_parse_view(state.view) if state else {},
            )
        )
    return answers
