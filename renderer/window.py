"""One renderer window: the pywebview window, its bridge, its js_api and its diagnostics.

Owns the life of the single window this process shows:

* **start**: build the page (``renderer.page``), create the pywebview window with
  ``PageApi`` as its ``js_api``, start pywebview's GUI loop on the main thread; once the
  page and pywebview's own JS are loaded, start the ``Bridge`` that pushes updates in.
* **diagnostics**, callable from any thread: ``describe()`` reads back what the page's
  DOM shows (``window.lm.describe()``), ``take_screenshot(path)`` renders the window into a
  PNG on the GUI thread. ``renderer.reporter`` triggers them from ipc (``WindowControl``),
  ``renderer.demo`` from the demo feed.
* **main process gone**: ``main_process_gone(reason)`` is the single hook every detector
  calls (the feed raising ``MainProcessGone``, the command sender failing the same way,
  ``ProcessWatch`` seeing the pid exit). It closes the window and, should the GUI not
  manage to close within ``FORCED_EXIT_AFTER_S``, ends the process: a window never
  outlives its main process by more than a few seconds.
* **lifecycle events** (``loaded``, ``ready``, ``closing``) go to the ``on_event``
  callback, which the demo mode prints and the ipc mode reports to the main process as
  ``WindowState`` (``renderer.reporter``), as it does after each push (``on_pushed``).

Exit codes of ``run()``: ``EXIT_CLOSED`` (the user closed the window),
``EXIT_MAIN_PROCESS_GONE``.

Must not: hold tokens or passwords, talk to sockets (the feed and the sender do), or run
page scripts from the GUI thread (``run_js`` blocks until the GUI thread answers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import webview

from renderer.bridge import Bridge
from renderer.commands import CommandSender, PageApi
from renderer.environment import Gui
from renderer.feed import UpdateFeed
from renderer.page import build_page

log = logging.getLogger(__name__)

EXIT_CLOSED = 0
EXIT_MAIN_PROCESS_GONE = 3
FORCED_EXIT_AFTER_S = 3.0
DEFAULT_TIMEOUT_S = 10.0

T = TypeVar("T")
EventSink = Callable[[str, dict[str, Any]], None]


class WindowNotReady(RuntimeError):
    """The page is not loaded yet (or is already closed)."""


def _call_with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` on a daemon thread, waited for at most ``timeout`` seconds.

    pywebview's ``run_js`` waits forever for the GUI thread; a hung page must not hang the
    caller (a diagnostics request, a test) with it.
    """
    box: list[T] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=what, daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(f"{what} did not finish within {timeout:g} s")
    if errors:
        raise errors[0]
    return box[0]


