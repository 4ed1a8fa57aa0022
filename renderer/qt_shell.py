"""The Qt side of the renderer host: one browser profile for every window, pages driven
from any thread, and render processes that die.

This is the one place that adapts pywebview's Qt backend (``webview/platforms/qt.py``),
and it does so without forking it:

* **One profile.** pywebview 6.2's ``BrowserView.__init__`` builds a ``QWebEngineProfile``
  for every window (``QWebEngineProfile()`` in private mode, else one named "pywebview"
  on one storage path: several such profiles on one path can corrupt it, QTBUG-66068,
  pywebview issue 1457). ``share_one_profile()`` points the backend module's
  ``QWebEngineProfile`` name at a function that returns a single off-the-record profile,
  created on first use, so every window's page lives in it. That profile ignores the
  ``setUrlRequestInterceptor`` call pywebview makes for each window (each would replace
  the previous window's, and a closed window's interceptor would stay installed) and has
  ours instead: a page may load the package's own files and nothing else
  (``renderer.page.is_page_resource``). ``SharedProfile.label`` names it, and each window
  reports the label of the profile its page really uses, so a pywebview release that
  builds its profile differently shows at once (tests compare the labels). The versions
  this was written against are pinned in ``pyproject.toml``; ``share_one_profile`` refuses
  a backend module without the two names it relies on.
* **Pages from any thread.** ``QtPage.prepare_js`` gives the push scheduler a job that
  starts a script through Qt's ``runJavaScript`` on the GUI thread and says when it has
  run; ``run_js`` (diagnostics) does the same and waits, with a deadline. Both fail at
  once, with ``PageUnavailable``, while the page has no render process, and a script in
  flight when it dies fails too. pywebview's own ``run_js`` waits for ever when the render
  process dies with a script in flight (measured with pywebview 6.2.1), which would stall
  a window for good.
* **Render processes that die.** ``QWebEnginePage.renderProcessTerminated`` (the render
  process crashed, was killed, or ran out of memory) fails every script in flight and
  calls ``on_render_process_gone``; the window then reloads the page in place
  (``reload``), in the same profile, and the other windows, each with a render process of
  its own, do not notice.
* **Closing from the page.** ``window.close()`` in a page closes its window as a person
  would (Qt's ``windowCloseRequested``, which pywebview does not handle).
* **The host's own loop.** ``webview.start`` cannot serve a host that lives without a
  window (a tray icon): pywebview 6.2's Qt backend creates every window after the first
  through an existing one (``BrowserView.instances``) and calls ``_app.exit()`` when its
  last window closes. ``QtLoop`` runs the Qt application itself instead: it creates each
  pywebview window on the GUI thread the way the backend's own ``create_window`` does
  (``Window._initialize`` with the backend, then ``BrowserView``, shown), so a window
  can be made with none open; and it points the backend's ``_app`` at a stand-in whose
  ``exit()`` tells the host the last window closed rather than ending the loop. The
  host ends the loop (``QtLoop.exit``) when it has nothing left to show. pywebview's
  ``webview.guilib`` stays unset, so ``webview.create_window`` only builds the window
  object, from any thread, and never reaches for an existing window. The loop also owns
  the process's cyclic garbage collection (``renderer.qt_collector``): Qt objects in a
  cycle must be destroyed on the GUI thread.

Imported only on the Qt backend (Linux), after ``renderer.environment.prepare``.

Must not: hold a secret, or call Qt from a thread other than the GUI thread except
through ``GuiThreadCall``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication
from PySide6.QtGui import QIcon, QImage
from PySide6.QtWebEngineCore import (
    QWebEnginePage,
    QWebEngineProfile,
    QWebEngineUrlRequestInfo,
    QWebEngineUrlRequestInterceptor,
)
from PySide6.QtWidgets import QApplication

from ipc.messages import WindowGeometry
from renderer.bridge import PageUnavailable, PushDone
from renderer.page import is_page_resource, static_dir
from renderer.qt_capture import GuiThreadCall, grab_image, save_png
from renderer.qt_collector import GuiThreadCollector

log = logging.getLogger(__name__)

_labels = itertools.count(1)


class PageResourceFilter(QWebEngineUrlRequestInterceptor):
    """Blocks every request that is not one of the page's own files."""

    def __init__(self, parent: QWebEngineProfile) -> None:
        super().__init__(parent)
        self.blocked = 0

    def interceptRequest(self, info: QWebEngineUrlRequestInfo) -> None:
        url = info.requestUrl().toString()
        if not is_page_resource(url):
            self.blocked += 1
            log.warning("a page asked for %s; refused", url[:200])
            info.block(True)


class SharedProfile(QWebEngineProfile):
    """The one off-the-record profile of every window in this process."""

    def __init__(self) -> None:
        app = QCoreApplication.instance()
        if app is None:
            raise RuntimeError("the Qt application does not exist yet")
        super().__init__(app)  # no storage name: off the record, nothing on disk
        self.label = f"{'off-the-record' if self.isOffTheRecord() else 'on-disk'}:{next(_labels)}"
        self.resource_filter = PageResourceFilter(self)
        QWebEngineProfile.setUrlRequestInterceptor(self, self.resource_filter)

    def setUrlRequestInterceptor(self, interceptor: QWebEngineUrlRequestInterceptor | None) -> None:
        """pywebview's per-window call; the profile keeps its own filter (see the module)."""


