"""The renderer host's tray icon where the host runs no Qt (Windows, macOS): pystray's.

Owns ``PystrayTray``, the ``renderer.host.TrayControl`` the host makes when
``ipc.host_launch.tray_toolkit`` says pystray. It shows what the Qt tray
(``renderer.tray.TrayIcon``) shows, from the same model (``tray_look``: picture, tooltip,
menu) and with the same effects (``renderer.tray_link``: the menu's commands, the
``ReportTray`` reports that ``log-monitor windows`` prints):

* **Showing.** pystray's loop runs on a thread of its own (``icon.run``; on Windows a
  message loop of its own, beside WinForms' thread; on X11 its own X connection, docked
  in the XEmbed tray), and the icon is shown once it is ready; a show that fails is tried
  again (doubling waits, up to ``SHOW_RETRY_LONGEST_S``) until it works or the tray
  closes. pystray knows no "is there a tray": the icon counts as shown once pystray
  showed it without an error.
* **On macOS** AppKit allows its status item to be made and changed only on the main
  thread, which pywebview's Cocoa loop (``NSApplication.run``) owns, and pystray's darwin
  backend calls AppKit from whichever thread calls it. There the tray takes a
  ``MainThreadPoster`` (``appkit_poster``: PyObjC's ``AppHelper.callAfter``, which queues
  a call on the main thread's run loop) and hands it every pystray call that touches
  AppKit, in order: making the icon with ``run_detached`` (pystray's detached mode runs
  no loop of its own: pywebview's serves it), showing it, setting its picture, tooltip
  and menu, and hiding it on close. ``stop`` is never called there: darwin's stops the
  ``NSApplication``, which is pywebview's. A notice's ``notify`` is not handed over:
  darwin's runs ``osascript`` (``display notification``) and touches no AppKit, and the
  GUI must not wait for it. No posted call is ever waited for: the tray is made on the
  main thread before the loop runs, and closed on it after the loop ended (the icon
  goes with the process then).
* **What it shows** follows the latest ``Status``: the picture (the PNGs drawn from the
  SVGs, ``static/<name>.png``), the tooltip (the title, as much as Windows shows:
  ``short_tooltip``) and the menu (rebuilt only when its entries change). Statuses arrive on the subscription's thread; only the latest is
  applied, on a thread of this tray's own, so pystray is never called from two threads
  at once and the subscription never waits for it.
* **X11's stuck calls.** A change handed to pystray's X11 loop can hang in python-xlib
  (see ``call_freeing_x11``); a call still running after ``STUCK_X11_CALL_S`` has its X
  connection read once more, which frees it.
* **Acting.** A click on the icon does the menu's default entry, Open window (on macOS,
  where pystray's status item has no default action, a click opens the menu, Open
  window in bold); each entry does ``act_on_menu`` on a thread of its own.
* **Notices.** ``notice(title, body)`` shows the main process's ``TrayNotice`` as
  pystray's notification (a balloon, or a toast from Windows 10 on), where the backend
  has one (X11's has none: there it is logged only).

Must not: block the subscription's thread, call pystray from two threads at once, or hold
anything secret (a status holds none).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PIL import Image

from ipc.messages import Published, Status, TrayState
from renderer.commands import CommandSender
from renderer.page import static_dir
from renderer.tray_link import TrayReporter, act_on_menu_soon
from renderer.tray_model import (
    APP_ICON,
    TRAY_PICTURES,
    MenuAction,
    TrayLook,
    menu_entries,
    short_notice,
    short_tooltip,
    tray_look,
)

log = logging.getLogger("renderer.tray")

ICON_NAME = "log-monitor"
# How long close() waits for pystray's loop to end (it ends on a message to itself).
STOP_WAIT_S = 3.0
# How long the icon waits for the first status before it shows without one.
FIRST_STATUS_WAIT_S = 5.0
# Showing the icon again after a failure: the first wait, doubled up to the longest.
SHOW_RETRY_FIRST_S = 0.05
SHOW_RETRY_LONGEST_S = 2.0
# How long a call into pystray's X11 backend may take before its X connection is nudged.
STUCK_X11_CALL_S = 0.5

# Makes the pystray icon: ``pystray.Icon`` (tests pass a stand-in backend).
IconMaker = Callable[..., Any]
# Runs a call on the GUI's main thread, later and in the order posted (never waits).
MainThreadPoster = Callable[[Callable[[], None]], None]


def appkit_poster() -> MainThreadPoster:
    """The poster onto AppKit's main thread: PyObjC's ``AppHelper.callAfter`` (macOS)."""
    from PyObjCTools import AppHelper  # type: ignore[import-not-found,unused-ignore]

    def post(call: Callable[[], None]) -> None:
        AppHelper.callAfter(call)

    return post


def load_pictures() -> dict[str, Image.Image]:
    """Every tray picture, as pystray takes them (loaded now: the files are closed)."""
    pictures: dict[str, Image.Image] = {}
    for name in TRAY_PICTURES:
        with Image.open(static_dir() / f"{name}.png") as picture:
            pictures[name] = picture.convert("RGBA")
    return pictures


def call_freeing_x11(call: Callable[[], object], read_connection: Callable[[], object]) -> None:
    """Run a call that pystray's X11 backend hands to its loop's thread, and unstick it.

    That backend runs a change on its loop's thread and waits for it; that thread's next
    request to the X server can wait forever when python-xlib 0.33's ``send_and_recv``
    returns early from our thread's flush (the path for data that arrived while another
    thread receives) without waking a request waiting on it. Any later complete
    ``send_and_recv`` wakes it: a call that has not returned after ``STUCK_X11_CALL_S``
    has the connection read once (``read_connection``: ``pending_events``) from here.
    """
    done = threading.Event()

    def nudge_until_done() -> None:
        while not done.wait(STUCK_X11_CALL_S):
            log.debug("a call into pystray's X11 loop is stuck; nudging its X connection")
            try:
                read_connection()
            except Exception:
                log.debug("nudging the X connection failed", exc_info=True)
                return

    threading.Thread(target=nudge_until_done, name="tray-x11-nudge", daemon=True).start()
    try:
        call()
    finally:
        done.set()


class PystrayTray:
    """The host's tray icon through pystray; see the module docstring."""

    def __init__(
        self,
        *,
        host_pid: int,
        sender: CommandSender,
        open_or_raise: Callable[[], None],
        reporter: TrayReporter,
        icon_maker: IconMaker | None = None,
        poster: MainThreadPoster | None = None,
    ) -> None:
        import pystray

        self._pystray_menu = pystray.Menu
        self._pystray_item = pystray.MenuItem
        self._host_pid = host_pid
        self._sender = sender
        self._open_or_raise = open_or_raise
        self._reporter = reporter
        self._pictures = load_pictures()
        self._wake = threading.Condition()
        self._pending: Status | None = None
        self._notices: list[tuple[str, str]] = []
        self._closing = False
        self._closed = threading.Event()
        self._showing = False
        self._messages = 0
        self._last_message: str | None = None
        self._look = tray_look(None)
        self._first_applied = threading.Event()
        self._poster = poster
        maker = pystray.Icon if icon_maker is None else icon_maker
        self._x11 = maker.__module__ == "pystray._xorg"
        self._latin1_titles = self._x11
        first_look = (
            ICON_NAME,
            self._pictures[APP_ICON],
            self._title(self._look.tooltip),
            self._menu(self._look),
        )
        self._loop: threading.Thread | None = None
        if poster is None:
            self._icon = maker(*first_look)
            self.has_notifications = bool(self._icon.HAS_NOTIFICATION)
            self._loop = threading.Thread(target=self._run_loop, name="tray-loop", daemon=True)
            self._loop.start()
        else:
            # Made on the main thread; every later posted call comes after this one.
            self._icon = None
            self.has_notifications = bool(getattr(maker, "HAS_NOTIFICATION", False))
            poster(lambda: self._make_detached(maker, first_look))
        self._applier = threading.Thread(target=self._apply_each, name="tray-apply", daemon=True)
        self._applier.start()
        self._report()

    # ---- any thread ----------------------------------------------------------------------

    def update(self, message: Published) -> None:
        """A published message (the subscription's thread); statuses change the icon."""
        if not isinstance(message, Status):
            return
        with self._wake:
            self._pending = message
            self._wake.notify()

    def notice(self, title: str, body: str) -> None:
        """Show a notice as the tray's own message (any thread)."""
        with self._wake:
            self._notices.append((title, body))
            self._wake.notify()

    def showing(self) -> bool:
        return self._showing

    def close(self) -> None:
        """Take the icon away and say so to the main process (the host's main thread)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._closed.set()
        self._applier.join(STOP_WAIT_S)
        if self._loop is None:
            self._on_icon(self._hide)
        else:
            try:
                self._call_watched(self._icon.stop)
            except Exception as exc:  # the loop may have failed already
                log.info("stopping the tray icon: %s", exc)
            self._loop.join(STOP_WAIT_S)
        self._showing = False
        self._reporter.send_now(TrayState(host=self._host_pid, closed=True))

    # ---- the main thread (with a poster) -------------------------------------------------

    def _make_detached(self, maker: IconMaker, first_look: tuple[Any, ...]) -> None:
        # Kept only once running: the posted calls after a failure find no icon.
        try:
            icon = maker(*first_look)
            icon.run_detached(setup=self._shown)
        except Exception:
            log.exception("the tray icon could not be made")
            return
        self._icon = icon

    def _on_icon(self, change: Callable[[Any], object]) -> None:
        """Run ``change`` on the icon: here without a poster, else on the main thread."""
        if self._poster is None:
            self._call_watched(lambda: change(self._icon))
            return

        def posted() -> None:
            # Nothing may escape into the main thread's run loop.
            if self._icon is None:
                return  # making it failed (logged)
            try:
                change(self._icon)
            except Exception:
                log.exception("updating the tray icon failed")

        self._poster(posted)

    def _call_watched(self, call: Callable[[], object]) -> None:
        if self._x11:
            call_freeing_x11(call, lambda: self._icon._display.pending_events())
        else:
            call()

    @staticmethod
    def _hide(icon: Any) -> None:
        icon.visible = False

    # ---- pystray's thread ----------------------------------------------------------------

    def _run_loop(self) -> None:
        try:
            self._icon.run(setup=self._shown)
        except Exception:
            log.exception("the tray icon's loop failed")
        with self._wake:
            self._showing = False
        self._report()

    def _shown(self, icon: Any) -> None:
        # pystray calls this on a thread of its own once its loop is ready. The icon is
        # shown with the first status's picture already set (it comes at once, from the
        # cached state), not changed right after: on X11 each change of picture asks the
        # tray to embed the icon again, and a tray still embedding it can lose it.
        if not self._first_applied.wait(FIRST_STATUS_WAIT_S):
            log.info("no status yet; showing the tray icon without one")
        if self._poster is not None:
            self._on_icon(self._show)
            return
        # Tried again until it works: pystray 0.19.5's X11 backend calls this before its
        # loop has recorded its own thread (``_run`` sets ``_thread`` after marking itself
        # ready), so a show that comes too early fails with an AttributeError; left
        # alone, the host would end for having nothing to show.
        delay = SHOW_RETRY_FIRST_S
        attempts = 1
        while not self._show(icon, quiet=attempts > 1):
            if self._closed.wait(delay):
                return
            delay = min(delay * 2, SHOW_RETRY_LONGEST_S)
            attempts += 1
        if attempts > 1:
            log.info("the tray icon was shown at attempt %d", attempts)

    def _show(self, icon: Any, quiet: bool = False) -> bool:
        try:
            self._call_watched(lambda: setattr(icon, "visible", True))
        except Exception:
            if quiet:
                log.debug("pystray could not show the tray icon", exc_info=True)
            else:
                log.exception("pystray could not show the tray icon; trying again")
            return False
        log.info("the tray icon is shown (pystray)")
        with self._wake:
            self._showing = True
            self._wake.notify()
        return True

    # ---- this tray's applying thread -----------------------------------------------------

    def _apply_each(self) -> None:
        reported_showing = False
        while True:
            with self._wake:
                while (
                    not self._closing
                    and self._pending is None
                    and not self._notices
                    and self._showing == reported_showing
                ):
                    self._wake.wait()
                if self._closing:
                    self._first_applied.set()
                    return
                status, self._pending = self._pending, None
                notices, self._notices = self._notices, []
                reported_showing = self._showing
            try:
                if status is not None:
                    self._apply(tray_look(status))
                    self._first_applied.set()
                for title, body in notices:
                    self._show_message(title, body)
            except Exception:
                log.exception("updating the tray icon failed")
            self._report()

    def _apply(self, look: TrayLook) -> None:
        previous, self._look = self._look, look
        picture = None
        if look.icon != previous.icon:
            picture = self._pictures.get(look.icon, self._pictures[APP_ICON])
        title = self._title(look.tooltip)
        # Rebuilt only when its entries change: a menu open on the screen must not be
        # taken away under the pointer by a status that changed only a counter.
        menu = self._menu(look) if look.actions != previous.actions else None

        def change(icon: Any) -> None:
            if picture is not None:
                icon.icon = picture
            icon.title = title
            if menu is not None:
                icon.menu = menu

        self._on_icon(change)

    def _title(self, tooltip: str) -> str:
        title = short_tooltip(tooltip)
        if self._latin1_titles:
            # X11's window name, as pystray sets it, is Latin-1 text.
            title = title.replace("…", "...").encode("latin-1", "replace").decode("latin-1")
        return title

    def _menu(self, look: TrayLook) -> Any:
        items: list[Any] = []
        for entry in menu_entries(look):
            if entry.separated:
                items.append(self._pystray_menu.SEPARATOR)
            items.append(
                self._pystray_item(
                    entry.text, self._entry_action(entry.action), default=entry.default
                )
            )
        return self._pystray_menu(*items)

    def _entry_action(self, action: MenuAction) -> Callable[[], None]:
        # No arguments: pystray calls an action with as many as it takes.
        return lambda: act_on_menu_soon(action, self._sender, self._open_or_raise)

    def _show_message(self, title: str, body: str) -> None:
        if not self._showing or not self.has_notifications:
            log.info("a notice with no tray message to show it: %s", title)
            return
        shown_title, shown_body = short_notice(title, body)
        self._icon.notify(shown_body, shown_title)
        self._messages += 1
        self._last_message = title

    def _report(self) -> None:
        self._reporter.report(
            TrayState(
                host=self._host_pid,
                available=self._showing,
                shown=self._showing,
                state=self._look.state,
                icon=self._look.icon,
                tooltip=short_tooltip(self._look.tooltip),
                menu=self._look.menu,
                messages=self._messages,
                last_message=self._last_message,
                geometry=None,
            )
        )
