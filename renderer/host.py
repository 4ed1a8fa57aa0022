"""The renderer host: one process holding every window of a data dir, and its GUI loop.

Owns the Qt application (through pywebview) and the set of ``RendererWindow``s in it:

* **opening**: ``open()`` asks for one more window, from any thread, at any time: the
  windows asked for before the GUI loop runs are created when it starts, later ones at
  once (on Qt the host's ``QtLoop`` makes each on the GUI thread; elsewhere pywebview's
  ``create_window`` from a thread of ours). ``open_requests(total)`` is the main process's ``HostControl``: it
  opens as many windows as ``total`` is ahead of the requests already handled, so a
  repeated or late-delivered count opens nothing twice.
* **one browser**: on Qt every window's page lives in one off-the-record profile
  (``renderer.qt_shell.share_one_profile``), and each page has its own render process, so
  a page that dies takes no other window with it.
* **one push scheduler** (``renderer.bridge.PushScheduler``) starts the windows' updates
  in their pages, all windows' together, in one job for the GUI thread.
* **closing**: a window the user closes is gone alone. When the last one closes, the
  host ends with ``EXIT_CLOSED`` (the exit statuses are ``ipc.host_launch``'s), unless a tray icon is shown: then it lives on with the
  tray alone, and the tray's Open window (or a click on the icon) brings a window back.
  ``main_process_gone(reason)`` is the hook every detector calls (a window's feed going
  silent or ending, a command channel failing, the main process's pid exiting): it
  closes every window and ``run()`` returns ``EXIT_MAIN_PROCESS_GONE``; should the GUI
  not close within ``FORCED_EXIT_AFTER_S``, the process ends anyway. A window never
  outlives its main process by more than a few seconds.
* **the tray** (made by ``tray_maker``: on Qt once the application exists, Qt's own; with
  pywebview's native loop before it starts, pystray's, see
  ``ipc.host_launch.tray_toolkit``): with no window open and no tray shown for
  ``TRAY_WAIT_S`` (a host started for the tray alone on a desktop without one, or a tray
  that went away), the host ends with ``EXIT_NOTHING_TO_SHOW``, which the main process
  takes as no failure. The wait lets a panel that starts after us at login come up first.

On Qt the host runs its own GUI loop (``renderer.qt_shell.QtLoop``): pywebview's
``webview.start`` ends the loop with the last window and can create a window only
through another. On the other platforms pywebview's own loop runs the windows; with a
tray, a hidden window of no content (the *anchor*) keeps that loop, and so the host,
alive while no window is open, and destroying it is how the host ends its loop. On Qt,
with either loop, reference cycles are collected on the GUI thread only
(``renderer.qt_collector``): a closed window's Qt objects must not be destroyed elsewhere.

Must not: hold tokens or passwords, talk to sockets (the windows' parts do), or block the
GUI thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import webview

from ipc.host_launch import EXIT_CLOSED, EXIT_MAIN_PROCESS_GONE, EXIT_NOTHING_TO_SHOW
from ipc.messages import WindowGeometry
from renderer.bridge import Poster, PushScheduler
from renderer.environment import Gui
from renderer.feed import MainProcessGone
from renderer.window import RendererWindow, WindowParts

if TYPE_CHECKING:
    from renderer.qt_shell import QtLoop

log = logging.getLogger(__name__)

FORCED_EXIT_AFTER_S = 3.0
TRAY_WAIT_S = 10.0
# How often the host looks whether it still has something to show (a timer, not a
# synchronisation: the tray's appearance has no event the host could wait on).
SHOWING_CHECK_S = 1.0

# What a window is made of besides Qt, given its number (raises MainProcessGone when the
# main process cannot be reached).
PartsMaker = Callable[[int], WindowParts]


class TrayControl(Protocol):
    """What the host needs of its tray icon (``renderer.tray.TrayIcon``)."""

    def showing(self) -> bool:
        """Whether the icon is in a tray now (any thread)."""
        ...

    def close(self) -> None:
        """Take the icon away (GUI thread, as the loop ends)."""
        ...


# Makes the tray: on Qt once the application exists (on the GUI thread, given the loop);
# with pywebview's native loop on the main thread before the loop starts (given None).
TrayMaker = Callable[["RendererHost", "QtLoop | None"], TrayControl]
# The anchor: what pywebview's native loop needs to keep running with no window open.
ANCHOR_HTML = "<!doctype html><title>Log monitor</title>"


class RendererHost:
    """The windows of this process and their GUI loop; see the module docstring."""

    def __init__(
        self,
        make_parts: PartsMaker,
        *,
        gui: Gui | None,
        title: str = "Log monitor",
        size: tuple[int, int] = (1100, 800),
        started_at: float | None = None,
        tray_maker: TrayMaker | None = None,
        tray_wait_s: float = TRAY_WAIT_S,
    ) -> None:
        self._make_parts = make_parts
        self._tray_maker = tray_maker
        self._tray: TrayControl | None = None
        self._tray_wait_s = tray_wait_s
        self._loop: QtLoop | None = None
        self._anchor: webview.Window | None = None
        self._collector: object | None = None  # pywebview's Qt loop: see _gui_started
        self._collector_post: Poster | None = None
        self._gui = gui
        self._title = title
        self._size = size
        self._started_at = time.monotonic() if started_at is None else started_at
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._windows: dict[int, RendererWindow] = {}
        self._waiting: list[RendererWindow] = []  # asked for before the GUI loop runs
        self._gui_running = False
        self._handled_requests = 0
        self._main_gone = threading.Event()
        self._exit_code = EXIT_CLOSED
        self._scheduler = PushScheduler(_gui_thread_poster if gui == "qt" else None)

    # ---- opening ------------------------------------------------------------------------

    def open(
        self, geometry: WindowGeometry | None = None, asked_at: float | None = None
    ) -> RendererWindow | None:
        """Open one more window (any thread); None once the main process is gone."""
        if self._main_gone.is_set():
            return None
        number = next(self._numbers)
        try:
            parts = self._make_parts(number)
        except MainProcessGone as exc:
            self.main_process_gone(str(exc))
            return None
        window = RendererWindow(
            number,
            parts,
            gui=self._gui,
            scheduler=self._scheduler,
            on_main_process_gone=self.main_process_gone,
            on_closed=self._window_closed,
            title=self._title,
            size=self._size,
            geometry=geometry,
            asked_at=self._started_at if asked_at is None else asked_at,
        )
        parts.on_window(window)
        with self._lock:
            self._windows[number] = window
            if not self._gui_running:
                self._waiting.append(window)
                return window
            loop = self._loop
        log.info("opening window %d", number)
        if loop is not None:
            window.attach_loop(loop)
        window.create()
        return window

    def open_requests(self, total: int) -> None:
        """The main process has asked for ``total`` windows beyond the first ones."""
        asked_at = time.monotonic()
        with self._lock:
            more = max(0, total - self._handled_requests)
            self._handled_requests = max(total, self._handled_requests)
        for _ in range(more):
            self.open(asked_at=asked_at)

    # ---- the GUI loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Show the windows asked for so far and run the GUI loop on this (the main)
        thread until there is nothing left to show (see the module docstring)."""
        if self._gui == "qt":
            return self._run_qt()
        with self._lock:
            first = list(self._waiting)
            self._waiting.clear()
        if self._tray_maker is not None:
            try:
                self._tray = self._tray_maker(self, None)
            except Exception:
                # pystray missing or failing: the windows go on as before there was a tray.
                log.exception("the tray icon could not be made; going on without it")
        if not first and self._tray is None:
            log.info("no window to show")
            return EXIT_CLOSED if self._tray_maker is None else EXIT_NOTHING_TO_SHOW
        for window in first:
            window.create()
        if self._tray is not None:
            self._anchor = webview.create_window(
                self._title, html=ANCHOR_HTML, hidden=True, width=200, height=100
            )
            threading.Thread(target=self._watch_showing, name="showing", daemon=True).start()
        webview.start(self._gui_started, gui=self._gui, private_mode=True)
        if self._tray is not None:
            self._tray.close()
        return self._after_loop()

    def _run_qt(self) -> int:
        from renderer.qt_shell import QtLoop, share_one_profile

        with self._lock:
            nothing = not self._waiting
        if nothing and self._tray_maker is None:
            log.info("no window to show")
            return EXIT_CLOSED
        share_one_profile()
        loop = QtLoop()
        with self._lock:
            self._loop = loop
            self._gui_running = True
            first = list(self._waiting)
            self._waiting.clear()
        for window in first:
            window.attach_loop(loop)
            window.create()
        if self._tray_maker is not None:
            self._tray = self._tray_maker(self, loop)
            threading.Thread(target=self._watch_showing, name="showing", daemon=True).start()
        if self._main_gone.is_set():
            loop.exit(self._exit_code)
        code = loop.run()
        if self._tray is not None:
            self._tray.close()
        self._after_loop()
        return code

    def _after_loop(self) -> int:
        with self._lock:
            left = [w for w in self._windows.values() if not w.closed]
        for window in left:
            window.close()
        self._scheduler.stop()
        return self._exit_code

    def _gui_started(self) -> None:
        # pywebview runs this on a thread of its own as the GUI loop starts: from now on
        # a window is created the moment it is asked for.
        if self._anchor is not None:
            _keep_qt_after_the_last_shown_window()
        if "qtpy.QtWidgets" in sys.modules:
            # pywebview's loop is its Qt backend (Linux, ``LOG_MONITOR_GUI=native``): cycles
            # holding a closed window's Qt objects are collected on the GUI thread only.
            post = _gui_thread_poster()
            self._collector_post = post  # the poster lives until its job has run
            post(self._collect_on_the_gui_thread)
        with self._lock:
            self._gui_running = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for window in waiting:
            window.create()

    def _collect_on_the_gui_thread(self) -> None:
        from renderer.qt_collector import GuiThreadCollector

        self._collector = GuiThreadCollector()

    def _watch_showing(self) -> None:
        """End the host once it has had no window and no tray for ``tray_wait_s``."""
        tray = self._tray
        assert tray is not None
        since: float | None = None
        while not self._main_gone.wait(SHOWING_CHECK_S):
            with self._lock:
                windows = len(self._windows)
            if windows or tray.showing():
                since = None
                continue
            now = time.monotonic()
            if since is None:
                since = now
            elif now - since >= self._tray_wait_s:
                log.info("no window and no tray for %g s: nothing to show", self._tray_wait_s)
                self._exit(EXIT_NOTHING_TO_SHOW)
                return

    def _exit(self, code: int) -> None:
        if code != EXIT_CLOSED or self._exit_code == EXIT_CLOSED:
            self._exit_code = code
        loop = self._loop
        if loop is not None:
            loop.exit(self._exit_code)
            return
        anchor, self._anchor = self._anchor, None
        if anchor is not None:
            # pywebview's native loop ends with its last window: the anchor, once the
            # host's windows are gone.
            try:
                anchor.destroy()
            except Exception:
                log.exception("closing the anchor window failed")

    def open_or_raise(self, ask_for_window: Callable[[], None]) -> None:
        """Bring the first open window to the front, or, with none open, ask for one
        (``ask_for_window``: the main process decides, and counts it)."""
        for window in self.windows():
            if window.bring_to_front():
                log.info("raised window %d", window.number)
                return
        log.info("no window open: asking for one")
        ask_for_window()

    # ---- closing --------------------------------------------------------------------------

    def _window_closed(self, window: RendererWindow) -> None:
        with self._lock:
            self._windows.pop(window.number, None)
            left = len(self._windows)
        log.info("window %d closed; %d left", window.number, left)
        if not self._main_gone.is_set():
            window.parts.on_closed()
        if left or (self._loop is None and self._anchor is None):
            return  # (pywebview's own loop ends by itself with its last window)
        if self._main_gone.is_set():
            self._exit(EXIT_MAIN_PROCESS_GONE)
        elif self._tray is not None and self._tray.showing():
            log.info("the last window closed; the tray stays")
        else:
            self._exit(EXIT_CLOSED)

    def main_process_gone(self, reason: str) -> None:
        """Close every window because the main process is gone. Idempotent, any thread."""
        if self._main_gone.is_set():
            return
        self._main_gone.set()
        self._exit_code = EXIT_MAIN_PROCESS_GONE
        log.warning("the main process is gone (%s); closing every window", reason)
        threading.Thread(target=self._force_exit_later, name="forced-exit", daemon=True).start()
        with self._lock:
            windows = list(self._windows.values())
        for window in windows:
            window.parts.on_event("closing", {"window": window.number, "reason": reason})
            window.close()
        if not windows:
            self._exit(EXIT_MAIN_PROCESS_GONE)  # a tray alone: nothing closes to end the loop

    @property
    def main_gone(self) -> bool:
        return self._main_gone.is_set()

    def _force_exit_later(self) -> None:
        time.sleep(FORCED_EXIT_AFTER_S)  # a grace period, not synchronisation
        log.error("the windows did not close within %g s; exiting", FORCED_EXIT_AFTER_S)
        os._exit(EXIT_MAIN_PROCESS_GONE)

    # ---- the windows ----------------------------------------------------------------------

    def windows(self) -> list[RendererWindow]:
        with self._lock:
            return [self._windows[n] for n in sorted(self._windows)]

    def window(self, number: int) -> RendererWindow | None:
        with self._lock:
            return self._windows.get(number)


def _keep_qt_after_the_last_shown_window() -> None:
    """Where pywebview's own loop is its Qt backend (Linux with ``LOG_MONITOR_GUI=native``),
    Qt quits with the last window *shown*, which the hidden anchor is not; pywebview's
    backends themselves (Qt's, WinForms', which ends only when told) end their loop only
    once no window of theirs is left, anchor included, which is what the anchor needs."""
    widgets = sys.modules.get("qtpy.QtWidgets")
    if widgets is None:
        return
    application = widgets.QApplication.instance()
    if application is not None:
        application.setQuitOnLastWindowClosed(False)


def _gui_thread_poster() -> Poster:
    """Runs a batch of page jobs on the Qt GUI thread (made at the first push: it needs
    the application)."""
    from renderer.qt_capture import GuiThreadCall

    return GuiThreadCall().post
