"""Telling the main process what a window is and shows, and answering diagnostics.

Owns ``WindowReporter``, one daemon thread per window that sends
``ReportWindow(WindowState(host, window, ready, view, title))`` to the main process, which
re-publishes it on the window's own state topic ``window.<host>.<window>`` (cached, so a
late ``log-monitor windows`` sees every window at once). It reports:

* on the window's lifecycle events: ``loaded`` (ready=False), ``ready`` (the first
  status is painted), ``reloading`` and ``repainted`` (its render process died and the
  page was reloaded), and ``closed=True`` once the window is gone;
* whenever what the page shows has changed: after a bridge push it reads the page back
  (``describe()``) at most ``max_rate_hz`` times a second, once pushes have paused for
  ``QUIET_S`` (or ``MAX_DELAY_S`` after the first unreported one, under a steady flow):
  a readback is work for the GUI thread and the page, and a status change reaching
  every window at once should not wait behind it. It sends only if the summary differs
  from the last one sent (the retry countdown, which ticks every 100 ms, is carried but
  does not count as a change);
* in answer to a ``WindowControl`` request: ``report`` (a fresh readback), ``screenshot``
  (a PNG named ``window-<pid>.png`` in the requested directory) or ``evaluate`` (a test
  hook: runs a script in the page, only when ``LOG_MONITOR_WINDOW_TEST_HOOKS=1`` was in
  the host's environment). The outcome goes into the view as ``control``, so the
  asker, which waits on the window's topic, learns it from the same message.

``view`` is an ``ipc.messages.WindowView`` (``summarize()``): what the page's DOM shows
(state, attempt, identity, server, client id, counters, recent state changes with their
times), the window's timings, the Qt platform plugin it runs on (``xcb``, ``wayland``,
``offscreen``; None off Linux), its render process, reloads, geometry and profile, and
the last control answered.

Must not: run on the GUI thread, or send anything secret (a page readback holds none:
the password field is reported only as empty or not).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from ipc.messages import (
    Command,
    ControlOutcome,
    Reply,
    ReportWindow,
    WindowControl,
    WindowState,
    WindowView,
)

log = logging.getLogger(__name__)

TEST_HOOKS_ENV = "LOG_MONITOR_WINDOW_TEST_HOOKS"
MAX_REPORTS_PER_SECOND = 2.0
QUIET_S = 0.04
MAX_DELAY_S = 1.0
REPORT_TIMEOUT_S = 2.0
CLOSING_REPORT_TIMEOUT_S = 1.0
CONTROL_TIMEOUT_S = 10.0
MAX_RESULT_CHARS = 2000
# The page's readback fields a view carries (its wire names); the rest of what
# ``window.lm.describe()`` returns (formatted texts for tests) stays out.
_PAGE_FIELDS = frozenset(
    {
        "hasStatus",
        "apiReady",
        "state",
        "stateText",
        "stateChangedAt",
        "stateChanges",
        "retryShown",
        "attempt",
        "countdownMs",
        "countdownText",
        "identity",
        "identityText",
        "server",
        "clientId",
        "windows",
        "counters",
        "lastError",
        "spoolFull",
        "signInShown",
        "signOutShown",
        "passwordFieldEmpty",
        "actionResult",
        "paused",
        "lines",
        "lastLineText",
        "events",
        "chart",
    }
)
_TIMINGS = ("createdMs", "loadedMs", "firstStatusMs", "repaintedMs")


class InspectableWindow(Protocol):
    """What the reporter needs of ``renderer.window.RendererWindow``."""

    def wait_ready(self, timeout: float) -> bool: ...

    def describe(self, timeout: float = ...) -> dict[str, Any]: ...

    def evaluate(self, script: str, timeout: float = ...) -> object: ...

    def take_screenshot(self, path: Path, timeout: float = ...) -> dict[str, Any]: ...


class Sender(Protocol):
    def send(self, command: Command, timeout: float) -> Reply: ...


def summarize(described: dict[str, Any]) -> WindowView:
    """The ``WindowView`` of a ``describe()`` readback (raises ``msgspec.ValidationError``
    when the page returned something of the wrong shape)."""
    fields: dict[str, Any] = {k: v for k, v in described.items() if k in _PAGE_FIELDS}
    window = described.get("window")
    if isinstance(window, dict):
        fields["timings"] = {name: window.get(name) for name in _TIMINGS}
        for name in ("linesDropped", "platform", "renderProcess", "reloads", "geometry"):
            fields[name] = window.get(name)
        fields["profile"] = window.get("profile")
        fields = {k: v for k, v in fields.items() if v is not None or k in _PAGE_FIELDS}
    return msgspec.convert(fields, WindowView)


def _shown(view: WindowView) -> WindowView:
    """``view`` without what changes while nothing new is shown (the retry countdown,
    which ticks every 100 ms, and the control answered last)."""
    return msgspec.structs.replace(view, countdown_ms=None, countdown_text="", control=None)


def _short(value: object) -> object:
    """``value`` if its JSON is short, else its JSON cut to ``MAX_RESULT_CHARS``."""
    text = json.dumps(value, default=str)
    return value if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "…"


def window_test_hooks_enabled(environ: dict[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(TEST_HOOKS_ENV) == "1"


class WindowReporter:
    """The reporting thread of one window; see the module docstring."""

    def __init__(
        self,
        sender: Sender,
        *,
        window: int,
        title: str | None,
        host: int | None = None,
        max_rate_hz: float = MAX_REPORTS_PER_SECOND,
        hooks_enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._title = title
        self._interval = 1.0 / max_rate_hz
        self._hooks = window_test_hooks_enabled() if hooks_enabled is None else hooks_enabled
        self._clock = clock
        self._host = os.getpid() if host is None else host
        self._number = window
        self._window: InspectableWindow | None = None
        self._wake = threading.Condition()
        self._controls: deque[WindowControl] = deque(maxlen=32)
        self._changed = False
        self._changed_first = 0.0  # clock() of the first change not yet read back
        self._changed_last = 0.0  # and of the latest
        self._ready = False
        self._loaded = False
        self._stopping = False
        self._last_sent: tuple[bool, WindowView] | None = None
        self._last_view: WindowView | None = None
        self._last_control: ControlOutcome | None = None
        self._next_allowed = 0.0
        self._thread = threading.Thread(target=self._run, name="window-reporter", daemon=True)

    def attach(self, window: InspectableWindow) -> None:
        self._window = window
        self._thread.start()

    # ---- called from other threads ------------------------------------------------------

    def on_event(self, name: str, fields: dict[str, Any]) -> None:
        """The window's lifecycle events (``RendererWindow``'s ``on_event``)."""
        with self._wake:
            if name == "loaded":
                self._loaded = True
                self._changed = True
                self._next_allowed = 0.0  # report now, not after the throttle
            elif name == "ready":
                self._ready = True
                self._changed = True
                self._next_allowed = 0.0
            elif name in ("reloading", "repainted"):
                self._changed = True
                self._next_allowed = 0.0
            elif name == "closing":
                self._stopping = True
            self._wake.notify()

    def page_changed(self) -> None:
        """Something was pushed into the page (the bridge's ``on_pushed``)."""
        with self._wake:
            now = self._clock()
            if not self._changed:
                self._changed_first = now
            self._changed_last = now
            self._changed = True
            self._wake.notify()

    def control(self, request: WindowControl) -> None:
        """A ``WindowControl`` meant for this window (from the host's ipc thread)."""
        with self._wake:
            self._controls.append(request)
            self._wake.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def report_closed(self) -> None:
        """The last word: this window is gone. Best effort, bounded wait."""
        state = WindowState(
            host=self._host,
            window=self._number,
            ready=False,
            view=self._last_view,
            title=self._title,
            closed=True,
        )
        try:
            self._sender.send(ReportWindow(state=state), CLOSING_REPORT_TIMEOUT_S)
        except Exception as exc:  # the main process may be gone; nothing more to do
            log.info("could not report the window closed: %s", exc)

    # ---- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._due():
                    self._wake.wait(self._wait_time())
                if self._stopping:
                    return
                control = self._controls.popleft() if self._controls else None
                if control is None:
                    self._changed = False
                    self._next_allowed = self._clock() + self._interval
            try:
                if control is not None:
                    self._answer(control)
                else:
                    self._report(force=False)
            except Exception:
                log.exception("reporting the window's state failed")

    def _due(self) -> bool:
        if self._controls:
            return True
        return self._loaded and self._changed and self._clock() >= self._due_at()

    def _due_at(self) -> float:
        settled = min(self._changed_last + QUIET_S, self._changed_first + MAX_DELAY_S)
        return max(self._next_allowed, settled)

    def _wait_time(self) -> float | None:
        if self._changed and self._loaded:
            return max(0.0, self._due_at() - self._clock())
        return None

    def _report(self, *, force: bool) -> None:
        window = self._window
        if window is None:
            return
        try:
            view = summarize(window.describe(timeout=REPORT_TIMEOUT_S))
        except Exception as exc:
            log.info("reading the page back failed: %s", exc)
            return
        view = msgspec.structs.replace(view, control=self._last_control)
        if not force and self._last_sent == (self._ready, _shown(view)):
            return
        self._send(view)

    def _send(self, view: WindowView) -> None:
        self._last_view = view
        self._last_sent = (self._ready, _shown(view))
        state = WindowState(
            host=self._host,
            window=self._number,
            ready=self._ready,
            view=view,
            title=self._title,
        )
        try:
            self._sender.send(ReportWindow(state=state), REPORT_TIMEOUT_S)
        except Exception as exc:
            log.info("could not report the window's state: %s", exc)

    def _answer(self, control: WindowControl) -> None:
        try:
            result = _short(self._perform(control))
        except Exception as exc:
            self._last_control = ControlOutcome(
                id=control.request,
                action=control.action,
                ok=False,
                error=f"{type(exc).__name__}: {exc}",
            )
        else:
            self._last_control = ControlOutcome(
                id=control.request, action=control.action, ok=True, result=result
            )
        self._report(force=True)

    def _perform(self, control: WindowControl) -> object:
        window = self._window
        if window is None or not window.wait_ready(CONTROL_TIMEOUT_S):
            raise RuntimeError("the window is not ready")
        if control.action == "report":
            return None
        if control.action == "screenshot":
            if not control.directory:
                raise ValueError("a screenshot needs a directory")
            path = Path(control.directory) / f"window-{self._host}-{self._number}.png"
            return window.take_screenshot(path, timeout=CONTROL_TIMEOUT_S)
        if control.action == "evaluate":
            if not self._hooks:
                raise PermissionError(f"test hooks are off (set {TEST_HOOKS_ENV}=1)")
            return window.evaluate(control.script or "null", timeout=CONTROL_TIMEOUT_S)
        raise ValueError(f"unknown action {control.action!r}")