class RendererWindow:
    """The one window of this process; see the module docstring."""

    def __init__(
        self,
        feed: UpdateFeed,
        sender: CommandSender,
        *,
        gui: Gui | None,
        title: str = "Log monitor",
        size: tuple[int, int] = (1100, 800),
        started_at: float | None = None,
        on_event: EventSink = lambda name, fields: None,
        on_pushed: Callable[[], None] = lambda: None,
    ) -> None:
        self._feed = feed
        self._gui = gui
        self._title = title
        self._size = size
        self._started_at = time.monotonic() if started_at is None else started_at
        self._on_event = on_event
        self._api = PageApi(sender, self.main_process_gone)
        self._bridge = Bridge(
            feed,
            self,
            self.main_process_gone,
            on_first_status=self._first_status_shown,
            on_pushed=on_pushed,
        )
        self._window: Any = None
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._exit_code = EXIT_CLOSED
        self._gui_call: Any = None  # renderer.qt_capture.GuiThreadCall on the Qt backend
        self._platform: str | None = None  # Qt's platform plugin, on the Qt backend
        self._timings: dict[str, float] = {}

    # ---- life cycle -------------------------------------------------------------------

    def run(self) -> int:
        """Show the window and run the GUI loop on this (the main) thread until it closes."""
        width, height = self._size
        self._window = webview.create_window(
            self._title,
            html=build_page(),
            js_api=self._api,
            width=width,
            height=height,
            min_size=(480, 360),
            text_select=True,
        )
        self._window.events.closed += self._on_closed
        self._timings["createdMs"] = self._since_start_ms()
        webview.start(self._after_gui_started, gui=self._gui, private_mode=True)
        self._bridge.stop()
        self._feed.close()
        return self._exit_code

    def _after_gui_started(self) -> None:
        # pywebview runs this on a worker thread once the GUI loop is up.
        self._window.events.loaded.wait()
        if self._closing.is_set():
            return
        self._timings["loadedMs"] = self._since_start_ms()
        if self._gui == "qt":
            from renderer.qt_capture import GuiThreadCall, platform_name

            self._gui_call = GuiThreadCall()
            self._platform = platform_name()
        self._ready.set()
        self._on_event("loaded", {"pid": os.getpid(), **self._timings})
        self._bridge.start()

    def _first_status_shown(self) -> None:
        self._timings["firstStatusMs"] = self._since_start_ms()
        self._on_event("ready", {"pid": os.getpid(), **self._timings})

    def _on_closed(self) -> None:
        self._closing.set()
        self._bridge.stop()

    def _since_start_ms(self) -> float:
        return round((time.monotonic() - self._started_at) * 1000.0, 1)

    # ---- the hook every "main process gone" detector calls ----------------------------

    def main_process_gone(self, reason: str) -> None:
        """Close this window because its main process is gone. Idempotent, any thread."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._exit_code = EXIT_MAIN_PROCESS_GONE
        log.warning("the main process is gone (%s); closing the window", reason)
        self._on_event("closing", {"reason": reason})
        self._bridge.stop()
        threading.Thread(target=self._force_exit_later, name="forced-exit", daemon=True).start()
        if self._window is not None:
            try:
                self._window.destroy()
            except Exception:
                log.exception("closing the window failed")

    def _force_exit_later(self) -> None:
        time.sleep(FORCED_EXIT_AFTER_S)  # a grace period, not synchronisation
        log.error("the window did not close within %g s; exiting", FORCED_EXIT_AFTER_S)
        os._exit(EXIT_MAIN_PROCESS_GONE)

    # ---- page access (PageScripts for the bridge) -------------------------------------

    def run_js(self, script: str) -> object:
        if self._closing.is_set():
            return None
        return self._window.run_js(script)

    # ---- diagnostics ------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def describe(self, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """What the page's DOM shows now, as ``window.lm.describe()`` reads it back."""
        raw = self.evaluate("JSON.stringify(window.lm.describe())", timeout)
        if not isinstance(raw, str):
            raise RuntimeError(f"describe() returned {type(raw).__name__}, not JSON text")
        result = json.loads(raw)
        if not isinstance(result, dict):
            raise RuntimeError("describe() did not return an object")
        timings = self._bridge.timings
        result["window"] = {
            "pid": os.getpid(),
            "platform": self._platform,
            **self._timings,
            "pushes": timings.count,
            "pushMaxMs": round(timings.max_ms, 1),
            "pushMeanMs": round(timings.total_ms / timings.count, 1) if timings.count else None,
            "linesDropped": self._bridge.coalescer.counters.lines_dropped,
        }
        return result

    def evaluate(self, script: str, timeout: float = DEFAULT_TIMEOUT_S) -> object:
        """Run ``script`` in the page and return its (JSON-able) value. Diagnostics only."""
        self._require_ready(timeout)
        return _call_with_timeout(lambda: self._window.run_js(script), timeout, "page script")

    def take_screenshot(self, path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """Save a PNG of the window's content to ``path``; return its size."""
        self._require_ready(timeout)
        if self._gui_call is None:
            raise NotImplementedError("screenshots need the Qt backend (Linux)")
        from renderer.qt_capture import grab_png

        path = Path(path)
        self._wait_for_frames(timeout)
        widget = self._window.native
        width, height = self._gui_call.call(lambda: grab_png(widget, path), timeout)
        return {"path": str(path), "width": width, "height": height}

    def _wait_for_frames(self, timeout: float) -> None:
        """Return once the page has produced frames showing its current DOM.

        Chromium paints asynchronously: without this, a grab right after an update shows
        the frame before it (measured: 10-30 ms stale). Two animation frames after now,
        the current DOM has been painted and handed to Qt.
        """
        painted = threading.Event()
        self._window.evaluate_js(
            "new Promise(function (done) { requestAnimationFrame(function () {"
            " requestAnimationFrame(function () { done(true); }); }); })",
            lambda _value: painted.set(),
        )
        if not painted.wait(timeout):
            raise TimeoutError("the page did not paint within the timeout")

    def _require_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            raise WindowNotReady("the page did not finish loading in time")
        if self._closing.is_set():
            raise WindowNotReady("the window is closing")
