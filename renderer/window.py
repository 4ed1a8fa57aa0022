"""One window of the renderer host: its pywebview window, page, bridge, js_api, diagnostics.

Owns the life of one window inside the host process (``renderer.host`` owns the GUI loop
and the set of windows):

* **open**: ``create()`` makes the pywebview window on the package's page
  (``renderer.page``) with ``PageApi`` as its ``js_api``; called before the GUI loop runs
  (the first windows) or from any thread once it runs. The moment the page has loaded
  (Qt's ``loadFinished``, which pywebview passes on as ``events.before_load`` on the GUI
  thread, before it injects its own JS), the window takes hold of its Qt page
  (``renderer.qt_shell.QtPage``) and starts its ``Bridge``, which pushes what this window's
  ``UpdateSource`` delivered (from the moment the window was asked for: the present state
  first) into the page: the page's ``window.lm`` is all a push needs, so the first status
  is painted without waiting for pywebview's ``js_api`` (the buttons wait for that).
* **a render process that dies**: the page is reloaded in place; meanwhile the bridge
  holds its pushes, and once the new page has loaded it repaints it with everything the
  old one had been given (``Bridge.resume(replay=True)``). Nothing else is touched: the
  other windows have render processes of their own.
* **diagnostics**, callable from any thread: ``describe()`` reads back what the page's
  DOM shows (``window.lm.describe()``) with what the host knows of the window (timings,
  render process, reloads, geometry, profile); ``take_screenshot(path)`` renders the
  window into a PNG on the GUI thread. ``renderer.reporter`` triggers them from ipc
  (``WindowControl``), ``renderer.demo`` from the demo feed.
* **lifecycle events** (``loaded``, ``ready``, ``reloading``, ``repainted``) go to the
  ``on_event`` callback, which the demo mode prints and the ipc mode reports to the main
  process as ``WindowState`` (``renderer.reporter``), as it does after each push
  (``on_pushed``). Closing goes to ``on_closed``, once.

Timings are milliseconds after the window was asked for (``asked_at``: the host's process
start for the windows on its command line, the request's arrival for later ones).

Must not: hold tokens or passwords, talk to sockets (the source and the sender do), or run
page scripts from the GUI thread (they wait for the GUI thread).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec
import webview

from ipc.messages import WindowGeometry
from renderer.bridge import Bridge, PageUnavailable, PushDone, PushScheduler
from renderer.commands import CommandSender, PageApi
from renderer.environment import Gui
from renderer.feed import UpdateSource
from renderer.page import page_url

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
SCREENSHOT_TRIES = 4
MIN_SIZE = (480, 360)

T = TypeVar("T")
EventSink = Callable[[str, dict[str, Any]], None]


class WindowNotReady(RuntimeError):
    """The page is not loaded yet (or is already closed)."""


def call_with_timeout(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` on a daemon thread, waited for at most ``timeout`` seconds.

    pywebview's ``run_js`` and ``evaluate_js`` wait for ever for the page; a hung page
    must not hang the caller (a diagnostics request, a test) with it.
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


class _Page(Protocol):
    """What a window needs of its page: ``renderer.qt_shell.QtPage`` on Qt."""

    @property
    def profile_label(self) -> str | None: ...

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]: ...

    def run_js(self, script: str, timeout: float) -> object: ...

    def reload(self) -> None: ...

    def loaded(self) -> None: ...

    def render_process_pid(self) -> int | None: ...

    def geometry(self, timeout: float) -> WindowGeometry | None: ...

    def bring_to_front(self) -> None: ...

    def grab(self, timeout: float) -> Any: ...

    def save(self, image: Any, path: Path) -> tuple[int, int]: ...

    def close(self) -> None: ...


class _PywebviewPage:
    """A page on pywebview's native backends (Windows, macOS): scripts through pywebview,
    no render process of its own to watch, no screenshots."""

    profile_label: str | None = None

    def __init__(self, window: Any) -> None:
        self._window = window

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]:
        def run() -> None:
            try:
                self._window.run_js(script)
            except Exception as exc:
                done(exc)
            else:
                done(None)

        return lambda: threading.Thread(target=run, name="page-script", daemon=True).start()

    def run_js(self, script: str, timeout: float) -> object:
        return call_with_timeout(lambda: self._window.run_js(script), timeout, "page script")

    def reload(self) -> None:
        pass

    def loaded(self) -> None:
        pass

    def render_process_pid(self) -> int | None:
        return None

    def geometry(self, timeout: float) -> WindowGeometry | None:
        return None

    def bring_to_front(self) -> None:
        self._window.restore()
        self._window.show()

    def grab(self, timeout: float) -> Any:
        raise NotImplementedError("screenshots need the Qt backend (Linux)")

    def save(self, image: Any, path: Path) -> tuple[int, int]:
        raise NotImplementedError("screenshots need the Qt backend (Linux)")

    def close(self) -> None:
        pass


@dataclass(slots=True)
class WindowParts:
    """What a window is made of besides Qt: its updates, its command sender, its listeners.

    ``on_window`` is called with the window once it exists (before it opens);
    ``on_closed`` once the window is gone, unless the main process is gone too.
    """

    source: UpdateSource
    sender: CommandSender
    on_event: EventSink = field(default=lambda name, fields: None)
    on_pushed: Callable[[], None] = field(default=lambda: None)
    on_window: Callable[[RendererWindow], None] = field(default=lambda window: None)
    on_closed: Callable[[], None] = field(default=lambda: None)


class RendererWindow:
    """One window of the host; see the module docstring."""

    def __init__(
        self,
        number: int,
        parts: WindowParts,
        *,
        gui: Gui | None,
        scheduler: PushScheduler,
        on_main_process_gone: Callable[[str], None],
        on_closed: Callable[[RendererWindow], None],
        title: str = "Log monitor",
        size: tuple[int, int] = (1100, 800),
        geometry: WindowGeometry | None = None,
        asked_at: float | None = None,
    ) -> None:
        self.number = number
        self.parts = parts
        self._gui = gui
        self._title = title
        self._size = size
        self._geometry = geometry
        self._asked_at = time.monotonic() if asked_at is None else asked_at
        self._on_event = parts.on_event
        self._on_closed_callback = on_closed
        self._api = PageApi(parts.sender, on_main_process_gone)
        self._bridge = Bridge(
            self, scheduler, on_status_shown=self._status_shown, on_pushed=parts.on_pushed
        )
        self._window: Any = None
        self._loop: Any = None  # renderer.qt_shell.QtLoop on Qt (attach_loop)
        self._page: _Page | None = None
        self._ready = threading.Event()
        self._page_loaded = threading.Event()  # cleared while a reload is under way
        self._closing = threading.Event()
        self._closed_once = threading.Lock()
        self._closed = False
        self._platform: str | None = None
        self._timings: dict[str, float] = {}
        self._reloads = 0
        self._reloading = False
        self._gone_at: float | None = None
        # Read from the GUI thread only after a move or resize (None: to be read again).
        self._geometry_known: WindowGeometry | None = None
        # Updates start folding in now: the present is waiting when the page has loaded.
        parts.source.attach(self._bridge.offer)

    # ---- life cycle -------------------------------------------------------------------

    def attach_loop(self, loop: Any) -> None:
        """On Qt: the host's ``QtLoop``, which shows the window once it is made."""
        self._loop = loop

    def create(self) -> None:
        """Make the pywebview window (before the GUI loop runs, or from any thread after);
        with the host's ``QtLoop``, it is shown through it."""
        width, height = (
            (self._geometry.width, self._geometry.height) if self._geometry else self._size
        )
        self._window = webview.create_window(
            self._title,
            url=page_url(),
            js_api=self._api,
            width=width,
            height=height,
            x=self._geometry.x if self._geometry else None,
            y=self._geometry.y if self._geometry else None,
            min_size=MIN_SIZE,
            text_select=True,
        )
        if self._window is None:
            raise RuntimeError("pywebview did not create the window")
        self._window.events.before_load += self._on_page_loaded
        self._window.events.closed += self._on_closed
        # A moved or resized window has a new geometry to report.
        self._window.events.moved += self._geometry_changed
        self._window.events.resized += self._geometry_changed
        self._timings["createdMs"] = self._since_asked_ms()
        if self._loop is not None:
            self._loop.show(self._window)

    def _on_page_loaded(self) -> None:
        # pywebview calls this each time the page has loaded (the first time, and after
        # each reload), on the GUI thread on Qt: it must not wait for anything.
        if self._closing.is_set():
            return
        if self._page is None:
            self._take_hold_of_the_page()
            self._timings["loadedMs"] = self._since_asked_ms()
            self._page_loaded.set()
            self._ready.set()
            self._on_event("loaded", {"window": self.number, **self._timings})
            self._bridge.start()
        elif self._reloading:
            self._reloading = False
            self._page.loaded()
            self._page_loaded.set()
            log.info("window %d: the page is back; repainting it", self.number)
            self._bridge.resume(replay=True)

    def _take_hold_of_the_page(self) -> None:
        if self._gui != "qt":
            self._page = _PywebviewPage(self._window)
            return
        from renderer.qt_capture import GuiThreadCall, platform_name
        from renderer.qt_shell import QtPage

        self._platform = platform_name()
        gui_call = GuiThreadCall()
        # On the GUI thread already (Qt's loadFinished): QtPage connects to the page here.
        self._page = gui_call.call(
            lambda: QtPage(self._window.native, gui_call, self._render_process_gone),
            DEFAULT_TIMEOUT_S,
        )

    def _geometry_changed(self) -> None:
        self._geometry_known = None
        self.parts.on_pushed()

    def _render_process_gone(self, reason: str) -> None:
        # On the GUI thread (QtPage's renderProcessTerminated).
        if self._closing.is_set() or self._page is None:
            return
        log.warning("window %d: %s; reloading the page", self.number, reason)
        self._reloads += 1
        self._gone_at = time.monotonic()
        self._reloading = True
        self._page_loaded.clear()
        self._bridge.pause()
        self._page.reload()
        self._on_event("reloading", {"window": self.number, "reason": reason})

    def _status_shown(self) -> None:
        if "firstStatusMs" not in self._timings:
            self._timings["firstStatusMs"] = self._since_asked_ms()
            self._on_event("ready", {"window": self.number, **self._timings})
        elif self._gone_at is not None:
            self._timings["repaintedMs"] = round((time.monotonic() - self._gone_at) * 1000, 1)
            self._on_event("repainted", {"window": self.number, **self._timings})

    def _on_closed(self) -> None:
        with self._closed_once:
            if self._closed:
                return
            self._closed = True
        self._closing.set()
        self._bridge.stop()
        if self._page is not None:
            self._page.close()
        self.parts.source.close()
        self._on_closed_callback(self)

    def close(self) -> None:
        """Close this window (any thread); ``on_closed`` follows once it is gone."""
        self._closing.set()
        self._bridge.stop()
        if self._window is None:
            self._on_closed()
            return
        try:
            self._window.destroy()
        except Exception:
            log.exception("closing window %d failed", self.number)
            self._on_closed()

    @property
    def closed(self) -> bool:
        return self._closed

    def bring_to_front(self) -> bool:
        """Raise this window above the others (any thread); False if it is not showing
        its page (not loaded yet, or closing)."""
        page = self._page
        if page is None or self._closing.is_set() or not self._ready.is_set():
            return False
        page.bring_to_front()
        return True

    def _since_asked_ms(self) -> float:
        return round((time.monotonic() - self._asked_at) * 1000.0, 1)

    # ---- page access (PageScripts for the bridge) -------------------------------------

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]:
        page = self._page
        if page is None or self._closing.is_set():
            raise PageUnavailable("the window is not open")
        return page.prepare_js(script, done)

    # ---- diagnostics ------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def describe(self, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """What the page's DOM shows now (``window.lm.describe()``), and under ``"window"``
        what the host knows of the window around it."""
        raw = self.evaluate("JSON.stringify(window.lm.describe())", timeout)
        if not isinstance(raw, str):
            raise RuntimeError(f"describe() returned {type(raw).__name__}, not JSON text")
        result = json.loads(raw)
        if not isinstance(result, dict):
            raise RuntimeError("describe() did not return an object")
        result["window"] = self.window_facts(timeout)
        return result

    def window_facts(self, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        page = self._require_page(timeout)
        timings = self._bridge.timings
        geometry = self._geometry_known
        if geometry is None:
            geometry = self._geometry_known = page.geometry(timeout)
        return {
            "host": os.getpid(),
            "number": self.number,
            "platform": self._platform,
            **self._timings,
            "pushes": timings.count,
            "pushMaxMs": round(timings.max_ms, 1),
            "pushMeanMs": round(timings.total_ms / timings.count, 1) if timings.count else None,
            "linesDropped": self._bridge.coalescer.counters.lines_dropped,
            "renderProcess": page.render_process_pid(),
            "reloads": self._reloads,
            "geometry": None if geometry is None else msgspec.to_builtins(geometry),
            "profile": page.profile_label,
        }

    def evaluate(self, script: str, timeout: float = DEFAULT_TIMEOUT_S) -> object:
        """Run ``script`` in the page and return its (JSON-able) value. Diagnostics only."""
        page = self._require_page(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return page.run_js(script, max(0.1, deadline - time.monotonic()))
            except PageUnavailable:
                # Reloading after its render process died: wait for the new page.
                if time.monotonic() >= deadline or self._closing.is_set():
                    raise
                self._page_loaded.wait(max(0.0, deadline - time.monotonic()))

    def take_screenshot(self, path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """Save a PNG of the window's content to ``path``; return its size."""
        page = self._require_page(timeout)
        path = Path(path)
        deadline = time.monotonic() + timeout
        # The page's newest frame reaches Qt a little after the page has painted it: grab
        # until two grabs, each after the page painted again, agree (a page that keeps
        # moving, a countdown, is taken as it is on the last try).
        image: Any = None
        for _ in range(SCREENSHOT_TRIES):
            self._wait_for_frames(max(0.1, deadline - time.monotonic()))
            previous, image = image, page.grab(max(0.1, deadline - time.monotonic()))
            if previous is not None and image == previous:
                break
        width, height = page.save(image, path)
        return {"path": str(path), "width": width, "height": height}

    def _wait_for_frames(self, timeout: float) -> None:
        """Return once the page has produced frames showing its current DOM.

        Chromium paints asynchronously: without this, a grab right after an update shows
        the frame before it (measured: 10-30 ms stale). Two animation frames after now,
        the current DOM has been painted and handed to Qt.
        """
        painted = threading.Event()
        started = time.monotonic()
        # pywebview's evaluate_js resolves the promise; it may wait for ever on a page
        # whose render process dies meanwhile, hence its own thread and deadline.
        call_with_timeout(
            lambda: self._window.evaluate_js(
                "new Promise(function (done) { requestAnimationFrame(function () {"
                " requestAnimationFrame(function () { done(true); }); }); })",
                lambda _value: painted.set(),
            ),
            timeout,
            "page paint",
        )
        if not painted.wait(max(0.0, timeout - (time.monotonic() - started))):
            raise TimeoutError("the page did not paint within the timeout")

    def _require_page(self, timeout: float) -> _Page:
        if not self._ready.wait(timeout):
            raise WindowNotReady("the page did not finish loading in time")
        if self._closing.is_set() or self._page is None:
            raise WindowNotReady("the window is closing")
        return self._page
