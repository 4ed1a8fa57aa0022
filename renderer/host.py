"""The renderer host: one process holding every window of a data dir, and its GUI loop.

Owns the Qt application (through pywebview) and the set of ``RendererWindow``s in it:

* **opening**: ``open()`` asks for one more window, from any thread, at any time: the
  windows asked for before the GUI loop runs are created when it starts (pywebview shows
  the first, then the others), later ones at once (pywebview's ``create_window`` from a
  thread of ours). ``open_requests(total)`` is the main process's ``HostControl``: it
  opens as many windows as ``total`` is ahead of the requests already handled, so a
  repeated or late-delivered count opens nothing twice.
* **one browser**: on Qt every window's page lives in one off-the-record profile
  (``renderer.qt_shell.share_one_profile``), and each page has its own render process, so
  a page that dies takes no other window with it.
* **one push scheduler** (``renderer.bridge.PushScheduler``) starts the windows' updates
  in their pages, all windows' together, in one job for the GUI thread.
* **closing**: a window the user closes is gone alone; when the last one closes,
  pywebview ends the GUI loop and ``run()`` returns ``EXIT_CLOSED``.
  ``main_process_gone(reason)`` is the hook every detector calls (a window's feed going
  silent or ending, a command channel failing, the main process's pid exiting): it
  closes every window and ``run()`` returns ``EXIT_MAIN_PROCESS_GONE``; should the GUI
  not close within ``FORCED_EXIT_AFTER_S``, the process ends anyway. A window never
  outlives its main process by more than a few seconds.

A host with no window at all (a tray icon that keeps the process alive) needs a way to
create a pywebview window without an existing one: pywebview 6.2's Qt backend hands a new
window to the GUI thread through any open window, and ends the loop when the last closes.

Must not: hold tokens or passwords, talk to sockets (the windows' parts do), or block the
GUI thread.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

import webview

from ipc.messages import WindowGeometry
from renderer.bridge import Poster, PushScheduler
from renderer.environment import Gui
from renderer.feed import MainProcessGone
from renderer.window import RendererWindow, WindowParts

log = logging.getLogger(__name__)

EXIT_CLOSED = 0
EXIT_MAIN_PROCESS_GONE = 3
FORCED_EXIT_AFTER_S = 3.0

# What a window is made of besides Qt, given its number (raises MainProcessGone when the
# main process cannot be reached).
PartsMaker = Callable[[int], WindowParts]


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
    ) -> None:
        self._make_parts = make_parts
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
        log.info("opening window %d", number)
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
        thread until the last window closes."""
        with self._lock:
            first = list(self._waiting)
            self._waiting.clear()
        if not first:
            log.info("no window to show")
            return EXIT_CLOSED
        if self._gui == "qt":
            from renderer.qt_shell import share_one_profile

            share_one_profile()
        for window in first:
            window.create()
        webview.start(self._gui_started, gui=self._gui, private_mode=True)
        with self._lock:
            left = [w for w in self._windows.values() if not w.closed]
        for window in left:
            window.close()
        self._scheduler.stop()
        return self._exit_code

    def _gui_started(self) -> None:
        # pywebview runs this on a thread of its own as the GUI loop starts: from now on
        # a window is created the moment it is asked for.
        with self._lock:
            self._gui_running = True
            waiting = list(self._waiting)
            self._waiting.clear()
        for window in waiting:
            window.create()

    # ---- closing --------------------------------------------------------------------------

    def _window_closed(self, window: RendererWindow) -> None:
        with self._lock:
            self._windows.pop(window.number, None)
            left = len(self._windows)
        log.info("window %d closed; %d left", window.number, left)
        if not self._main_gone.is_set():
            window.parts.on_closed()

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


def _gui_thread_poster() -> Poster:
    """Runs a batch of page jobs on the Qt GUI thread (made at the first push: it needs
    the application)."""
    from renderer.qt_capture import GuiThreadCall

    return GuiThreadCall().post
