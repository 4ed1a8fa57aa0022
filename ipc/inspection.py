"""Asking every open window something and collecting the answers: the asker's side.

Owns ``ask_windows`` (and ``inspect_windows``, which also returns the renderer host's pid
and its tray as an ``ipc.messages.WindowsReport``), what ``log-monitor windows`` and
``log-monitor screenshot`` (and the tests) use. It is a viewer of the main process, like
``log-monitor status``: it lives in ``ipc`` so the CLI asks without importing the
renderer. The exchange, all over ``ipc``:

1. subscribe to ``window.`` (the Last Value Cache hands over every window's latest
   ``WindowState`` at once, and later ones as they come);
2. send ``ControlWindows(WindowControl(request, action, ...))``; the main process
   publishes the ``WindowControl`` on the ``control`` topic and replies
   ``WindowsInventory``: the renderer host's pid, the windows it knows are open
   (``WindowRef``: host pid, window number) and what the host last reported of its tray
   icon (``TrayState``);
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
from pathlib import Path

from ipc.host import connect_subscriber_thread, connect_sync_client
from ipc.messages import (
    TOPIC_WINDOW_PREFIX,
    ControlWindows,
    Failed,
    WindowAction,
    WindowAnswer,
    WindowControl,
    WindowRef,
    WindowsInventory,
    WindowsReport,
    WindowState,
)
from ipc.subscriber import Delivery

DEFAULT_TIMEOUT_S = 10.0


class InspectionError(RuntimeError):
    """The main process refused or did not answer; the message is one sentence."""


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
    return list(
        inspect_windows(
            data_dir, action, directory=directory, script=script, windows=windows, timeout=timeout
        ).windows
    )


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
        if not isinstance(reply, WindowsInventory):
            raise InspectionError(
                f"the main process gave an unexpected answer ({type(reply).__name__})."
            )
        expected = sorted(
            {ref for ref in reply.windows if not windows or ref in windows},
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
    return WindowsReport(host=reply.host, tray=reply.tray, windows=tuple(answers))