def profile_label(profile: QWebEngineProfile) -> str:
    """The label a profile reports: a ``SharedProfile``'s, or one saying it is not shared."""
    if isinstance(profile, SharedProfile):
        return profile.label
    kind = "off-the-record" if profile.isOffTheRecord() else "on-disk"
    return f"{kind}:unshared-{id(profile):x}"


class _ProfileFactory:
    """Stands in for the ``QWebEngineProfile`` class inside pywebview's Qt backend."""

    def __init__(self) -> None:
        self._profile: SharedProfile | None = None
        self._lock = threading.Lock()

    def __call__(self, *_args: object) -> SharedProfile:
        # pywebview calls QWebEngineProfile() (private mode) or QWebEngineProfile(name),
        # always on the GUI thread; any arguments are ignored: there is one profile.
        with self._lock:
            if self._profile is None:
                self._profile = SharedProfile()
            return self._profile

    @property
    def profile(self) -> SharedProfile | None:
        return self._profile


_factory: _ProfileFactory | None = None


def share_one_profile() -> None:
    """Make every pywebview window of this process use one off-the-record profile."""
    global _factory
    from webview.platforms import qt as backend

    for name in ("QWebEngineProfile", "BrowserView"):
        if not hasattr(backend, name):
            raise RuntimeError(
                f"pywebview's Qt backend has no {name}: this pywebview release is not one "
                "the renderer host was adapted to (see renderer/qt_shell.py)"
            )
    if _factory is None:
        _factory = _ProfileFactory()
        setattr(backend, "QWebEngineProfile", _factory)  # noqa: B010 (a module's global)


APP_ID = "log-monitor"
APP_DISPLAY_NAME = "Log monitor"


class _LastWindowHook:
    """Stands in for the ``QApplication`` pywebview's Qt backend keeps as ``_app``: its
    ``exit()`` (called as the last window closes) is passed to the host instead of
    ending the loop; everything else is the application's."""

    def __init__(self, app: QApplication, on_exit: Callable[[], None]) -> None:
        self._app = app
        self._on_exit = on_exit

    def exit(self, *_args: object) -> None:
        self._on_exit()

    def quit(self) -> None:
        self._on_exit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)


class QtLoop:
    """The renderer host's Qt application and GUI loop (see the module docstring).

    Create it on the main thread before any window; ``show`` from any thread.
    """

    def __init__(self, on_last_window_closed: Callable[[], None] = lambda: None) -> None:
        from webview.platforms import qt as backend

        # ``_app`` is only assigned inside the backend's functions (setup_app and the
        # first window's creation), so it is set here, not looked for.
        for name in ("BrowserView", "setup_app", "_main_window_created"):
            if not hasattr(backend, name):
                raise RuntimeError(
                    f"pywebview's Qt backend has no {name}: this pywebview release is not one "
                    "the renderer host was adapted to (see renderer/qt_shell.py)"
                )
        self._backend = backend
        existing = QApplication.instance()
        app = existing if isinstance(existing, QApplication) else QApplication([APP_ID])
        self.app = app
        # The host decides when the loop ends (a tray may outlive every window).
        app.setQuitOnLastWindowClosed(False)
        app.setApplicationName(APP_ID)
        app.setApplicationDisplayName(APP_DISPLAY_NAME)
        app.setDesktopFileName(APP_ID)
        app.setWindowIcon(QIcon(str(static_dir() / "icon.svg")))
        setattr(backend, "_app", _LastWindowHook(app, on_last_window_closed))  # noqa: B010
        # What the backend's windows wait for before they are handed to the GUI thread.
        backend._main_window_created.set()
        self.gui = GuiThreadCall()
        # Cycles (a closed window's Qt objects among them) collected on this thread only.
        self.collector = GuiThreadCollector()

    def show(self, window: Any) -> None:
        """Create and show the pywebview ``window`` (a ``webview.Window`` not yet shown)
        on the GUI thread, as pywebview's own ``create_window`` would."""
        backend = self._backend

        def create() -> None:
            if not window._initialize(backend):
                return  # its "initialized" event cancelled it
            browser = backend.BrowserView(window)
            browser.installEventFilter(browser)
            browser.show()

        self.gui.post(create)

    def run(self) -> int:
        """Run the GUI loop on this (the main) thread until ``exit``."""
        return int(self.app.exec())

    def exit(self, code: int) -> None:
        """End the GUI loop with ``code`` (from any thread)."""
        app = self.app
        self.gui.post(lambda: app.exit(code))


class QtPage:
    """One window's ``QWebEnginePage``, usable from any thread; see the module docstring.

    Create it on the GUI thread, once pywebview has built the window (``native``).
    """

    def __init__(
        self,
        browser: Any,
        gui: GuiThreadCall,
        on_render_process_gone: Callable[[str], None],
    ) -> None:
        self._browser = browser  # pywebview's BrowserView, a QMainWindow
        self._page: QWebEnginePage = browser.webview.page()
        self._gui = gui
        self._on_gone = on_render_process_gone
        self._lock = threading.Lock()
        # Scripts started and not yet run, with what to call when they have (or cannot).
        self._pending: dict[object, Callable[[object, BaseException | None], None]] = {}
        self._alive = True
        self._closed = False
        self.profile_label = profile_label(self._page.profile())
        # Kept as Qt tells it, so reading it costs the GUI thread nothing.
        self._render_pid = int(self._page.renderProcessPid()) or None
        self._page.renderProcessPidChanged.connect(self._render_pid_changed)
        self._page.renderProcessTerminated.connect(self._terminated)
        # A page that asks to close its window (window.close()) closes it as a person
        # would, through the window's own close path; pywebview leaves the signal alone.
        self._page.windowCloseRequested.connect(browser.close)

    # ---- scripts ------------------------------------------------------------------------

    def prepare_js(self, script: str, done: PushDone) -> Callable[[], None]:
        """A job for the GUI thread that starts ``script``; ``done(None)`` once it has run,
        ``done(PageUnavailable)`` if the render process ends first (see the module)."""
        return self._prepare(script, lambda _value, error: done(error))

    def run_js(self, script: str, timeout: float) -> object:
        """Run ``script`` in the page (from any thread); its value, once it has run."""
        future: Future[object] = Future()

        def settle(value: object, error: BaseException | None) -> None:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

        self._gui.post(self._prepare(script, settle))
        return future.result(timeout)

    def _prepare(
        self, script: str, done: Callable[[object, BaseException | None], None]
    ) -> Callable[[], None]:
        token = object()
        with self._lock:
            if self._closed:
                raise PageUnavailable("the window is closed")
            if not self._alive:
                raise PageUnavailable("the page's render process has ended")
            self._pending[token] = done

        def settle(value: object) -> None:
            with self._lock:
                waiting = self._pending.pop(token, None)
            if waiting is not None:
                waiting(value, None)

        def start() -> None:
            try:
                self._page.runJavaScript(script, 0, settle)
            except RuntimeError as exc:  # the page object is already deleted
                with self._lock:
                    waiting = self._pending.pop(token, None)
                if waiting is not None:
                    waiting(None, PageUnavailable(str(exc)))

        return start

    def _fail_pending(self, reason: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for done in pending.values():
            done(None, PageUnavailable(reason))

    # ---- render processes -----------------------------------------------------------------

    def _terminated(self, status: QWebEnginePage.RenderProcessTerminationStatus, code: int) -> None:
        # On the GUI thread, as Qt emits it.
        reason = f"the page's render process ended ({status.name}, exit code {code})"
        if status == QWebEnginePage.RenderProcessTerminationStatus.NormalTerminationStatus:
            # The page is being deleted (its window closed): nothing to bring back.
            log.info("%s", reason)
            return
        with self._lock:
            if self._closed:
                return
            self._alive = False
            self._render_pid = None
        self._fail_pending(reason)
        self._on_gone(reason)

    def reload(self) -> None:
        """Load the page again in place, with a new render process (from any thread)."""

        def reload_now() -> None:
            with self._lock:
                if self._closed:
                    return
                self._alive = True
            self._page.triggerAction(QWebEnginePage.WebAction.Reload)

        self._gui.post(reload_now)

    def _render_pid_changed(self, pid: int) -> None:
        with self._lock:
            self._render_pid = int(pid) or None

    def loaded(self) -> None:
        """The page has loaded (again): take note of its render process (GUI thread)."""
        self._render_pid_changed(self._page.renderProcessPid())

    def render_process_pid(self) -> int | None:
        with self._lock:
            return None if self._closed or not self._alive else self._render_pid

    # ---- the window around it -------------------------------------------------------------

    def bring_to_front(self) -> None:
        """Show the window above the others and give it the focus (from any thread)."""
        browser = self._browser

        def raise_now() -> None:
            if browser.isMinimized():
                browser.showNormal()
            browser.show()
            browser.raise_()
            browser.activateWindow()

        self._gui.post(raise_now)

    def geometry(self, timeout: float) -> WindowGeometry:
        def read() -> WindowGeometry:
            # The position with the window manager's frame (what move() takes) and the
            # size without it (what resize() takes), so a window reopened here lands
            # where it was.
            browser = self._browser
            return WindowGeometry(
                x=browser.x(), y=browser.y(), width=browser.width(), height=browser.height()
            )

        return self._gui.call(read, timeout)

    def grab(self, timeout: float) -> QImage:
        """What the window shows now (from any thread)."""
        browser = self._browser
        return self._gui.call(lambda: grab_image(browser), timeout)

    @staticmethod
    def save(image: QImage, path: Path) -> tuple[int, int]:
        return save_png(image, path)

    def close(self) -> None:
        """The window is closing: fail what is in flight, refuse what comes."""
        with self._lock:
            self._closed = True
        self._fail_pending("the window is closed")
